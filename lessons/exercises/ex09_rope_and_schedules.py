"""Exercise 09 — where a token is, and when a frame is denoised (videodiff.dit, videodiff.sampling).

Part 1 — the angles of 3-D RoPE.  The video DiT rotates each query and key by angles that depend on
its token's (frame, row, column), so that their dot product depends only on the *offset* between two
tokens (lesson 09).  The head dimension d holds d/2 pairs of features; each pair turns with one axis:

    split:  rows and columns get P_h = P_w = ⌊(d/2) / 3⌋ pairs each, frames get the rest, P_t = d/2 − 2 P_w
            (d = 32: 16 pairs -> (6, 5, 5); the three always add up to d/2)

Pair i of an axis with P pairs turns by position · base^(−i / P), i = 0 … P − 1: the first pair one
radian per step along its axis, the later ones ever more slowly.  A token's d/2 angles are its frame
pairs', then its row pairs', then its column pairs'.  The tokens are listed *time-major*, as the model
lays them out: frame 0 row by row (row 0 column 0, row 0 column 1, …), then frame 1, and so on.

    rope_angles(frames, height, width, head_dim, base) -> (frames · height · width, d/2) float32

Part 2 — scheduling matrices (Diffusion Forcing).  A (rows, F) table of noise-level *indices*: S, the
number of sampling steps, is pure noise, 0 clean.  The first K frames are context (0 in every row); the
g-th frame to generate (g = 0 … G − 1, G = F − K) sits at

    level[m, g] = clamp(S + g · lag − m, 0, S),     lag = 0 (full_sequence), 1 (pyramid), S (autoregressive)

in row m = 0 … rows − 1, with rows = S + (G − 1) · lag + 1: the first row has every generated frame at
S, each frame steps down one index per row for S rows, and the last row is all clean.  A valid
schedule never raises a frame's level from one row to the next, ends clean, and keeps the context
clean (docs/pitfalls.md, pitfall 15).

Your task: write the three functions.  Every ``todo(...)`` is an expression to replace.

Check your work:  python -m lessons.exercises.check 09 lessons/exercises/ex09_work.py
(compared with ``videodiff.dit.rope_split`` / ``rope_angles`` and ``videodiff.sampling.scheduling_matrix``).
Reference: ``solutions/ex09_rope_and_schedules.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """(P_t, P_h, P_w): how many of the d/2 frequency pairs turn with the frame, the row, the column."""
    pairs = head_dim // 2
    spatial = todo("the pairs of the row axis (and of the column axis): a third of the pairs, rounded down")
    return todo("(pairs for frames, rows, columns); frames get what is left")


def rope_angles(frames: int, height: int, width: int, head_dim: int, base: float = 10_000.0) -> torch.Tensor:
    """The angle of every (token, pair): float32 (frames · height · width, head_dim / 2), tokens time-major."""
    pairs_t, pairs_h, pairs_w = rope_split(head_dim)
    # 1. Every token's frame, row and column, each (F, h, w), indexed [frame, row, column].
    frame, row, column = todo("torch.meshgrid of the three aranges, in the order that makes tokens time-major")
    angles = []
    for position, pairs in ((frame, pairs_t), (row, pairs_h), (column, pairs_w)):
        # 2. This axis's frequencies base^(-i / P), i = 0 … P − 1, (P,) in float64.
        frequencies = todo("base ** (-i / P) for i = 0 … P − 1")
        # 3. Position times frequency: (tokens, P).
        angles.append(todo("position flattened to a column (tokens, 1), in float64, times the frequencies"))
    return torch.cat(angles, dim=-1).float()  # (tokens, d/2)


def scheduling_matrix(kind: str, num_frames: int, num_steps: int, num_context: int = 0) -> torch.Tensor:
    """The noise-level indices (rows, num_frames) int64 of a schedule: 0 clean, num_steps pure noise.

    kind: "full_sequence", "pyramid" or "autoregressive"; the first ``num_context`` frames are context.
    """
    lag = todo("the lag of each kind: a dict from kind to 0, 1 or num_steps, indexed by kind")
    num_generated = num_frames - num_context
    rows = todo("S + (G − 1) · lag + 1")
    m = torch.arange(rows).view(-1, 1)  # (rows, 1) the row
    g = torch.arange(num_generated).view(1, -1)  # (1, G) which generated frame
    levels = todo("clamp(S + g · lag − m, 0, S), (rows, G)")
    matrix = torch.zeros(rows, num_frames, dtype=torch.int64)  # context columns stay 0: clean
    matrix[:, num_context:] = levels
    return matrix
