"""Reference answer to exercise 09 — where a token is, and when a frame is denoised.

    split:        P_h = P_w = ⌊(d/2) / 3⌋, P_t = d/2 − 2 P_w
    angles:       position · base^(−i / P) for each axis, tokens time-major, pairs (frame, row, column)
    schedules:    level[m, g] = clamp(S + g · lag − m, 0, S), rows = S + (G − 1) · lag + 1, context 0

The library's versions are ``videodiff.dit.rope_split`` / ``rope_angles`` and
``videodiff.sampling.scheduling_matrix`` (which also takes the context as a bool mask, so that
interpolation keeps its first and last frames clean, and checks its arguments).
"""
import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """(P_t, P_h, P_w): how many of the d/2 frequency pairs turn with the frame, the row, the column."""
    pairs = head_dim // 2
    spatial = pairs // 3
    return pairs - 2 * spatial, spatial, spatial


def rope_angles(frames: int, height: int, width: int, head_dim: int, base: float = 10_000.0) -> torch.Tensor:
    """The angle of every (token, pair): float32 (frames · height · width, head_dim / 2), tokens time-major."""
    pairs_t, pairs_h, pairs_w = rope_split(head_dim)
    # 1. indexing="ij": the first index (frame) varies slowest when flattened, the column fastest.
    frame, row, column = torch.meshgrid(torch.arange(frames), torch.arange(height), torch.arange(width),
                                        indexing="ij")  # each (F, h, w)
    angles = []
    for position, pairs in ((frame, pairs_t), (row, pairs_h), (column, pairs_w)):
        # 2. The axis's own P in the exponent: every axis has a first pair turning one radian per step.
        frequencies = base ** (-torch.arange(pairs, dtype=torch.float64) / pairs)  # (P,)
        # 3. (tokens, 1) · (P,) -> (tokens, P).
        angles.append(position.reshape(-1, 1).double() * frequencies)
    return torch.cat(angles, dim=-1).float()  # (tokens, d/2)


def scheduling_matrix(kind: str, num_frames: int, num_steps: int, num_context: int = 0) -> torch.Tensor:
    """The noise-level indices (rows, num_frames) int64 of a schedule: 0 clean, num_steps pure noise."""
    lag = {"full_sequence": 0, "pyramid": 1, "autoregressive": num_steps}[kind]
    num_generated = num_frames - num_context
    rows = num_steps + (num_generated - 1) * lag + 1
    m = torch.arange(rows).view(-1, 1)  # (rows, 1)
    g = torch.arange(num_generated).view(1, -1)  # (1, G)
    levels = (num_steps + g * lag - m).clamp(0, num_steps)  # (rows, G)
    matrix = torch.zeros(rows, num_frames, dtype=torch.int64)
    matrix[:, num_context:] = levels
    return matrix
