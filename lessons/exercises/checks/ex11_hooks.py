"""Checks of exercise 11: a hook that zero-ablates one head, and a token pattern summed into frames.

The hook is compared with ``videodiff.interp.heads.head_ablation_hooks(…, "zero")`` on random z, on its
own and inside a randomly initialised video DiT (adaLN-Zero's zeros replaced, else every block is the
identity and no head matters); what it returns and what it does to the tensor it is given are checked
apart, since a hook that edits in place or returns None can still change a model's output by accident.
frame_attention is compared with ``videodiff.interp.activations.frame_attention`` on random patterns
and on a head that looks only at the previous frame.  The usual mistakes are named: the wrong axis
zeroed, keys averaged instead of summed, queries summed instead of averaged, rows and columns swapped,
tokens taken as interleaved instead of time-major."""
from __future__ import annotations

from typing import Callable

import torch

from imagediff.hooks import hooks
from videodiff.dit import make_video_dit
from videodiff.interp.activations import frame_attention
from videodiff.interp.experiment import randomly_initialised_like
from videodiff.interp.heads import head_ablation_hooks

from .assertions import CheckFailed, assert_close, assert_tensor_of_shape, require
from .inputs import seeded_generator

TOPIC = "hooks: zero-ablate one head at hook_z; attention summed into frames"
LIBRARY = "videodiff.interp.heads.head_ablation_hooks, videodiff.interp.activations.frame_attention"

Z_SHAPE = (5, 4, 6, 7)  # (B, heads, T, d): every axis at least as long as the head count, so any axis can be "head h"
AXES = {0: "clip", 2: "token", 3: "channel"}  # what index h of each other axis of z is


def _z(seed: int) -> torch.Tensor:
    return torch.randn(*Z_SHAPE, generator=seeded_generator(seed), dtype=torch.float64)


def _library_zero(z: torch.Tensor, head: int) -> torch.Tensor:
    (_, hook), = head_ablation_hooks([(0, head)], "zero")
    return hook(z.clone(), None)


def _zeroed_along(z: torch.Tensor, axis: int, index: int) -> torch.Tensor:
    out = z.clone()
    out.select(axis, index).zero_()
    return out


def _pattern(batch: int, heads: int, frames: int, tokens: int, seed: int) -> torch.Tensor:
    """Random attention rows (B, heads, F·N, F·N), each a distribution, float64."""
    total = frames * tokens
    scores = 2.0 * torch.randn(batch, heads, total, total, generator=seeded_generator(seed), dtype=torch.float64)
    return scores.softmax(dim=-1)


def _frames(pattern: torch.Tensor, frames: int, keys_time_major: bool = True, queries_time_major: bool = True,
            sum_keys: bool = True, mean_queries: bool = True) -> torch.Tensor:
    """frame_attention, and the usual ways to get it wrong (for naming them)."""
    batch, heads, total, _ = pattern.shape
    tokens = total // frames
    if keys_time_major:
        keys = pattern.reshape(batch, heads, total, frames, tokens)  # (B, h, T, F, N)
    else:
        keys = pattern.reshape(batch, heads, total, tokens, frames).transpose(-1, -2)  # key k in frame k % F
    keys = keys.sum(-1) if sum_keys else keys.mean(-1)  # (B, h, T, F)
    if queries_time_major:
        queries = keys.reshape(batch, heads, frames, tokens, frames)  # (B, h, F, N, F)
    else:
        queries = keys.reshape(batch, heads, tokens, frames, frames).transpose(2, 3)
    return queries.mean(3) if mean_queries else queries.sum(3)  # (B, h, F, F)


