"""The video DiT: imagediff's DiT over space *and* time, with one noise level per frame.

A window of F frames of latents is cut into patches frame by frame, and all F · h · w tokens go
through the same transformer blocks as the image DiT, attending to each other freely:

  x_t (B, F, C, H, W) ──patchify each frame──► (B, F·N, p·p·C), time-major: frame 0's N tokens, then frame 1's…
                       ──patch_embedding──► + 2-D sincos of (row, column) ──► x (B, F·N, D)    (none for time)

  t (B, F) ──timestep_embedding──► MLP ──► c (B, F, D)    one condition per frame (+ the label's, if any)

  x ──► DiTBlock(x, c, rotary) × depth ──► FinalLayer(x, c) ──► (B, F·N, p·p·C) ──unpatchify──► (B, F, C, H, W)

What makes it a *video* model, and what makes it a *diffusion-forcing* model:

1. Positions by rotation (3-D RoPE, Su et al. 2021). Every query and key is rotated by angles
   proportional to its token's (frame, row, column): the head dimension's d/2 frequency pairs are
   split three ways, one share per axis (`rope_split`). The score q·k then depends on positions only
   through their differences, so a window can start anywhere in a video: positions restart at 0 in
   every window of a rollout and the model cannot tell. Where a ball is in the *picture* matters
   too (the floor is at the bottom), so each frame also gets the image DiT's fixed 2-D table of
   absolute (row, column) positions; time gets none.
2. Each frame's own noise level. c has one row per frame; `DiTBlock` repeats each row's shift, scale
   and gate over that frame's N tokens (adaLN-Zero, per frame). Context frames are clean (level 0,
   `videodiff.sampling.CLEAN_LEVEL`), frames to generate are noisy, and nothing else tells them apart:
   there is **no attention mask**, every token sees every other one, in both directions of time.
   Training draws an independent level for every frame (Diffusion Forcing, Chen et al. 2024), so the
   same network predicts the future (clean past, noisy future), interpolates, or denoises a clip.
3. Optionally, an anchor frame (VideoDiTConfig.anchor_frame): one more clean frame in front of the window,
   a real frame from earlier in the video, marked by a learned vector added to its condition; and memory
   frames (VideoDiTConfig.memory_frames): clean frames from further back at a stride, each marked likewise.
   In front of the window they come in that order: [anchor] [memory, oldest first] [window].

Notation
    B batch, F frames in the window, C latent channels, H x W the latent, p the patch size,
    N = (H/p)(W/p) tokens per frame, D = hidden_dim, heads · d = D (d = head_dim).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
from einops import rearrange

from imagediff.dit import DIT_SIZES, DiT, DiTConfig, patchify, training_flops, unpatchify

# ---------------------------------------------------------------------------------------------
#                                         Configuration
# ---------------------------------------------------------------------------------------------


# The initial std of a video DiT's label table (DiTConfig.label_init_std): DiT's 0.02, not the image
# recipe's 1.0. A label is added to every frame's condition, beside the embedding of that frame's noise
# level, the only thing that tells context frames from the frames being made. Rows of std 1.0 (norm
# about 11 at width 128) start some 35 times larger than that embedding (norm about 0.3), which in a
# 7000-step run grew to norms of 60-85 to be read past them; from 0.02 the table grows to what it needs
# (rows of norm 0.4 beside time embeddings of 1-3.4). Scene-labelled runs, position error over the first 8
# generated frames of 96 held-out videos: 1.56 / 1.51 px against 1.84 / 1.91 with 1.0 on two training seeds,
# though a third seed read 1.84 px with 0.02 (docs/video_rollouts.md, "The label table's scale" and "Scene
# labels through the bench").
VIDEO_LABEL_INIT_STD = 0.02


@dataclass
class VideoDiTConfig(DiTConfig):
    """The image DiT's configuration plus what time adds. Saved in checkpoints as plain types."""

    # The training window: clips of this many frames. Any window of 1.. frames can be fed (RoPE has
    # no table to run out of), but the model only learns the spans it was trained on.
    num_frames: int = 8
    # RoPE's base θ: axis pair i turns by position · θ^(-i / pairs of that axis). 10 000 as in RoFormer;
    # positions here are below 64, so only the first few pairs of each axis turn much.
    rope_base: float = 10_000.0
    # Also add the image DiT's fixed 2-D sincos table to every frame (see VideoDiT.build_position_embedding).
    spatial_table: bool = True
    label_init_std: float = VIDEO_LABEL_INIT_STD  # the image DiT's field, another default (above)
    # An anchor frame: every window the model sees is one frame longer, its frame 0 a clean real frame from
    # earlier in the video (training: any frame up to the window's clean history; a rollout: the last real
    # context frame, kept in every window), marked by a learned vector added to that frame's condition.
    # Within a window a rollout's history is the model's own frames; the anchor is the one frame it did not
    # make, there to carry what the scene holds (how many balls, which colours) across windows.
    # VideoDiffusionModel.rollout passes it; videodiff.sampling.anchored puts it in front of each window.
    # Off by default. Measured on three training seeds of the recipe (docs/video_rollouts.md, "An anchor
    # frame: one real frame in every window"): 64-frame rollouts of 32 held-out videos kept 0.160 / 0.195 /
    # 0.161 of their frames intact against 0.238 / 0.152 / 0.116 (means 0.172 and 0.169), the first window's
    # error 1.46 / 1.34 / 1.39 px against 1.38 / 1.46 / 1.58; the model reads the anchor's colours, yet balls
    # go missing as often; the training step costs 16% more.
    anchor_frame: bool = False
    # Memory frames: M more clean frames in front of the window (after the anchor, if any), the frames
    # memory_stride·M, ..., memory_stride·1 before the window's first frame (the video's first frame where
    # that lies before the video's start), each marked by its own learned vector. A rollout takes them from
    # the video so far, the model's own frames included (videodiff.sampling.rollout): they reach further back
    # than the history, the frames that still showed what the history may have lost, and where it was.
    # Off by default (0). Measured with 2 frames 4 apart on two training seeds (docs/video_rollouts.md, "Reaching
    # further back"): the first window's error 1.49 / 1.37 px against the recipe's 1.58 / 1.46, 64-frame rollouts
    # of 32 held-out videos 0.166 / 0.137 intact against 0.116 / 0.152, at about the recipe's training time.
    memory_frames: int = 0
    memory_stride: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.angle_conditioning or self.label_parts is not None or self.condition_token:
            raise ValueError("VideoDiTConfig: angle_conditioning, label_parts and condition_token are the image DiT's "
                             "options; a video DiT reads none of them")
        if self.num_frames < 1:
            raise ValueError(f"VideoDiTConfig.num_frames must be >= 1, got {self.num_frames}.")
        if self.head_dim % 2 or self.head_dim // 2 < 3:
            raise ValueError(
                f"VideoDiTConfig: 3-D RoPE rotates pairs of the head dimension, at least one pair per axis, so "
                f"head_dim = hidden_dim / num_heads must be even and >= 6; got {self.hidden_dim} / "
                f"{self.num_heads} = {self.hidden_dim / self.num_heads:g}."
            )
        if self.rope_base <= 1:
            raise ValueError(f"VideoDiTConfig.rope_base must be > 1, got {self.rope_base}.")
        for name in ("memory_frames", "memory_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "memory_frames" else 1):
                raise ValueError(f"VideoDiTConfig.{name} must be an integer >= {0 if name == 'memory_frames' else 1}, "
                                 f"got {value!r}.")

    @property
    def leading_frames(self) -> int:
        """The clean frames in front of the window: the anchor if there is one, then the memory frames."""
        return int(self.anchor_frame) + self.memory_frames

    @property
    def input_frames(self) -> int:
        """The frames of one training input: the window, and the anchor and memory frames in front of it."""
        return self.num_frames + self.leading_frames

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.num_heads

    @property
    def tokens_per_frame(self) -> int:
        return self.num_tokens


# The image DiT's registry, as video models: "tiny" is the CPU lessons' model; "small" and "base"
# are DiT-S and DiT-B, GPU sizes (DFoT's models are of these widths).
VIDEO_DIT_SIZES = ("tiny", "mini", "small", "base", "large", "xlarge")


def video_dit_config(size: str = "tiny", **overrides) -> VideoDiTConfig:
    """The VideoDiTConfig of a registered size (label table std VIDEO_LABEL_INIT_STD), with any field
    replaced by ``overrides``."""
    if size not in VIDEO_DIT_SIZES:
        raise ValueError(f"Unknown video DiT size {size!r}; the registered sizes are {list(VIDEO_DIT_SIZES)}.")
    return VideoDiTConfig(**{**asdict(DIT_SIZES[size]), "label_init_std": VIDEO_LABEL_INIT_STD, **overrides})


def widened(size: str, width: int) -> dict:
    """The overrides that make a registered size ``width`` wide, its heads keeping the size's head dimension:
    ``video_dit_config("tiny", **widened("tiny", 256))`` has 8 heads of 32 (tiny: 4 of 32)."""
    head_dim = video_dit_config(size).head_dim
    if isinstance(width, bool) or not isinstance(width, int) or width <= 0 or width % head_dim:
        raise ValueError(f"a width of {width!r} for size {size!r}: its heads are {head_dim} wide, so the width "
                         f"must be a positive multiple of {head_dim}")
    return {"hidden_dim": width, "num_heads": width // head_dim}


def make_video_dit(size: str = "tiny", **overrides) -> "VideoDiT":
    """A freshly initialised video DiT, e.g. ``make_video_dit("tiny", num_frames=8)``."""
    return VideoDiT(video_dit_config(size, **overrides))


# ---------------------------------------------------------------------------------------------
#                                   3-D rotary position embedding
# ---------------------------------------------------------------------------------------------


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """How many of the head dimension's d/2 frequency pairs go to (frame, row, column).

    Rows and columns get the same share, a third each rounded down; time gets the rest (the most
    when d/2 is not a multiple of 3). d = 32: 16 pairs -> (6, 5, 5). The three always sum to d/2.
    """
    pairs = head_dim // 2
    spatial = pairs // 3
    return pairs - 2 * spatial, spatial, spatial


def rope_angles(frames: int, height: int, width: int, head_dim: int, base: float = 10_000.0) -> torch.Tensor:
    """The rotation angle of every (token, pair), float32 (frames · height · width, head_dim / 2).

    Tokens are time-major (frame, then row, then column), as `VideoDiT` lays them out. Pair i of an
    axis with P pairs turns by position · base^(-i / P): the first pair one radian per step, the
    last ones slowly. Positions count from 0 in every call: a window's first frame is frame 0.
    """
    pairs_t, pairs_h, pairs_w = rope_split(head_dim)
    frame, row, column = torch.meshgrid(
        torch.arange(frames), torch.arange(height), torch.arange(width), indexing="ij"
    )  # each (F, h, w)
    angles = []
    for position, pairs in ((frame, pairs_t), (row, pairs_h), (column, pairs_w)):
        frequencies = base ** (-torch.arange(pairs, dtype=torch.float64) / pairs)  # (P,)
        angles.append(position.reshape(-1, 1).double() * frequencies)  # (F·h·w, P)
    return torch.cat(angles, dim=-1).float()  # (F·h·w, d/2)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i + d/2}) of the last dimension by its angle.

    x: (B, heads, N, d); cos, sin: (N, d/2). Pair i holds the features i and i + d/2 (the "rotate half"
    layout of GPT-NeoX, the same rotation as adjacent pairs with the features permuted, and cheaper).
    """
    first, second = x.chunk(2, dim=-1)  # (B, heads, N, d/2) each
    return torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)  # (B, heads, N, d)


class Rotary3D:
    """The `rotary(q, k) -> (q, k)` hook of `imagediff.dit.SelfAttention` for one window's token grid."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        """cos, sin: (N, d/2), of every token's rotation angles (`rope_angles`)."""
        self.cos, self.sin = cos, sin

    def __call__(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos.to(q.dtype), self.sin.to(q.dtype)  # bf16 under autocast
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


# ---------------------------------------------------------------------------------------------
#                                            The model
# ---------------------------------------------------------------------------------------------


class VideoDiT(DiT):
    """The video denoiser: ``model(x_t, t, labels=None) -> prediction`` of x_t's shape.

    x_t: (B, F, C, H, W) latents of a window of F frames; t: (B, F) int64, every frame's own noise
    level in 0..T-1 (a clean context frame: level 0 and its clean latent); labels: (B,) or None.
    Everything that is not about time — patches, blocks, final layer, initialisation, the label
    table and the null label of guidance — is the image DiT's, inherited.
    """

    config: VideoDiTConfig

    def __init__(self, config: Optional[VideoDiTConfig] = None) -> None:
        config = config if config is not None else VideoDiTConfig()
        if not isinstance(config, VideoDiTConfig):
            raise TypeError(f"VideoDiT needs a VideoDiTConfig, got {type(config).__name__}; "
                            "build one with videodiff.dit.video_dit_config(size, ...).")
        super().__init__(config)
        # The anchor's mark (VideoDiTConfig.anchor_frame), added to frame 0's condition; drawn like the
        # label table, after every other weight, so that a model without an anchor draws the same weights.
        self.anchor_embedding = None
        if config.anchor_frame:
            self.anchor_embedding = torch.nn.Parameter(torch.randn(config.hidden_dim) * config.label_init_std)
        # The memory frames' marks (VideoDiTConfig.memory_frames), one per slot, drawn after the anchor's.
        self.memory_embedding = None
        if config.memory_frames:
            self.memory_embedding = torch.nn.Parameter(
                torch.randn(config.memory_frames, config.hidden_dim) * config.label_init_std)
        # The RoPE table of the training window, (input_frames · N, d/2): a shorter window's tokens are its
        # first rows, since positions restart at 0 in every window and tokens are time-major. Buffers move
        # with the model and are not saved (they follow from the config). Kept here rather than built on
        # the first call: a cache filled inside a compiled forward makes torch.compile compile it twice.
        angles = self.window_angles(config.input_frames)  # (input_frames · N, d/2)
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def window_angles(self, frames: int) -> torch.Tensor:
        """`rope_angles` of a window of ``frames`` frames on this model's grid, (frames · N, d/2)."""
        grid_height, grid_width = self.config.grid_size
        return rope_angles(frames, grid_height, grid_width, self.config.head_dim, self.config.rope_base)

    def build_position_embedding(self) -> Optional[torch.Tensor]:
        """The image DiT's 2-D sincos table (1, N, D), added to every frame alike — or None.

        RoPE tells a token only where others are *relative* to it, and a transformer has no padding
        that marks the image's border. Balls bounce off the walls and the floor, at fixed *absolute*
        positions, so by default each frame's tokens also get the fixed table of their (row, column).
        Time gets no table: a window's frames must look the same wherever the window starts.
        """
        return super().build_position_embedding() if self.config.spatial_table else None

    def embed_patches(self, x: torch.Tensor, angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, F, C, H, W) -> tokens (B, F·N, D), time-major, with the spatial table if there is one
        (``angles``: the image DiT's angle conditioning; a video DiT is built without it)."""
        frames = x.shape[1]
        tokens = patchify(rearrange(x, "b f c h w -> (b f) c h w"), self.config.patch_size)  # (B·F, N, p·p·C)
        tokens = self.patch_embedding(tokens)  # (B·F, N, D)
        if self.position_embedding is not None:
            tokens = tokens + self.position_embedding  # (1, N, D): the same row/column table in every frame
        return rearrange(tokens, "(b f) n d -> b (f n) d", f=frames)  # (B, F·N, D)

    def rotary(self, frames: int, device, dtype) -> Rotary3D:
        """The RoPE hook for a window of ``frames`` frames: the first rows of the window's table, or a
        table computed for this call when the window is longer than the one the model was built for."""
        if frames <= self.config.input_frames:
            tokens = frames * self.config.tokens_per_frame
            cos, sin = self.rope_cos[:tokens], self.rope_sin[:tokens]  # (F · N, d/2) each
        else:
            angles = self.window_angles(frames)  # (F · N, d/2), on the CPU like the buffers it extends
            cos, sin = angles.cos(), angles.sin()
        return Rotary3D(cos.to(device, dtype), sin.to(device, dtype))

    def check_inputs(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor],
                     angles: Optional[torch.Tensor] = None) -> None:
        config = self.config
        expected = (config.in_channels, config.height, config.width)
        if x_t.ndim != 5 or tuple(x_t.shape[2:]) != expected or x_t.shape[1] < 1:
            raise ValueError(
                f"VideoDiT expected latents of shape (B, F, {', '.join(map(str, expected))}) — a batch of "
                f"windows of F frames — got {tuple(x_t.shape)}."
            )
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.shape != x_t.shape[:2]:
            got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"VideoDiT expected noise levels t as an int64 tensor of shape {tuple(x_t.shape[:2])} "
                f"(one per frame), got a {got}."
            )
        if config.leading_frames and x_t.shape[1] <= config.leading_frames:
            leading = " and ".join(["an anchor frame"] * config.anchor_frame
                                   + [f"{config.memory_frames} memory frames"] * bool(config.memory_frames))
            raise ValueError(f"this VideoDiT takes {leading} in front of every window (anchor_frame="
                             f"{config.anchor_frame}, memory_frames={config.memory_frames}): expected more than "
                             f"{config.leading_frames} frames, those and then the window, got {x_t.shape[1]}")
        # Labels (and angles): the image DiT's checks, on the batch dimension.
        super().check_inputs(x_t[:, 0], t[:, 0], labels, angles)

    def embed_condition(self, t: torch.Tensor, labels: Optional[torch.Tensor] = None,
                        angles: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The image DiT's c (B, F, D), with the anchor's mark added to frame 0 for an anchored model, and
        each memory slot's to its frame after it."""
        c = super().embed_condition(t, labels, angles)  # (B, F, D)
        marks = [mark[None] for mark in (self.anchor_embedding,) if mark is not None]  # (1, D) each
        if self.memory_embedding is not None:
            marks.append(self.memory_embedding)  # (M, D)
        if not marks:
            return c
        marks = torch.cat(marks)  # (leading, D)
        return torch.cat([c[:, :len(marks)] + marks, c[:, len(marks):]], dim=1)  # (B, F, D)

    def position_rotary(self, x_t: torch.Tensor, tokens: torch.Tensor) -> Rotary3D:
        """Every block's `rotary(q, k)`: 3-D RoPE over this window's (frame, row, column) grid.

        The image DiT's trunk does the rest: tokens (B, F·N, D), the per-frame condition c (B, F, D),
        each block repeating a frame's modulation over that frame's N tokens.
        """
        return self.rotary(x_t.shape[1], tokens.device, tokens.dtype)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None,
                previous_x0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t: (B, F, C, H, W); t: (B, F) int64; labels: (B,) or None; previous_x0: the previous x_0
        estimate (B, F, C, H, W) of a self-conditioned model, or None. Returns (B, F, C, H, W)."""
        config = self.config
        frames = x_t.shape[1]
        x, c = self.trunk(x_t, t, labels, previous_x0)  # (B, F·N, D), (B, F, D)
        x = self.final_layer(x, c)  # (B, F·N, p·p·C)
        x = rearrange(x, "b (f n) e -> (b f) n e", f=frames)  # (B·F, N, p·p·C)
        out = unpatchify(x, config.patch_size, config.height, config.width, config.out_channels)  # (B·F, C, H, W)
        return rearrange(out, "(b f) c h w -> b f c h w", f=frames)  # (B, F, C, H, W)


def require_plain_windows(model, tool: str) -> None:
    """Refuse, with one clear error, a model with an anchor frame or memory frames (VideoDiTConfig.anchor_frame,
    memory_frames) in a tool that feeds the model plain windows (the interpretability tools): it would read the
    window's first frames as those."""
    config = getattr(model, "config", None)
    if getattr(config, "anchor_frame", False):
        raise ValueError(f"{tool} feeds the video DiT plain windows, but this model takes an anchor frame in front "
                         f"of each (VideoDiTConfig.anchor_frame=True); the tool does not support anchored models")
    if getattr(config, "memory_frames", 0):
        raise ValueError(f"{tool} feeds the video DiT plain windows, but this model takes {config.memory_frames} "
                         f"memory frames in front of each (VideoDiTConfig.memory_frames); the tool does not support "
                         f"models with memory frames")


def video_training_flops(config: VideoDiTConfig, batch_size: int, frames: Optional[int] = None) -> int:
    """FLOPs of one training step on clips of ``frames`` frames (default: the training input, the window and
    its anchor and memory frames if any), matrix products only: `imagediff.dit.training_flops` with F frames of N tokens, the
    modulation Linears and the time MLP running once per frame."""
    return training_flops(config, batch_size, frames or config.input_frames)
