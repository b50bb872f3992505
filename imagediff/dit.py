"""The Diffusion Transformer (DiT, Peebles & Xie 2023): a plain ViT that denoises latents.

A DiT cuts the noisy latent into p x p patches, treats each patch as a token, and runs a stack of
transformer blocks whose LayerNorms are *modulated* by the conditioning c = emb(t) + emb(label):

  x_t (B, C, H, W) ──patchify──► (B, N, p·p·C) ──patch_embedding──► + sincos positions ──► x (B, N, D)

  t (B,) ──timestep_embedding──► MLP ──┐
                                       + ──► c (B, D)
  label (B,) ──label_embedding ────────┘                (label None = the null label)

  x ──► DiTBlock(x, c) × depth ──► FinalLayer(x, c) ──► (B, N, p·p·C) ──unpatchify──► (B, C, H, W)

Each block is three lines (DiT Figure 3, "adaLN-Zero"):

    shift, scale, gate (×2) = Linear(SiLU(c))
    x = x + gate_attn · Attention(modulate(LayerNorm(x), shift_attn, scale_attn))
    x = x + gate_mlp  · MLP(modulate(LayerNorm(x), shift_mlp, scale_mlp))

The modulation Linear starts at zero, so every gate starts at zero and every block starts as the
identity; the final projection starts at zero too, so the untrained model outputs exactly zeros
(docs/pitfalls.md, pitfall 9). See `DiT.initialize_weights` for why training still gets going.

Notation
    B batch, C channels of the latent, H, W its height and width, p the patch size,
    h = H / p, w = W / p the token grid, N = h · w tokens, D = hidden_dim, heads · head_dim = D.

Written to be extended, not copied, by the video layer:
    - `DiTBlock.forward(x, c, rotary)` takes c of shape (B, D) (one condition per example) *or*
      (B, N, D) (one per token — e.g. every frame with its own noise level), and an optional
      `rotary(q, k) -> (q, k)` applied to queries and keys, where 3-D RoPE plugs in;
    - `DiT.embed_condition(t, labels)` accepts t of any shape (B, ...), e.g. (B, F) per frame;
    - `DiT.embed_patches` is the one place that adds the (here 2-D sincos) positional encoding;
    - every zero-initialisation lives in `DiT.initialize_weights`; blocks live in `DiT.blocks`
      (a ModuleList), so forward hooks on `model.blocks[i]` see the residual stream;
    - `DiTTrunk` is the DiT without its output head (DiT is the trunk plus `FinalLayer`): a model
      with another head holds a trunk, as the noisy classifier of imagediff.classifier does.

What is left out of the original: `learn_sigma` (a doubled output whose second half predicts the
variance interpolation of improved DDPM); our samplers use fixed variances, so the output has exactly
the input's channels. Label dropout is not done here either: the model embeds whatever labels it
gets, and `toydiff.losses.DiffusionObjective` drops labels to the null label in training mode only.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Callable, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from torch.nn.attention import SDPBackend, sdpa_kernel

from imagediff.hooks import HookPoint, name_hook_points
from toydiff.models import timestep_embedding

# Rotates queries and keys (B, heads, N, head_dim) before their dot product: how RoPE enters.
Rotary = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ---------------------------------------------------------------------------------------------
#                                         Configuration
# ---------------------------------------------------------------------------------------------


# The MLP's non-linearity (DiTConfig.mlp_activation) -> F.gelu's `approximate`.
MLP_ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}


@dataclass
class DiTConfig:
    """Every choice that shapes the DiT, in plain types (it is saved in checkpoints)."""

    # Latent (height, width) the positional table is built for; an int means a square latent.
    # 32x32 images through the f=4 VAE give 8x8 latents.
    input_size: Union[int, tuple[int, int]] = (8, 8)
    in_channels: int = 4            # 4 latent channels, or 3 to denoise pixels directly
    patch_size: int = 2             # p: each token is a p x p patch; N = (H/p)(W/p) tokens
    hidden_dim: int = 128           # D, the width of the residual stream
    depth: int = 4                  # number of DiTBlocks
    num_heads: int = 4
    mlp_ratio: float = 4.0          # the MLP's hidden width is mlp_ratio * D
    num_classes: int = 0            # 0: unconditional; else labels 0..num_classes-1, null = num_classes
    time_embedding_dim: int = 256   # width of the sinusoidal timestep features fed to the time MLP
    # Initial std of the label table. DiT uses 0.02, made for 400k-step runs: it makes emb(y) about
    # 0.02 per dimension, and the zero-initialised adaLN Linear must grow weights of order
    # 1 / (0.02 · sqrt(D)) before a label can move the modulation: thousands of Adam steps, more than
    # a short CPU run has. With 1.0 (PyTorch's own Embedding init) a short run of the tiny latent DiT
    # on the shape classes drew the requested class more often, with a lower Fréchet distance.
    label_init_std: float = 1.0
    # Self-conditioning (Chen, Zhang & Hinton 2022, "Analog Bits"): the model also reads its own
    # previous estimate of x_0, as extra input channels beside x_t (zeros when there is none). A
    # sampler that has guessed an angle for "red square" at one step can then keep it at the next
    # instead of averaging over all angles (docs/image_levers.md). Trained by
    # toydiff.losses.DiffusionObjective(self_condition=p), sampled through toydiff.samplers.SelfConditioned.
    self_condition: bool = False
    # Angle conditioning: the model is also told the angle each training image was drawn at (a data
    # set that knows it, ImageDataset.angles), as emb(angle) added to c like emb(t) and emb(label); a
    # sampler draws an angle from the training range for each sample, or takes the one asked for. The
    # label alone leaves "red square" at every angle at once, and the sampler must break that symmetry
    # (docs/image_levers.md); given the angle, the model need not. SDXL conditions on crop and size the
    # same way (Podell et al. 2023, "micro-conditioning"). Off by default: at equal wall time it did not
    # help (0.48-0.50 against 0.48 at 180 s, 0.49 against 0.59 at 360 s): choosing the angle is not what
    # the model finds hard, drawing every angle is (docs/image_levers.md).
    angle_conditioning: bool = False
    # With angle conditioning, also compute each token's sincos position in the frame of the angle:
    # the grid turned by -angle about its centre, so that a shape drawn at that angle sits upright
    # in the coordinates the model reads (docs/image_levers.md).
    angle_positions: bool = False
    # 0: embed the angle by its harmonics and an MLP (AngleEmbedder); n > 0: by a table of n equal bins
    # of the circle, initialised like the label table (std label_init_std).
    angle_bins: int = 0
    # Factored labels: for each class, the index of each part of its name in that part's vocabulary,
    # e.g. "red square" -> [colour 0, shape 1] (``factored_label_parts``). emb(label) is then the sum
    # of one learned vector per part, so every square, whatever its colour, trains the same "square"
    # vector; None gives every class its own vector (the label table).
    label_parts: Optional[list] = None
    # The condition also as a token (DiT's "in-context conditioning", Peebles & Xie 2023, beside adaLN):
    # a Linear of c prepended to the patch tokens, so that attention can read the label and the noise
    # level; dropped before the final layer. Image DiT only (a video's c is per frame).
    condition_token: bool = False
    # The MLP's non-linearity: "gelu" (exact, through erf) or "gelu_tanh" (the tanh approximation the
    # DiT paper used, as did this project's runs stored before the option). They differ by less than
    # 1e-3; the exact one is cheaper on a CPU: compiled, the tiny image DiT's training step took 102
    # against 113 ms (docs/image_levers.md, "Where the step's time goes").
    mlp_activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise ValueError(f"DiTConfig.mlp_activation must be one of {', '.join(MLP_ACTIVATIONS)}, "
                             f"got {self.mlp_activation!r}")
        # A checkpoint stores the tuple as a list; make the config equal to the one that saved it.
        size = self.input_size
        size = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(
                f"DiTConfig.input_size must be an int or (height, width) of positive ints, got {self.input_size!r}."
            )
        self.input_size = size
        height, width = size
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"DiTConfig: input_size {size} is not divisible by patch_size={self.patch_size}; "
                f"choose a patch size that divides both the height and the width."
            )
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"DiTConfig: hidden_dim={self.hidden_dim} must be divisible by num_heads={self.num_heads}."
            )
        if self.hidden_dim % 4:
            # The 2-D sincos table spends D/2 on rows and D/2 on columns, each half cos and half sin.
            raise ValueError(
                f"DiTConfig: hidden_dim must be divisible by 4 for the 2-D sincos table, got {self.hidden_dim}."
            )
        if isinstance(self.angle_bins, bool) or not isinstance(self.angle_bins, Integral) or self.angle_bins < 0:
            raise ValueError(f"DiTConfig.angle_bins is 0 (harmonics and an MLP) or a number of bins, got {self.angle_bins!r}")
        if self.angle_positions and not self.angle_conditioning:
            raise ValueError("DiTConfig.angle_positions needs angle_conditioning=True (the angles it turns the grid by)")
        if self.num_classes < 0:
            raise ValueError(f"DiTConfig.num_classes must be >= 0 (0 = unconditional), got {self.num_classes}.")
        if self.label_parts is not None:
            self.label_parts = [[int(i) for i in parts] for parts in self.label_parts]  # tuples from a user, lists from a checkpoint
            widths = {len(parts) for parts in self.label_parts}
            if (len(self.label_parts) != self.num_classes or len(widths) != 1 or 0 in widths
                    or min(min(parts) for parts in self.label_parts) < 0):
                raise ValueError(f"DiTConfig.label_parts must give each of the {self.num_classes} classes the same "
                                 f"number (>= 1) of non-negative part indices, got {self.label_parts!r}")

    @property
    def height(self) -> int:
        return self.input_size[0]

    @property
    def width(self) -> int:
        return self.input_size[1]

    @property
    def grid_size(self) -> tuple[int, int]:
        """(h, w) = (H / p, W / p), the token grid."""
        return self.height // self.patch_size, self.width // self.patch_size

    @property
    def num_tokens(self) -> int:
        """N = h · w tokens per example."""
        grid_height, grid_width = self.grid_size
        return grid_height * grid_width

    @property
    def out_channels(self) -> int:
        """The denoiser predicts ε (or x_0, v) with the input's channels; no learn_sigma doubling."""
        return self.in_channels

    @property
    def patch_dim(self) -> int:
        """p · p · C, the length of one flattened patch."""
        return self.patch_size * self.patch_size * self.in_channels

    @property
    def input_patch_dim(self) -> int:
        """What the patch embedding reads per token: a patch of x_t, and with self-conditioning the same
        patch of the previous x_0 estimate beside it (2 · p · p · C)."""
        return self.patch_dim * (2 if self.self_condition else 1)

    @property
    def mlp_hidden_dim(self) -> int:
        return int(self.hidden_dim * self.mlp_ratio)


