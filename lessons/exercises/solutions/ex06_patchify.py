"""Reference answer to exercise 06 — patches and modulation.

    patchify:    (B, C, H, W) -> (B, h, w, p, p, C) -> (B, h·w, p·p·C)     tokens row by row, channel last
    unpatchify:  the same steps backwards
    modulate:    x · (1 + scale) + shift                                    (adaLN; zero is the identity)

The library's versions are ``imagediff.dit.patchify`` / ``unpatchify`` (one ``einops.rearrange``
pattern each, "b c (h p) (w q) -> b (h w) (p q c)", and a check of the shapes with a message) and
``imagediff.dit.modulate``.
"""
import torch


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p·p·C), tokens row by row, values (row in patch, column, channel)."""
    batch, channels, height, width = x.shape
    p = patch_size
    h, w = height // p, width // p
    # 1. Split each side into (which patch, where inside it).
    x = x.reshape(batch, channels, h, p, w, p)  # (B, C, h, p, w, p)
    # 2. Grid first, then row in patch, column in patch, channel.
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    # 3. One token per patch.
    return x.reshape(batch, h * w, p * p * channels)  # (B, N, p·p·C)


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int, channels: int) -> torch.Tensor:
    """The exact inverse of ``patchify``: (B, N, p·p·C) -> (B, C, H, W)."""
    batch = tokens.shape[0]
    p = patch_size
    h, w = height // p, width // p
    # 1. Undo the last reshape.
    x = tokens.reshape(batch, h, w, p, p, channels)  # (B, h, w, p, p, C)
    # 2. Undo the permute: C (now dim 5) goes back to dim 1, h to 2, p to 3, w to 4, p to 5.
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    # 3. Merge each side back.
    return x.reshape(batch, channels, height, width)  # (B, C, H, W)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x · (1 + scale) + shift.  x: (B, N, D); shift, scale: (B, 1, D) or (B, N, D).  Returns (B, N, D)."""
    return x * (1 + scale) + shift  # (B, N, D)