_FRAME_MISTAKES = [
    (dict(sum_keys=False), "you averaged over frame g's N key tokens: the attention a query pays to a frame is the "
                           "SUM over that frame's tokens (averaged, each row adds up to 1/N instead of 1)"),
    (dict(mean_queries=False), "you summed over frame f's N query tokens: average them (a row is what a typical "
                               "token of frame f attends to; summed, each row adds up to N instead of 1)"),
    (dict(sum_keys=False, mean_queries=False),
     "you averaged over the keys and summed over the queries: it is the other way round, sum the keys of frame g, "
     "average the queries of frame f"),
    (dict(keys_time_major=False),
     "you took frame g's key tokens as g, g + F, g + 2F, …; the tokens are time-major: frame g's are the N "
     "contiguous tokens g·N … g·N + N − 1, so split the axis as (F, N)"),
    (dict(queries_time_major=False),
     "you took frame f's query tokens as f, f + F, f + 2F, …; the tokens are time-major: frame f's are the N "
     "contiguous tokens f·N … f·N + N − 1, so split the axis as (F, N)"),
    (dict(keys_time_major=False, queries_time_major=False),
     "you split the token axes as (N, F), interleaved; the tokens are time-major: frame 0's N tokens, then frame "
     "1's, …, so split each token axis as (F, N)"),
]