# Named sizes, as in DiT's registry. small/base/large/xlarge are DiT-S/B/L/XL (Table 1 of the paper);
# the patch size is a separate choice (DiT-XL/2 is xlarge with patch_size=2).
DIT_SIZES: dict[str, DiTConfig] = {
    # The CPU lessons: trains on 8x8x4 latents in minutes on a 2-core laptop.
    "tiny": DiTConfig(hidden_dim=128, depth=4, num_heads=4),
    # A longer CPU run, or a first GPU run.
    "mini": DiTConfig(hidden_dim=256, depth=6, num_heads=4),
    # DiT-S, DiT-B, DiT-L, DiT-XL: GPU sizes.
    "small": DiTConfig(hidden_dim=384, depth=12, num_heads=6),
    "base": DiTConfig(hidden_dim=768, depth=12, num_heads=12),
    "large": DiTConfig(hidden_dim=1024, depth=24, num_heads=16),
    "xlarge": DiTConfig(hidden_dim=1152, depth=28, num_heads=16),
}


def factored_label_parts(class_names) -> list:
    """Each class name's words as indices into one vocabulary per word position: ["red circle",
    "blue circle", "red square"] -> [[0, 0], [1, 0], [0, 1]] (DiTConfig.label_parts). Names with a
    different number of words cannot be factored: a ValueError says which."""
    words = [name.split() for name in class_names]
    if len({len(w) for w in words}) != 1:
        raise ValueError(f"factored labels need class names of the same number of words, got {list(class_names)}")
    vocabularies = [list(dict.fromkeys(w[position] for w in words)) for position in range(len(words[0]))]
    return [[vocabulary.index(word) for vocabulary, word in zip(vocabularies, w)] for w in words]


