"""Checks of exercise 09, the angles of 3-D RoPE and Diffusion Forcing's scheduling matrices.

rope_split and scheduling_matrix are integer tables: they must equal ``videodiff.dit.rope_split`` and
``videodiff.sampling.scheduling_matrix`` exactly.  rope_angles must equal ``videodiff.dit.rope_angles``
to float32 rounding, on grids whose head dimension does not split evenly, and satisfy what RoPE is
for: with its angles, a query-key score depends only on the offset between the two tokens.  A wrong
answer is named when it is a usual mistake: tokens not time-major, one frequency ladder over all
pairs instead of one per axis, the axes' pairs in the wrong order, a schedule whose last row is not
clean, a level that rises, a noisy context, the wrong lag."""
from __future__ import annotations

import itertools
from typing import Callable

import torch

from videodiff import dit, sampling

from .assertions import CheckFailed, assert_close, assert_tensor_of_shape, require
from .inputs import seeded_generator

TOPIC = "3-D RoPE angles and the scheduling matrices of diffusion forcing"
LIBRARY = "videodiff.dit (rope_split, rope_angles) and videodiff.sampling.scheduling_matrix"

_AXES = ("frame", "row", "column")
_GRIDS = [(3, 2, 4, 32, 10_000.0), (4, 4, 4, 24, 10_000.0), (2, 3, 5, 66, 100.0), (5, 1, 2, 6, 10_000.0)]
_LAGS = {"full_sequence": lambda n: 0, "pyramid": lambda n: 1, "autoregressive": lambda n: n}