def _explain_frames(actual: torch.Tensor, pattern: torch.Tensor, frames: int, what: str) -> None:
    """Compare with the library; if they differ, name the mistake when it is a usual one."""
    expected = frame_attention(pattern, frames)
    assert_tensor_of_shape(actual, expected.shape, what, "(B, heads, F, F)")
    if torch.allclose(actual.double(), expected, atol=1e-10, rtol=1e-8):
        return
    if torch.allclose(actual.double(), expected.transpose(-1, -2), atol=1e-10, rtol=1e-8):
        raise CheckFailed(f"{what}: rows and columns are swapped: entry [f, g] is the attention query frame f pays "
                          "to key frame g, so each ROW sums to 1")
    for options, mistake in _FRAME_MISTAKES:
        if torch.allclose(actual.double(), _frames(pattern, frames, **options), atol=1e-10, rtol=1e-8):
            raise CheckFailed(f"{what}: {mistake}")
    assert_close(actual, expected, what, atol=1e-10, rtol=1e-8)


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def call_hook(head: int, z: torch.Tensor):
        require(student, "zero_head_hook")
        hook = student.zero_head_hook(head)
        if not callable(hook):
            raise CheckFailed(f"zero_head_hook({head}) returned {type(hook).__name__}; it returns the hook function, "
                              "hook(z, hook_point)")
        return hook(z, None)

    def zeroes_the_head():
        for head in range(Z_SHAPE[1]):
            z = _z(head)
            result = call_hook(head, z.clone())
            if result is None:
                raise CheckFailed(f"the hook returned None: a hook that returns None only looks and the model runs "
                                  f"unchanged; return the edited tensor")
            assert_tensor_of_shape(result, z.shape, f"the hook's result for head {head}", "(B, heads, T, d)")
            expected = _library_zero(z, head)
            if torch.equal(result, expected):
                continue
            if torch.equal(result, z):
                raise CheckFailed(f"the hook returned z unchanged: head {head}'s slice z[:, {head}] must become 0")
            for axis, noun in AXES.items():
                if torch.equal(result, _zeroed_along(z, axis, head)):
                    raise CheckFailed(f"the hook zeroed {noun} {head} (axis {axis}) instead of head {head}: z is "
                                      f"(B, heads, T, d), the heads are axis 1")
            if torch.equal(result, z - _zeroed_along(z, 1, head)):
                raise CheckFailed(f"the hook kept only head {head} and zeroed every other head: the mask is 1 for the "
                                  f"heads that stay and 0 for the ablated one")
            if torch.equal(result, torch.zeros_like(z)):
                raise CheckFailed("the hook zeroed every head; only head `head` is ablated")
            assert_close(result, expected, f"z with head {head} zero-ablated", atol=0.0, rtol=0.0)

    def leaves_its_input_alone():
        z = _z(10)
        given = z.clone()
        result = call_hook(2, given)
        changed = not torch.equal(given, z)
        if result is None and changed:
            raise CheckFailed("the hook changed z in place and returned None.  A hook that returns None is taken to "
                              "only look: your edit reaches the model by accident, and every other hook at this site "
                              "(a cache) sees the edited values.  Return a new tensor (z * mask) instead")
        if result is None:
            raise CheckFailed("the hook returned None: a hook that returns None only looks, the model runs "
                              "unchanged; return the edited tensor")
        if changed:
            raise CheckFailed("the hook changed the tensor it was given in place (and returned it): other hooks at "
                              "this site and a cache see the edit too; compute a new tensor (z * mask, or edit "
                              "z.clone())")

    def inside_a_model():
        require(student, "zero_head_hook")
        torch.manual_seed(0)
        model = randomly_initialised_like(make_video_dit("tiny", hidden_dim=32, depth=2, num_heads=4, num_frames=3,
                                                         in_channels=2, input_size=(4, 4), patch_size=2), seed=0)
        generator = seeded_generator(11)
        x = torch.randn(2, 3, 2, 4, 4, generator=generator)
        t = torch.randint(0, 1000, (2, 3), generator=generator)
        with torch.no_grad():
            plain = model(x, t)
            with hooks(model, head_ablation_hooks([(1, 3)], "zero")):
                expected = model(x, t)
            with hooks(model, [("blocks.1.attention.hook_z", student.zero_head_hook(3))]):
                actual = model(x, t)
        if torch.equal(actual, plain):
            raise CheckFailed("with your hook on blocks.1.attention.hook_z the model's output did not change at all: "
                              "does the hook return the edited tensor, with the head's slice set to 0?")
        assert_close(actual, expected, "the output of a video DiT with head 3 of block 1 zero-ablated",
                     atol=1e-5, rtol=1e-4)

    def frames_equal_the_library():
        require(student, "frame_attention")
        for batch, heads, frames, tokens, seed in ((2, 3, 4, 5, 20), (1, 2, 3, 4, 21)):
            pattern = _pattern(batch, heads, frames, tokens, seed)
            actual = student.frame_attention(pattern.clone(), frames)
            _explain_frames(actual, pattern, frames, f"frame_attention of a random pattern, F = {frames}, N = {tokens}")

    def rows_sum_to_one():
        require(student, "frame_attention")
        pattern = _pattern(2, 2, 4, 3, 22)
        actual = student.frame_attention(pattern.clone(), 4)
        assert_tensor_of_shape(actual, (2, 2, 4, 4), "frame_attention, F = 4, N = 3", "(B, heads, F, F)")
        sums = actual.double().sum(-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-10):
            raise CheckFailed(f"the rows of the frame pattern sum to {sums.flatten()[0].item():.6g} (first row), not "
                              f"1: sum a query's attention over the key tokens of a frame, average over the query "
                              f"tokens of a frame")

    def previous_frame_head():
        require(student, "frame_attention")
        frames, tokens = 4, 3
        weights = torch.rand(frames * tokens, tokens, generator=seeded_generator(23), dtype=torch.float64)
        weights = weights / weights.sum(-1, keepdim=True)  # each query's distribution over one frame's tokens
        pattern = torch.zeros(1, 1, frames * tokens, frames * tokens, dtype=torch.float64)
        for query in range(frames * tokens):
            looked_at = max(query // tokens - 1, 0)  # the previous frame (frame 0: itself)
            pattern[0, 0, query, looked_at * tokens:(looked_at + 1) * tokens] = weights[query]
        expected = torch.zeros(1, 1, frames, frames, dtype=torch.float64)
        for frame in range(frames):
            expected[0, 0, frame, max(frame - 1, 0)] = 1.0
        actual = student.frame_attention(pattern.clone(), frames)
        _explain_frames(actual, pattern, frames, "a head that attends only to the previous frame's tokens")
        assert_close(actual, expected, "a head that attends only to the previous frame: 1 just below the diagonal")

    def one_token_per_frame():
        require(student, "frame_attention")
        pattern = _pattern(1, 2, 5, 1, 24)
        actual = student.frame_attention(pattern.clone(), 5)
        assert_close(actual, pattern, "N = 1 (one token per frame): the frame pattern is the token pattern itself",
                     atol=1e-12)

    return [("zero_head_hook zeroes exactly head h of z (B, heads, T, d), for every h", zeroes_the_head),
            ("zero_head_hook returns a new tensor and leaves the one it is given unchanged", leaves_its_input_alone),
            ("inside a video DiT, the hook equals head_ablation_hooks(..., 'zero')", inside_a_model),
            ("frame_attention equals the library on random patterns", frames_equal_the_library),
            ("frame_attention: every row sums to 1", rows_sum_to_one),
            ("frame_attention of a previous-frame head: 1 just below the diagonal", previous_frame_head),
            ("frame_attention with one token per frame is the pattern itself", one_token_per_frame)]
