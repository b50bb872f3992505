"""Reference answer to exercise 11 — a hook that removes one attention head, and attention summed into frames.

    zero_head_hook:   z (B, heads, T, d) times a (1, heads, 1, 1) mask with 0 at the head; out of place, returned
    frame_attention:  keys split into (F, N) and summed; queries split into (F, N) and averaged

The library's versions are ``videodiff.interp.heads.head_ablation_hooks`` (zero- or mean-ablation of
any heads of any layers, with the hook names attached) and ``videodiff.interp.activations.frame_attention``
(with einops, and a check of the shape).
"""
import torch


def zero_head_hook(head: int):
    """A hook for ``blocks.i.attention.hook_z`` that sets head ``head``'s output to 0."""
    def hook(z: torch.Tensor, hook_point) -> torch.Tensor:
        # 1. The mask broadcasts over clips, tokens and the head dimension: only axis 1 is the heads.
        keep = torch.ones(1, z.shape[1], 1, 1, dtype=z.dtype, device=z.device)
        keep[0, head] = 0.0
        # 2. z * keep is a new tensor: the activation other hooks see is untouched.
        return z * keep

    return hook


def frame_attention(pattern: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Sum a token pattern (B, heads, F·N, F·N) into frames: (B, heads, F, F), each row summing to 1."""
    batch, heads, total, _ = pattern.shape
    tokens = total // num_frames  # N
    # 1. Time-major: key k is token k % N of frame k // N, so (F, N) in that order; summed over the frame's keys.
    to_frames = pattern.reshape(batch, heads, total, num_frames, tokens).sum(dim=-1)  # (B, heads, T, F)
    # 2. The same split of the queries; averaged, so that a row (a distribution) still sums to 1.
    return to_frames.reshape(batch, heads, num_frames, tokens, num_frames).mean(dim=3)  # (B, heads, F, F)
