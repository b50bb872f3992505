"""Exercise 06 — patches and modulation, the two pieces of a DiT that are not a Transformer (imagediff.dit).

A Diffusion Transformer (Peebles & Xie 2023) reads an image, here a latent of shape (B, C, H, W), as
a sequence of tokens, exactly as ViT does (Dosovitskiy et al. 2021): cut it into non-overlapping
p × p patches and flatten each patch into one vector.

    patchify:    (B, C, H, W)  ->  (B, N, p·p·C),     N = (H/p) · (W/p)

Two orders must be fixed, and the model's output is only an image again if ``unpatchify`` undoes
both exactly (docs/pitfalls.md, pitfall 10):

- the order of the TOKENS: patches are numbered row by row, left to right then top to bottom (the
  order of the position table, ``sincos_position_embedding_2d``);
- the order of the VALUES INSIDE A TOKEN: (row in patch, column in patch, channel), channel last,
  so the p·p·C entries of a token are pixel (0, 0) with all its channels, then pixel (0, 1), …

A loop over the patches would do it, slowly.  A reshape and a permute do the same in three steps
that move no value twice, and the inverse is the same three steps backwards.  With h = H/p, w = W/p:

    (B, C, H, W) -> reshape (B, C, h, p, w, p)       split each side into (which patch, where inside)
                 -> permute (B, h, w, p, p, C)       patch grid first, then position in patch, channel
                 -> reshape (B, h·w, p·p·C)          one token per patch

``unpatchify`` runs the same three steps backwards.  It needs H and W: N alone cannot tell a 4 × 16
grid of patches from an 8 × 8 one.  (The library writes each direction as one ``einops.rearrange``
pattern; a reshape and a permute are the same thing spelled out.)

Adaptive LayerNorm (DiT, section 3.2).  The condition (timestep and class) is not given to the model
as a token: an MLP turns it into a shift and a scale, which move and stretch every normalised token:

    modulate(x, shift, scale) = x · (1 + scale) + shift

``1 + scale`` rather than ``scale``, so that a modulation initialised to zero (adaLN-Zero) leaves x
unchanged.

Your task: write the three functions.  Every ``todo(...)`` is an expression to replace.

Check your work:  python -m lessons.exercises.check 06 lessons/exercises/ex06_work.py
(compared with ``imagediff.dit.patchify`` and ``unpatchify`` bit for bit, and with ``modulate`` to 1e-12
and exactly for zero shift and scale, on square and non-square inputs, p = 1 and one patch per image).  Reference: ``solutions/ex06_patchify.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into p × p patches, one token per patch.

    x: (B, C, H, W) with H and W divisible by p = patch_size.
    Returns (B, N, p·p·C), tokens row by row, values in a token ordered (row in patch, column, channel).
    """
    batch, channels, height, width = x.shape
    p = patch_size
    h, w = height // p, width // p  # the grid of patches
    # 1. Split each side into (which patch, where inside it): (B, C, h, p, w, p).
    x = todo("x.reshape(…)")
    # 2. Grid of patches first, then row in patch, column in patch, channel: (B, h, w, p, p, C).
    x = todo("x.permute(…)")
    # 3. One token per patch: (B, h·w, p·p·C).
    return todo("x.reshape(…)")


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int, channels: int) -> torch.Tensor:
    """The exact inverse of ``patchify``: (B, N, p·p·C) -> (B, C, H, W).

    tokens: (B, N, p·p·C) with N = (height / p) · (width / p).  Returns (B, channels, height, width).
    """
    batch = tokens.shape[0]
    p = patch_size
    h, w = height // p, width // p
    # 1. Undo the last reshape of patchify: (B, h, w, p, p, C).
    x = todo("tokens.reshape(…)")
    # 2. Undo the permute: back to (B, C, h, p, w, p).
    x = todo("x.permute(…)")
    # 3. Merge (which patch, where inside it) into each side: (B, C, H, W).
    return todo("x.reshape(…)")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine step, x · (1 + scale) + shift.

    x: (B, N, D); shift, scale: (B, 1, D) (one per example) or (B, N, D) (one per token).
    Returns (B, N, D).
    """
    return todo("the modulated tokens; zero shift and scale must give x back")