def stored_dit_fields(fields: dict) -> dict:
    """The fields of a DiT config read from a checkpoint, with the value it was trained with for every
    option it was stored before: DiTConfig(**stored_dit_fields(checkpoint["config"]["dit"]))."""
    return {"mlp_activation": "gelu_tanh", **fields}


def dit_config(size: str = "tiny", **overrides) -> DiTConfig:
    """The DiTConfig registered under `size`, with any field replaced by `overrides`."""
    if size not in DIT_SIZES:
        raise ValueError(f"Unknown DiT size {size!r}; the registered sizes are {list(DIT_SIZES)}.")
    return replace(DIT_SIZES[size], **overrides)


def make_dit(size: str = "tiny", **overrides) -> DiT:
    """A freshly initialised DiT of a registered size, e.g. ``make_dit("tiny", num_classes=10)``."""
    return DiT(dit_config(size, **overrides))


# ---------------------------------------------------------------------------------------------
#                                  Patches and their positions
# ---------------------------------------------------------------------------------------------


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping p x p patches, row by row (the same order as the sincos table).

    x: (B, C, H, W) with H and W divisible by p.  Returns (B, N, p·p·C), N = (H/p)(W/p); within a
    token the values are ordered (row in patch, column in patch, channel).
    """
    if x.ndim != 4:
        raise ValueError(f"patchify expected a tensor of shape (B, C, H, W), got {tuple(x.shape)}.")
    height, width = x.shape[-2:]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"patchify: height {height} and width {width} must both be divisible by patch_size={patch_size}."
        )
    return rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=patch_size, q=patch_size)  # (B, N, p·p·C)


def unpatchify(tokens: torch.Tensor, patch_size: int, height: int, width: int, channels: int) -> torch.Tensor:
    """The exact inverse of `patchify` (docs/pitfalls.md, pitfall 10): (B, N, p·p·C) -> (B, C, H, W).

    The image size must be given: N alone cannot tell a 4x16 grid from an 8x8 one.
    """
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"unpatchify: height {height} and width {width} must both be divisible by patch_size={patch_size}."
        )
    grid_height, grid_width = height // patch_size, width // patch_size
    expected = (grid_height * grid_width, patch_size * patch_size * channels)
    if tokens.ndim != 3 or tuple(tokens.shape[1:]) != expected:
        raise ValueError(
            f"unpatchify expected tokens of shape (B, {expected[0]}, {expected[1]}) for a {channels}x{height}x{width} "
            f"image with patch_size={patch_size}, got {tuple(tokens.shape)}."
        )
    return rearrange(
        tokens, "b (h w) (p q c) -> b c (h p) (w q)", h=grid_height, w=grid_width, p=patch_size, q=patch_size
    )  # (B, C, H, W)


def grid_rows_and_columns(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, column) of each token of an h x w grid in patchify's row-major order: two (h·w,) float32."""
    rows = torch.arange(height, device=device, dtype=torch.float32).repeat_interleave(width)  # 0 0 … 1 1 …
    columns = torch.arange(width, device=device, dtype=torch.float32).repeat(height)  # 0 1 … 0 1 …
    return rows, columns


def sincos_at(rows: torch.Tensor, columns: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of positions (..., dim): the row's in the first dim/2, the column's in the rest,
    each the sinusoid that embeds timesteps; positions need not be integers (DiT.turned_positions)."""
    return torch.cat([timestep_embedding(rows, dim // 2), timestep_embedding(columns, dim // 2)], dim=-1)


def sincos_position_embedding_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal positions for an h x w token grid (MAE / DiT), in patchify's row-major order.

    The first dim/2 features embed the row index, the last dim/2 the column index, each with the
    same sinusoid that embeds timesteps (`toydiff.models.timestep_embedding`): a position is just
    another integer. Works for any grid, square or not.  Returns float32 (height · width, dim).
    """
    if dim % 4:
        raise ValueError(f"the 2-D sincos embedding needs dim divisible by 4, got {dim}.")
    return sincos_at(*grid_rows_and_columns(height, width), dim)  # (h·w, dim)


# ---------------------------------------------------------------------------------------------
#                                      Embedding the condition
# ---------------------------------------------------------------------------------------------


class AngleEmbedder(nn.Module):
    """Angles (...) in radians -> vectors (..., D): cos kθ and sin kθ for k = 1..K, then Linear-SiLU-Linear;
    or, with ``num_bins`` = n > 0, the row of a learned table for the nearest of n angles k·2π/n.

    Periodic by construction (θ and θ + 2π embed alike); the harmonics up to K let the MLP express a
    shape's symmetry (a square looks the same every π/2: k = 4).
    """

    def __init__(self, hidden_dim: int, num_harmonics: int = 8, num_bins: int = 0) -> None:
        super().__init__()
        self.num_bins = num_bins
        if num_bins > 0:
            self.table = nn.Embedding(num_bins, hidden_dim)
            return
        self.register_buffer("harmonics", torch.arange(1, num_harmonics + 1, dtype=torch.float32), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * num_harmonics, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))

    def forward(self, angles: torch.Tensor) -> torch.Tensor:
        if self.num_bins > 0:  # bins centred on k·2π/n, so that the angles of data with n orientations sit mid-bin
            turns = angles.float() / (2 * math.pi)  # (...,)
            return self.table(torch.remainder(torch.round(turns * self.num_bins).long(), self.num_bins))  # (..., D)
        phases = angles.float()[..., None] * self.harmonics  # (..., K)
        return self.mlp(torch.cat([phases.cos(), phases.sin()], dim=-1))  # (..., D)