def _angles_variant(frames, height, width, head_dim, base, token_order=(0, 1, 2), pair_order=(0, 1, 2),
                    ladder="per axis") -> torch.Tensor:
    """rope_angles with one thing changed, to recognise a mistake by its result (tokens, d/2)."""
    counts = dit.rope_split(head_dim)
    sizes = (frames, height, width)
    grids = torch.meshgrid(*[torch.arange(sizes[axis]) for axis in token_order], indexing="ij")
    positions = {axis: grid for axis, grid in zip(token_order, grids)}
    angles, first_pair = [], 0
    for axis in pair_order:
        pairs = counts[axis]
        index = torch.arange(pairs, dtype=torch.float64) + (first_pair if ladder == "shared" else 0)
        frequencies = base ** (-index / (pairs if ladder == "per axis" else head_dim // 2))
        angles.append(positions[axis].reshape(-1, 1).double() * frequencies)
        first_pair += pairs
    return torch.cat(angles, dim=-1).float()


def _invariant_problem(matrix: torch.Tensor, num_context: int, num_steps: int) -> str | None:
    """What breaks pitfall 15 (or the index range) in a (rows, F) matrix of indices, or None."""
    if (matrix < 0).any() or (matrix > num_steps).any():
        return (f"indices run from {int(matrix.min())} to {int(matrix.max())}: every level must lie in 0 (clean) … "
                f"{num_steps} (pure noise) — clamp S + g · lag − m to [0, S]")
    rises = (matrix[1:] > matrix[:-1]).nonzero()
    if len(rises):
        row, frame = (int(i) for i in rises[0])
        return (f"frame {frame}'s level rises from {int(matrix[row, frame])} in row {row} to "
                f"{int(matrix[row + 1, frame])} in row {row + 1}: along the rows a level may only stay or fall")
    if (matrix[-1] != 0).any():
        return (f"the last row is {matrix[-1].tolist()}, not all clean: rows = S + (G − 1) · lag + 1 "
                "(the +1 is the row in which the last frame is clean)")
    if (matrix[:, :num_context] != 0).any():
        return "the context frames are not 0 in every row: context stays clean throughout"
    if (matrix[0, num_context:] != num_steps).any():
        return f"the first row is {matrix[0].tolist()}: every generated frame starts at S = {num_steps}, pure noise"
    return None


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def split():
        require(student, "rope_split")
        for head_dim in (6, 8, 12, 24, 32, 64, 66):
            expected = dit.rope_split(head_dim)
            actual = student.rope_split(head_dim)
            if not isinstance(actual, (tuple, list)) or len(actual) != 3:
                raise CheckFailed(f"rope_split({head_dim}) must return three numbers (P_t, P_h, P_w), got {actual!r}")
            actual = tuple(int(value) for value in actual)
            if actual == expected:
                continue
            if sum(actual) != head_dim // 2:
                raise CheckFailed(f"rope_split({head_dim}) = {actual} adds up to {sum(actual)}, but d = {head_dim} "
                                  f"holds {head_dim // 2} pairs: every pair turns with exactly one axis")
            raise CheckFailed(f"rope_split({head_dim}) = {actual}, expected {expected}: rows and columns get "
                              "⌊(d/2) / 3⌋ pairs each, frames what is left")

    def compare_angles(frames, height, width, head_dim, base):
        what = f"rope_angles for {frames} frames of {height}x{width} tokens, d = {head_dim}, base {base:g}"
        expected = dit.rope_angles(frames, height, width, head_dim, base)  # (tokens, d/2)
        actual = student.rope_angles(frames, height, width, head_dim, base)
        assert_tensor_of_shape(actual, expected.shape, what, "(frames · height · width, d/2)")
        if torch.allclose(actual.double(), expected.double(), atol=1e-5, rtol=1e-6):
            return
        for token_order in itertools.permutations(range(3)):
            if token_order != (0, 1, 2) and torch.allclose(
                    actual, _angles_variant(frames, height, width, head_dim, base, token_order=token_order), atol=1e-5):
                order = ", then ".join(_AXES[axis] for axis in token_order)
                raise CheckFailed(f"{what}: the tokens are listed by {order}; the model lists them time-major — "
                                  "frame, then row, then column (torch.meshgrid(..., indexing=\"ij\"))")
        per_axis = ("each axis has its own ladder, base^(−i / P) with P that axis's number of pairs, so that each "
                    "axis's first pair turns one radian per step and its last ones slowly")
        if torch.allclose(actual, _angles_variant(frames, height, width, head_dim, base, ladder="shared"), atol=1e-5):
            raise CheckFailed(f"{what}: one ladder of frequencies runs over all d/2 pairs; {per_axis}")
        if torch.allclose(actual, _angles_variant(frames, height, width, head_dim, base, ladder="d/2"), atol=1e-5):
            raise CheckFailed(f"{what}: the exponent is −i / (d/2); {per_axis}")
        for pair_order in itertools.permutations(range(3)):
            if pair_order != (0, 1, 2) and torch.allclose(
                    actual, _angles_variant(frames, height, width, head_dim, base, pair_order=pair_order), atol=1e-5):
                raise CheckFailed(f"{what}: a token's angles are its frame pairs', then its row pairs', then its "
                                  f"column pairs' — yours come in the order {', '.join(_AXES[a] for a in pair_order)}")
        assert_close(actual, expected, what, atol=1e-5, rtol=1e-6)

    def angles_match():
        require(student, "rope_angles")
        for grid in _GRIDS:
            compare_angles(*grid)

    def first_pairs_turn_one_radian():
        # Known values, no library: one step along an axis turns that axis's first pair by 1 radian, and
        # no pair of another axis.
        require(student, "rope_angles")
        frames, height, width, head_dim = 3, 2, 4, 32  # pairs (6, 5, 5): frame 0-5, row 6-10, column 11-15
        angles = student.rope_angles(frames, height, width, head_dim, 10_000.0)
        assert_tensor_of_shape(angles, (frames * height * width, head_dim // 2), "rope_angles of a 3x2x4 grid")
        token = lambda f, r, c: (f * height + r) * width + c  # noqa: E731  time-major index
        pairs_of = {"frame": range(0, 6), "row": range(6, 11), "column": range(11, 16)}
        for axis, (a, b) in {"frame": (token(1, 1, 2), token(2, 1, 2)), "row": (token(2, 0, 3), token(2, 1, 3)),
                             "column": (token(0, 1, 1), token(0, 1, 2))}.items():
            step = (angles[b] - angles[a]).double()  # (16,)
            others = [i for i in range(16) if i not in pairs_of[axis]]
            first = pairs_of[axis][0]
            if abs(step[first] - 1.0) > 1e-5 or (step[others].abs() > 1e-5).any():
                raise CheckFailed(f"one step along the {axis} axis (token {a} -> {b}, time-major) changed the angles "
                                  f"by {[round(v, 3) for v in step.tolist()]}: expected pair {first} (the {axis} "
                                  f"axis's first) to turn by 1 radian, and no pair outside {first}-{pairs_of[axis][-1]} "
                                  "to move")

    def scores_depend_only_on_offsets():
        require(student, "rope_angles")
        frames, height, width, head_dim = 6, 4, 4, 24
        angles = student.rope_angles(frames, height, width, head_dim, 10_000.0)  # (96, 12)
        assert_tensor_of_shape(angles, (frames * height * width, head_dim // 2), "rope_angles of a 6x4x4 grid")
        generator = seeded_generator(90)
        q, k = torch.randn(2, 1, 1, 1, head_dim, generator=generator)

        def score(position_q, position_k):
            index = lambda f, r, c: (f * height + r) * width + c  # noqa: E731
            a_q, a_k = angles[index(*position_q)][None], angles[index(*position_k)][None]  # (1, d/2)
            rotated_q = dit.apply_rotary(q, a_q.cos(), a_q.sin())
            rotated_k = dit.apply_rotary(k, a_k.cos(), a_k.sin())
            return float((rotated_q * rotated_k).sum())

        base = score((1, 0, 1), (3, 2, 0))
        for shift in ((2, 0, 0), (0, 1, 0), (0, 0, 2), (1, 1, 1)):
            moved = score(tuple(p + s for p, s in zip((1, 0, 1), shift)), tuple(p + s for p, s in zip((3, 2, 0), shift)))
            if abs(moved - base) > 1e-4:
                raise CheckFailed(f"shifting both tokens by {shift} (frame, row, column) changed q·k from {base:.5f} to "
                                  f"{moved:.5f}: with RoPE the score may depend only on the offset between tokens — "
                                  "angles must be position × frequency, tokens time-major")

    def compare_matrix(kind, num_frames, num_steps, num_context):
        what = f"{kind}, {num_frames} frames, S = {num_steps}, {num_context} context"
        expected = sampling.scheduling_matrix(kind, num_frames, num_steps, context=num_context)
        actual = student.scheduling_matrix(kind, num_frames, num_steps, num_context)
        if not isinstance(actual, torch.Tensor) or actual.ndim != 2 or actual.shape[1] != num_frames:
            shape = tuple(actual.shape) if isinstance(actual, torch.Tensor) else type(actual).__name__
            raise CheckFailed(f"{what}: expected a tensor (rows, {num_frames}), got {shape}")
        if actual.shape == expected.shape and torch.equal(actual.long(), expected):
            return
        problem = _invariant_problem(actual.long(), num_context, num_steps)
        if problem:
            raise CheckFailed(f"{what}: {problem}")
        for lag in {num_steps - 1, num_steps + 1, 1, 0, num_steps} - {_LAGS[kind](num_steps)}:
            generated = num_frames - num_context
            rows = num_steps + (generated - 1) * lag + 1
            levels = (num_steps + torch.arange(generated).view(1, -1) * lag - torch.arange(rows).view(-1, 1))
            if actual.shape == (rows, num_frames) and torch.equal(actual[:, num_context:].long(),
                                                                 levels.clamp(0, num_steps)):
                raise CheckFailed(f"{what}: frame g lags frame g − 1 by {lag} rows; {kind} has lag "
                                  f"{_LAGS[kind]('S')} (full_sequence 0, pyramid 1, autoregressive S: a frame "
                                  "starts exactly when the one before it is clean)")
        if actual.shape != expected.shape:
            raise CheckFailed(f"{what}: {actual.shape[0]} rows, expected S + (G − 1) · lag + 1 = {expected.shape[0]}")
        row, frame = (int(i) for i in (actual.long() != expected).nonzero()[0])
        raise CheckFailed(f"{what}: row {row}, frame {frame} holds {int(actual[row, frame])}, expected "
                          f"{int(expected[row, frame])}; whole row {actual[row].tolist()}, expected "
                          f"{expected[row].tolist()}")

    def matrices(kind):
        def check():
            require(student, "scheduling_matrix")
            for num_frames, num_steps, num_context in ((8, 10, 4), (6, 3, 0), (5, 1, 2), (4, 20, 3), (7, 4, 1)):
                compare_matrix(kind, num_frames, num_steps, num_context)
        return check

    def known_pyramid():
        require(student, "scheduling_matrix")
        expected = torch.tensor([[2, 2, 2], [1, 2, 2], [0, 1, 2], [0, 0, 1], [0, 0, 0]])
        actual = student.scheduling_matrix("pyramid", 3, 2, 0)
        if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape or not torch.equal(
                actual.long(), expected):
            shown = actual.tolist() if isinstance(actual, torch.Tensor) else actual
            raise CheckFailed(f"the pyramid of 3 frames, S = 2, no context, is {expected.tolist()} (each frame one "
                              f"row behind the one before); got {shown}")

    return [("rope_split equals the library (d = 6 … 66, uneven splits)", split),
            ("rope_angles equals the library (4 grids, d = 6 … 66, two bases)", angles_match),
            ("one step along an axis turns that axis's first pair by one radian", first_pairs_turn_one_radian),
            ("with these angles a score depends only on the offset of two tokens", scores_depend_only_on_offsets),
            ("full_sequence matrices equal the library", matrices("full_sequence")),
            ("pyramid matrices equal the library", matrices("pyramid")),
            ("autoregressive matrices equal the library", matrices("autoregressive")),
            ("the pyramid of 3 frames and 2 steps, written out", known_pyramid)]