class TimestepEmbedder(nn.Module):
    """Integer timesteps (...) -> vectors (..., D): sinusoidal features, then Linear-SiLU-Linear."""

    def __init__(self, hidden_dim: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, hidden_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim))  # (..., D)


# ---------------------------------------------------------------------------------------------
#                                        The DiT block
# ---------------------------------------------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm's affine step, x · (1 + scale) + shift.

    x: (B, N, D); shift, scale: (B, 1, D) (one per example) or (B, N, D) (one per token).
    `1 + scale` rather than `scale`, so that a zero-initialised modulation leaves x unchanged.
    """
    return x * (1 + scale) + shift


def check_condition(x: torch.Tensor, c: torch.Tensor, where: str) -> None:
    """c must be (B, D), one condition per example, or (B, G, D) with G dividing N: one condition per
    group of N / G consecutive tokens (G = N: per token; G = F frames of a time-major video: per frame)."""
    batch, tokens, dim = x.shape
    if c.ndim not in (2, 3) or c.shape[0] != batch or c.shape[-1] != dim or (
        c.ndim == 3 and (c.shape[1] < 1 or tokens % c.shape[1])
    ):
        raise ValueError(
            f"{where} expected a condition of shape ({batch}, {dim}) or ({batch}, G, {dim}) with G dividing "
            f"the {tokens} tokens (G = {tokens}: one per token), got {tuple(c.shape)}."
        )


def per_token(values: torch.Tensor, condition: torch.Tensor, num_tokens: Optional[int] = None) -> torch.Tensor:
    """Make one modulation tensor broadcast against the tokens (B, N, D).

    values (B, D), from a condition (B, D) -> (B, 1, D); values (B, N, D) -> unchanged;
    values (B, G, D) with G < N = num_tokens -> each group's row repeated over its N / G consecutive
    tokens, (B, N, D).
    """
    if condition.ndim == 2:
        return values.unsqueeze(1)  # (B, 1, D)
    if num_tokens is not None and condition.shape[1] != num_tokens:
        return values.repeat_interleave(num_tokens // condition.shape[1], dim=1)  # (B, N, D)
    return values


def split_modulation(modulation: torch.Tensor, condition: torch.Tensor, chunks: int,
                     num_tokens: Optional[int] = None,
                     hook_points: Optional[list[HookPoint]] = None) -> tuple[torch.Tensor, ...]:
    """Split the output of an adaLN Linear into `chunks` tensors that broadcast against (B, N, D).

    condition (B, D) gives modulation (B, chunks·D) -> each (B, 1, D);
    condition (B, N, D) gives modulation (B, N, chunks·D) -> each (B, N, D);
    condition (B, G, D) with G < N = num_tokens: each group's modulation is repeated over its N / G
    consecutive tokens -> each (B, N, D). The Linear ran G times, not N times: for a video, once per
    frame rather than once per token (it costs 6·D² per row, half as much as the block's own matmuls).
    hook_points: one per chunk, seeing (and able to replace) it before the repeat, (B, D) or (B, G, D).
    """
    parts = modulation.chunk(chunks, dim=-1)  # each (B, D) or (B, G, D)
    if hook_points is not None:
        parts = [hook(part) for hook, part in zip(hook_points, parts)]
    return tuple(per_token(part, condition, num_tokens) for part in parts)


# On a CPU, sequences of up to this many tokens go through SDPA's math kernel (QKᵀ, softmax, AV), which
# torch.compile fuses with the rest of the step, instead of the flash kernel, whose blocking pays off on
# long sequences. Compiled: the tiny image DiT's training step (16 tokens) took 102 against 111 ms, the
# video DiT's (128 tokens) the same either way, the pixel DiT's (256 tokens) longer, 2.8-3.4 s against
# 2.2-2.4 s (docs/image_levers.md, "Where the step's time goes").
SHORT_SEQUENCE = 128


def attention_kernel(q: torch.Tensor):
    """The context to call F.scaled_dot_product_attention in for queries q (B, heads, N, d): the math
    kernel for a short sequence on a CPU, PyTorch's own choice otherwise. Both give the same output."""
    if q.device.type == "cpu" and q.shape[-2] <= SHORT_SEQUENCE:
        return sdpa_kernel(SDPBackend.MATH)
    return nullcontext()


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    By default it calls `F.scaled_dot_product_attention` (fused, memory-efficient; on a CPU, short
    sequences take its math kernel: `attention_kernel`). Set
    `record_attention = True` to compute softmax(Q Kᵀ / sqrt(head_dim)) explicitly instead and keep it
    in `attention_pattern`, (B, heads, N, N), for interpretability. Both paths give the same output.
    The stored pattern is not detached, so gradient-based attribution through it works; detach it to
    keep it past the step.

    Hook points (imagediff.hooks): q, k, v (B, heads, N, d), q and k after the rotary hook; scores and
    pattern (B, heads, N, N), formed only when one of them is hooked (or record_attention is on);
    z (B, heads, N, d), each head's output before the projection; head_out (B, N, heads, D), each
    head's contribution after the projection (their sum plus the bias is the output), formed only
    when hooked.
    """

    def __init__(self, hidden_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.qkv = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.projection = nn.Linear(hidden_dim, hidden_dim)
        self.record_attention = False
        self.attention_pattern: Optional[torch.Tensor] = None
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()
        self.hook_scores, self.hook_pattern = HookPoint(), HookPoint()
        self.hook_z, self.hook_head_out = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor, rotary: Optional[Rotary] = None) -> torch.Tensor:
        """x: (B, N, D); rotary: optional (q, k) -> (q, k) on (B, heads, N, head_dim). Returns (B, N, D)."""
        qkv = self.qkv(x)  # (B, N, 3D)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)  # (B, h, N, d) each
        if rotary is not None:
            q, k = rotary(q, k)  # (B, h, N, d)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)  # (B, h, N, d)
        if self.record_attention or self.hook_scores.is_hooked or self.hook_pattern.is_hooked:
            scores = self.hook_scores(q @ k.transpose(-2, -1) / math.sqrt(self.head_dim))  # (B, h, N, N)
            pattern = self.hook_pattern(scores.softmax(dim=-1))  # (B, h, N, N), rows sum to 1
            if self.record_attention:
                self.attention_pattern = pattern
            out = pattern @ v  # (B, h, N, d)
        else:
            with attention_kernel(q):
                out = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d), same scale 1/sqrt(d)
        out = self.hook_z(out)  # (B, h, N, d)
        if self.hook_head_out.is_hooked:
            # The projection W_O (D, h·d) is a sum over heads of W_O[:, head] (D, d): split it.
            weight = self.projection.weight.view(-1, self.num_heads, self.head_dim)  # (D, h, d)
            heads = self.hook_head_out(torch.einsum("bhnd,ehd->bnhe", out, weight))  # (B, N, h, D)
            return heads.sum(dim=2) + self.projection.bias  # (B, N, D)
        return self.projection(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


class FeedForward(nn.Module):
    """The transformer MLP: Linear -> GELU (exact, or the tanh approximation: DiTConfig.mlp_activation) -> Linear."""

    def __init__(self, hidden_dim: int, mlp_hidden_dim: int, activation: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_dim, mlp_hidden_dim)
        self.fc2 = nn.Linear(mlp_hidden_dim, hidden_dim)
        self.approximate = MLP_ACTIVATIONS[activation]  # F.gelu's name for it
        self.hook_hidden = HookPoint()  # (B, N, mlp_hidden_dim), after the GELU: the MLP's "neurons"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hook_hidden(F.gelu(self.fc1(x), approximate=self.approximate)))  # (B, N, D)


class DiTBlock(nn.Module):
    """A transformer block conditioned by adaLN-Zero (DiT section 3.2).

    c: (B, D), one condition for all tokens of an example; (B, N, D), one per token; or (B, G, D),
    one per group of N / G consecutive tokens (the video layer passes one per frame, G = F, so every
    frame's tokens get that frame's noise level). Conditions that are all equal give the output of
    the (B, D) call.

    Hook points: resid_pre, resid_mid, resid_post (B, N, D), the residual stream before the block,
    between its halves and after it; attn_out and mlp_out (B, N, D), what each half adds to the
    stream (gate included); shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp,
    (B, D) or (B, G, D), the modulation per condition (per frame for a video) before it is repeated
    over the tokens. The attention's and the MLP's own sites are in SelfAttention and FeedForward.
    """

    MODULATION = ("shift_attn", "scale_attn", "gate_attn", "shift_mlp", "scale_mlp", "gate_mlp")

    def __init__(self, hidden_dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 mlp_activation: str = "gelu") -> None:
        super().__init__()
        # No learned affine: the scale and shift come from the condition instead.
        self.norm1 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.attention = SelfAttention(hidden_dim, num_heads)
        self.norm2 = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(hidden_dim, int(hidden_dim * mlp_ratio), mlp_activation)
        # c -> (shift, scale, gate) for the attention and for the MLP; zero at init (adaLN-Zero).
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 6 * hidden_dim))
        for kind in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post") + self.MODULATION:
            setattr(self, f"hook_{kind}", HookPoint())

    def forward(self, x: torch.Tensor, c: torch.Tensor, rotary: Optional[Rotary] = None) -> torch.Tensor:
        """x: (B, N, D); c: (B, D), (B, N, D) or (B, G, D); rotary: see SelfAttention. Returns (B, N, D)."""
        check_condition(x, c, "DiTBlock")
        x = self.hook_resid_pre(x)  # (B, N, D)
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = split_modulation(
            self.adaln_modulation(c), c, 6, x.shape[1], [getattr(self, f"hook_{kind}") for kind in self.MODULATION]
        )  # each (B, 1, D) or (B, N, D)
        attn_out = self.hook_attn_out(gate_attn * self.attention(modulate(self.norm1(x), shift_attn, scale_attn), rotary))
        x = self.hook_resid_mid(x + attn_out)  # (B, N, D)
        mlp_out = self.hook_mlp_out(gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)))  # (B, N, D)
        return self.hook_resid_post(x + mlp_out)  # (B, N, D)


class FinalLayer(nn.Module):
    """adaLN (shift and scale, no gate) followed by a Linear from D to p·p·out_channels per token."""

    def __init__(self, hidden_dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim, elementwise_affine=False, eps=1e-6)
        self.adaln_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_dim, 2 * hidden_dim))
        self.linear = nn.Linear(hidden_dim, patch_size * patch_size * out_channels)
        # Hook points: shift and scale (B, D) or (B, G, D); out (B, N, p·p·out_channels), the output tokens.
        self.hook_shift, self.hook_scale, self.hook_out = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (B, N, D); c: (B, D), (B, N, D) or (B, G, D), see DiTBlock. Returns (B, N, p·p·out_channels)."""
        check_condition(x, c, "FinalLayer")
        shift, scale = split_modulation(
            self.adaln_modulation(c), c, 2, x.shape[1], [self.hook_shift, self.hook_scale]
        )  # each (B, 1, D) or (B, N, D)
        return self.hook_out(self.linear(modulate(self.norm(x), shift, scale)))  # (B, N, p·p·C)


# ---------------------------------------------------------------------------------------------
#                                            The model
# ---------------------------------------------------------------------------------------------


class DiTTrunk(nn.Module):
    """A DiT without its output head: ``trunk(x_t, t, labels=None) -> (x (B, N, D), c (B, D))``.

    Patches and their positions, the condition c = emb(t) + emb(label), and the stack of blocks:
    everything up to the residual stream after the last block. Two models are built on it:
    `DiT`, which adds the FinalLayer that maps each token back to a patch of the prediction, and
    `imagediff.classifier.NoisyLatentClassifier`, which holds a trunk and pools its tokens into
    class logits.
    """

    def __init__(self, config: Optional[DiTConfig] = None, initialize: bool = True) -> None:
        """initialize=False leaves the weights to a model that adds layers first (DiT), so that its
        ``initialize_weights`` draws every weight, the trunk's and its own, in one pass."""
        super().__init__()
        self.config = config if config is not None else DiTConfig()
        config = self.config
        # A Linear on flattened patches: the same map as DiT's Conv2d with stride p, written with patchify.
        self.patch_embedding = nn.Linear(config.input_patch_dim, config.hidden_dim)
        # Fixed, not learned; derived from the config, so not saved (persistent=False).
        self.register_buffer("position_embedding", self.build_position_embedding(), persistent=False)
        self.timestep_embedder = TimestepEmbedder(config.hidden_dim, config.time_embedding_dim)
        # num_classes + 1 rows: the last one is the reserved null label ("no label") of CFG.
        self.label_embedding = (
            nn.Embedding(config.num_classes + 1, config.hidden_dim)
            if config.num_classes > 0 and config.label_parts is None else None
        )
        self.label_part_embedding = None
        if config.num_classes > 0 and config.label_parts is not None:
            # One table holding every part's vocabulary, then a null row; label -> its rows, summed.
            parts = torch.tensor(config.label_parts)  # (K, P)
            sizes = parts.max(dim=0).values + 1  # (P,) the vocabulary of each part
            rows = parts + torch.cumsum(sizes, 0) - sizes  # (K, P) offsets into the one table
            null = torch.full((1, parts.shape[1]), int(sizes.sum()))  # (1, P): the null label's row
            self.register_buffer("label_part_rows", torch.cat([rows, null]), persistent=False)  # (K + 1, P)
            self.label_part_embedding = nn.Embedding(int(sizes.sum()) + 1, config.hidden_dim)
        self.angle_embedder = (AngleEmbedder(config.hidden_dim, num_bins=config.angle_bins)
                               if config.angle_conditioning else None)
        # DiTConfig.condition_token: the Linear that makes c a token (None without one).
        self.condition_to_token = nn.Linear(config.hidden_dim, config.hidden_dim) if config.condition_token else None
        self.blocks = nn.ModuleList(
            DiTBlock(config.hidden_dim, config.num_heads, config.mlp_ratio, config.mlp_activation)
            for _ in range(config.depth)
        )
        # Hook points outside the blocks: the tokens entering block 0 (B, N, D); emb(t) and the whole
        # condition c (B, D), or (B, F, D) for a video. See imagediff.hooks and docs/hooks.md.
        self.hook_patch_embed, self.hook_time_embed, self.hook_condition = HookPoint(), HookPoint(), HookPoint()
        name_hook_points(self)
        if initialize:
            self.initialize_weights()

    def build_position_embedding(self) -> Optional[torch.Tensor]:
        """The fixed table added to the patch embeddings, (1, N, D): 2-D sincos over the token grid.

        A model that encodes positions otherwise (the video DiT rotates queries and keys instead)
        returns None here and adds nothing in `embed_patches`.
        """
        grid_height, grid_width = self.config.grid_size
        return sincos_position_embedding_2d(grid_height, grid_width, self.config.hidden_dim).unsqueeze(0)  # (1, N, D)

    def initialize_weights(self) -> None:
        """The trunk's part of the original DiT's `initialize_weights` (DiT adds the final layer's).

        - Linears: Xavier-uniform weights, zero biases (the patch embedding too, as DiT does for its conv).
        - Timestep MLP: normal, std 0.02; label table: normal, std ``config.label_init_std``.
        - adaLN-Zero: every modulation Linear zero, so every gate is 0 and every block the identity.
        """

        def xavier(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(xavier)
        for layer in self.timestep_embedder.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.normal_(layer.weight, std=0.02)
        if self.label_embedding is not None:
            nn.init.normal_(self.label_embedding.weight, std=self.config.label_init_std)
        if self.label_part_embedding is not None:  # a sum of P vectors: each std / sqrt(P), the sum std
            parts = self.label_part_rows.shape[1]
            nn.init.normal_(self.label_part_embedding.weight, std=self.config.label_init_std / math.sqrt(parts))
        if self.angle_embedder is not None and self.angle_embedder.num_bins > 0:
            nn.init.normal_(self.angle_embedder.table.weight, std=self.config.label_init_std)
        for block in self.blocks:
            nn.init.zeros_(block.adaln_modulation[-1].weight)
            nn.init.zeros_(block.adaln_modulation[-1].bias)

    @property
    def null_label(self) -> Optional[int]:
        """The reserved label index meaning "unconditional" (= num_classes), or None if unconditional."""
        return self.config.num_classes if self.config.num_classes > 0 else None

    # -- checks that speak to the user --------------------------------------------------------

    def check_inputs(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor],
                     angles: Optional[torch.Tensor] = None) -> None:
        config = self.config
        expected = (config.in_channels, config.height, config.width)
        if x_t.ndim != 4 or tuple(x_t.shape[1:]) != expected:
            raise ValueError(
                f"DiT expected latents of shape (B, {', '.join(map(str, expected))}), got {tuple(x_t.shape)}. "
                f"The channels are in_channels={config.in_channels}; the positional table is built for "
                f"input_size={config.input_size}: build the model with the input_size of your latents."
            )
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.shape != x_t.shape[:1]:
            got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"DiT expected timesteps t as an int64 tensor of shape ({x_t.shape[0]},), got a {got}; "
                "timesteps are integers (docs/pitfalls.md, pitfall 13), "
                "e.g. torch.full((B,), t, dtype=torch.int64)."
            )
        self.check_angles(angles, x_t.shape[0])
        if labels is None:
            return
        if config.num_classes == 0:
            raise ValueError("this DiT is unconditional (num_classes = 0) but labels were given; pass labels=None.")
        if labels.dtype != torch.int64 or labels.shape != x_t.shape[:1]:
            raise ValueError(
                f"DiT expected labels as an int64 tensor of shape ({x_t.shape[0]},) with values in "
                f"0..{config.num_classes} ({config.num_classes} = null), "
                f"got a {labels.dtype} tensor of shape {tuple(labels.shape)}."
            )
        # The label table has rows 0..num_classes; any other index would fail deep inside the
        # embedding (an IndexError on CPU, a device-side assert on CUDA). On a GPU, `any()` waits
        # for the labels: one host sync per call, as the training loop's loss.item() already does.
        outside = (labels < 0) | (labels > config.num_classes)  # (B,)
        if outside.any():
            raise ValueError(
                f"DiT labels must lie in 0..{config.num_classes} (classes 0..{config.num_classes - 1}, "
                f"{config.num_classes} = null), got {sorted(set(labels[outside].tolist()))}."
            )

    def check_angles(self, angles: Optional[torch.Tensor], batch_size: int) -> None:
        if self.angle_embedder is None:
            if angles is not None:
                raise ValueError("this DiT was built without angle conditioning (DiTConfig.angle_conditioning=False) "
                                 "but angles were given; pass angles=None")
            return
        if angles is None:
            raise ValueError(f"this DiT is angle-conditioned: pass angles, a float tensor ({batch_size},) of radians "
                             "(ImageDiffusionModel.sample draws them from the training range)")
        if not isinstance(angles, torch.Tensor) or not angles.is_floating_point() or angles.shape != (batch_size,):
            got = f"{angles.dtype} tensor of shape {tuple(angles.shape)}" if isinstance(angles, torch.Tensor) \
                else type(angles).__name__
            raise ValueError(f"DiT expected angles as a float tensor of shape ({batch_size},) in radians, got a {got}")
        if not torch.isfinite(angles).all():  # one host sync, as the label check's
            raise ValueError(f"DiT angles must be finite numbers of radians, got {angles.tolist()}")

    # -- the pieces of forward, each reusable by the video layer -------------------------------

    def embed_patches(self, x: torch.Tensor, angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C, H, W) -> tokens (B, N, D), with the fixed 2-D positions added (in the frame of each
        example's angle for a model with ``angle_positions``)."""
        tokens = patchify(x, self.config.patch_size)  # (B, N, p·p·C)
        if self.config.angle_positions and angles is not None:
            return self.patch_embedding(tokens) + self.turned_positions(angles)  # (B, N, D)
        return self.patch_embedding(tokens) + self.position_embedding  # (B, N, D)

    def turned_positions(self, angles: torch.Tensor) -> torch.Tensor:
        """The sincos table (B, N, D) at every token's (row, column) seen from a frame turned by each angle
        about the grid's centre: the same sinusoids as `sincos_position_embedding_2d`, at real positions."""
        grid_height, grid_width = self.config.grid_size
        rows, columns = grid_rows_and_columns(grid_height, grid_width, angles.device)  # (N,), (N,)
        # (x, y) about the centre with y pointing up, turned by -angle, then back to (row, column).
        x, y = columns - (grid_width - 1) / 2, (grid_height - 1) / 2 - rows  # (N,)
        cos, sin = angles.float().cos()[:, None], angles.float().sin()[:, None]  # (B, 1)
        turned_x, turned_y = cos * x + sin * y, -sin * x + cos * y  # (B, N)
        return sincos_at((grid_height - 1) / 2 - turned_y, turned_x + (grid_width - 1) / 2, self.config.hidden_dim)

    def embed_condition(self, t: torch.Tensor, labels: Optional[torch.Tensor] = None,
                        angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """c = emb(t) + emb(label) [+ emb(angle)]: t (B, ...) int64 -> c (B, ..., D).

        labels: (B,) or None, meaning the null label (for a conditional model). With t of shape
        (B, F), e.g. one noise level per frame, each example's label is added to all its frames.
        angles: (B,) radians, for an angle-conditioned model only (DiTConfig.angle_conditioning).
        """
        c = self.hook_time_embed(self.timestep_embedder(t))  # (B, ..., D)
        per_example = [1] * (t.ndim - 1)  # (B, D) -> (B, 1, ..., D): one vector for all of an example's frames
        if self.angle_embedder is not None and angles is not None:
            angle = self.angle_embedder(angles)  # (B, D)
            c = c + angle.view(angle.shape[0], *per_example, angle.shape[-1])
        if self.config.num_classes == 0:
            return c
        if labels is None:
            labels = torch.full(t.shape[:1], self.null_label, dtype=torch.int64, device=t.device)  # (B,)
        label = self.embed_labels(labels)  # (B, D)
        return c + label.view(label.shape[0], *per_example, label.shape[-1])  # (B, ..., D)

    def embed_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """emb(label) (B, D): a row of the label table, or the sum of the label's part vectors."""
        if self.label_part_embedding is None:
            return self.label_embedding(labels)
        return self.label_part_embedding(self.label_part_rows[labels]).sum(dim=-2)  # (B, P, D) -> (B, D)

    def with_self_condition(self, x_t: torch.Tensor, previous_x0: Optional[torch.Tensor]) -> torch.Tensor:
        """x_t with the previous x_0 estimate beside it as extra channels, for a self-conditioned model.

        x_t, previous_x0: (B, C, H, W), or (B, F, C, H, W) for a video; previous_x0 None means
        "no estimate yet" and reads as zeros (the first sampling step, half the training batches).
        Returns x_t unchanged for a model without self-conditioning, else (B, [F,] 2C, H, W).
        """
        if not self.config.self_condition:
            if previous_x0 is not None:
                raise ValueError("this DiT was built without self-conditioning (DiTConfig.self_condition=False) "
                                 "but a previous x_0 estimate was passed; pass previous_x0=None")
            return x_t
        if previous_x0 is None:
            previous_x0 = torch.zeros_like(x_t)
        elif previous_x0.shape != x_t.shape:
            raise ValueError(f"the previous x_0 estimate must have x_t's shape {tuple(x_t.shape)}, "
                             f"got {tuple(previous_x0.shape)}")
        return torch.cat([x_t, previous_x0.to(x_t.dtype)], dim=-3)  # channels: dim 1 (image) or 2 (video)

    def trunk(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None,
              previous_x0: Optional[torch.Tensor] = None, angles: Optional[torch.Tensor] = None):
        """Everything before the output head: tokens (B, N, D) after the last block, and c (B, D).

        x_t: (B, C, H, W); t: (B,) int64; labels: (B,) int64 or None (= the null label);
        previous_x0: the previous x_0 estimate (B, C, H, W) for a self-conditioned model, or None;
        angles: (B,) radians for an angle-conditioned model, else None.
        """
        self.check_inputs(x_t, t, labels, angles)
        x = self.hook_patch_embed(self.embed_patches(self.with_self_condition(x_t, previous_x0), angles))  # (B, N, D)
        c = self.hook_condition(self.embed_condition(t, labels, angles))  # (B, D)
        rotary = self.position_rotary(x_t, x)  # None: positions are in the sincos table
        if self.config.condition_token:  # c also as a token every patch can attend to, dropped at the end
            x = torch.cat([self.condition_to_token(c)[:, None], x], dim=1)  # (B, 1 + N, D)
        for block in self.blocks:
            x = block(x, c, rotary)  # (B, N, D), or (B, 1 + N, D)
        if self.config.condition_token:
            x = x[:, 1:]  # (B, N, D)
        return x, c

    def position_rotary(self, x_t: torch.Tensor, tokens: torch.Tensor) -> Optional[Rotary]:
        """The `rotary(q, k)` hook every block gets; None here. The video DiT returns its 3-D RoPE."""
        return None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None):
        """The trunk on its own: ``(x (B, N, D), c (B, D))``, see `trunk`."""
        return self.trunk(x_t, t, labels)

    # -- interpretability -----------------------------------------------------------------------

    def record_attention(self, enabled: bool = True) -> None:
        """Switch every block to the explicit attention path, which keeps its pattern (or back to SDPA)."""
        for block in self.blocks:
            block.attention.record_attention = enabled
            block.attention.attention_pattern = None

    def attention_patterns(self) -> list[Optional[torch.Tensor]]:
        """The pattern (B, heads, N, N) each block kept in its last forward (None where not recorded)."""
        return [block.attention.attention_pattern for block in self.blocks]


class DiT(DiTTrunk):
    """The latent denoiser: ``model(x_t, t, labels=None, angles=None) -> output`` of x_t's shape (ε, x_0 or v).

    The trunk (`DiTTrunk`) followed by the FinalLayer, whose tokens are unpatchified into an image.
    """

    def __init__(self, config: Optional[DiTConfig] = None) -> None:
        super().__init__(config, initialize=False)
        config = self.config
        self.final_layer = FinalLayer(config.hidden_dim, config.patch_size, config.out_channels)
        name_hook_points(self)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Every initialisation in one place (DiT's `initialize_weights`): the trunk's
        (`DiTTrunk.initialize_weights`: Xavier Linears, normal embeddings, every adaLN modulation
        zero, so every block starts as the identity), then the final layer's: its modulation and its
        Linear zero, so the model outputs exactly 0.

        Why training still starts: the final Linear's gradient is (output error) ⊗ (features), and the
        features are not zero, so the first step moves it. Only then does any gradient flow further
        back (through the now non-zero final Linear), reaching first the gates and the final
        modulation, then the shifts and scales and everything beneath them. At the very first
        backward pass all parameters other than the final Linear have zero (not missing) gradients.
        """
        super().initialize_weights()  # Xavier reaches the final layer too; its zeros follow
        nn.init.zeros_(self.final_layer.adaln_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaln_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None,
                previous_x0: Optional[torch.Tensor] = None, angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t: (B, C, H, W); t: (B,) int64; labels: (B,) int64 or None (= the null label);
        previous_x0: the previous x_0 estimate (B, C, H, W), or None (see `with_self_condition`);
        angles: (B,) radians for an angle-conditioned model (DiTConfig.angle_conditioning), else None.

        Returns the prediction (B, C, H, W).
        """
        config = self.config
        x, c = self.trunk(x_t, t, labels, previous_x0, angles)  # (B, N, D), (B, D)
        x = self.final_layer(x, c)  # (B, N, p·p·C)
        return unpatchify(x, config.patch_size, config.height, config.width, config.out_channels)  # (B, C, H, W)


# ---------------------------------------------------------------------------------------------
#                                        Counting FLOPs
# ---------------------------------------------------------------------------------------------


def matmul_parameter_counts(config: DiTConfig) -> dict[str, int]:
    """Weights that take part in matrix products, split by how often they are applied.

    "per_token": applied to each of the N tokens — patch embedding, qkv, attention projection, MLP,
    final Linear.  "per_example": applied once to c — the time MLP and the adaLN modulations (if a
    caller passes per-token conditions (B, N, D), these too run once per token).  Biases, the label
    table and the positional table take no matmul and are not counted.
    """
    D, L, M, P = config.hidden_dim, config.depth, config.mlp_hidden_dim, config.patch_dim
    per_token = config.input_patch_dim * D + L * (3 * D * D + D * D + 2 * D * M) + D * P
    per_example = config.time_embedding_dim * D + D * D + L * 6 * D * D + 2 * D * D
    return {"per_token": per_token, "per_example": per_example}


def training_flops(config: DiTConfig, batch_size: int, frames: int = 1) -> int:
    """FLOPs of one training step (forward and backward) on a batch, counting matrix products only.

    frames: images per example, each of N tokens with its own condition (the video layer's frames):
    the tokens are then F · N, and the "per example" weights run F times.

    A weight matrix of size m x n applied to one vector costs 2mn FLOPs forward (a multiply and an add
    per weight) and 4mn backward (the gradient with respect to the input and to the weight), hence
    the familiar 6 · parameters · tokens (Kaplan et al. 2020):

        6 · B · (N · P_token + P_example)            P from `matmul_parameter_counts`

    Attention adds products that involve no weights. Per block and example, forward: Q Kᵀ is
    (N x d)(d x N) per head, 2 N² d FLOPs, over all heads 2 N² D; the weighted sum A V another 2 N² D;
    4 N² D in all. The backward pass needs two products for each of those (gradients of Q and K from
    dS, of A and V from dO): twice the forward, 8 N² D. Hence

        + 12 · B · depth · N² · D

    Element-wise work (softmax, LayerNorm, GELU, modulation) is left out, as is usual when a FLOP rate
    is compared with the matmul rate of the hardware.
    """
    counts = matmul_parameter_counts(config)
    N = frames * config.num_tokens
    weights = 6 * batch_size * (N * counts["per_token"] + frames * counts["per_example"])
    attention = 12 * batch_size * config.depth * N * N * config.hidden_dim
    return weights + attention
