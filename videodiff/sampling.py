"""Sampling a video with diffusion forcing: one noise level per frame, a schedule of them, and history.

A video model trained with diffusion forcing (Chen et al. 2024) denoises a window of frames (B, F, C, H, W)
in which every frame carries its own timestep, a (B, F) tensor. The frames are told apart only by that
noise level, so one network serves every way of sampling:

- a **clean** frame (context, "history") is shown at ``t = CLEAN_LEVEL = 0`` with its clean latent;
- a **fully noised** frame is shown at ``t = T - 1`` with pure noise: the model learns nothing from it;
- a frame in between is being generated.

This module has four parts, one idea each:

1. **Scheduling matrices** (Diffusion Forcing's sampling schedules): a (rows, F) table of noise-level
   *indices* that says, for every sampling row, how noisy each frame is. Index ``num_steps`` is fully noised, index 0
   is clean. "full_sequence" steps all frames down together; "pyramid" lets frame f lag frame f - 1 by
   one step, so earlier frames are always cleaner; "autoregressive" starts frame f only once frame f - 1
   is clean. :func:`timesteps_from_indices` turns indices into timesteps on toydiff's ladder.
2. **One window** (:func:`sample_window`): walk the rows of the matrix; at each row the frames whose level
   drops take one toydiff ``ddim_step`` with per-frame timesteps; the others are left as they are.
3. **History guidance** (Song et al. 2025, "History-Guided Video Diffusion", the DFoT paper):
   classifier-free guidance where the condition is the history itself, dropped by noising it
   (:class:`HistoryGuidance`, :func:`history_guided_prediction`).
4. **Rollout** (:func:`rollout`): a video longer than the training window, one sliding window at a time,
   the last frames generated becoming the history of the next window. For a model with an anchor frame
   (VideoDiTConfig.anchor_frame), :func:`anchored` puts one clean real frame in front of every window;
   for a model with memory frames (VideoDiTConfig.memory_frames) each window also gets frames of the video
   so far from further back (:func:`memory_indices`), by :func:`in_front`.

Notation
--------
- ``T``: training timesteps 0 … T-1;  ``t = -1``: clean, ᾱ = 1 (toydiff's convention for the end of sampling).
- ``N = num_steps``: sampling steps per frame; matrix indices 0 (clean) … N (fully noised).
- ``B`` batch, ``F`` frames in the window, ``C, H, W`` one frame's latent.
- "history" / "context": frames that are known and stay clean. The user's real frames are *context*;
  frames the model made and that are fed back are *generated history*.

The three invariants of a schedule (docs/pitfalls.md, pitfall 15) are checked by
:func:`check_timestep_matrix` before any sampling: no frame's level ever rises from one row to the next, every
frame ends clean, and context frames are clean in every row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch

from toydiff.guidance import combine_guidance
from toydiff.parameterisation import check_prediction_type
from toydiff.samplers import SAMPLERS, ddim_step, sampling_timesteps
from toydiff.schedules import NoiseSchedule

CLEAN_LEVEL = 0  # the timestep at which the model is shown a clean (context) frame, with its clean latent

SCHEDULING_KINDS = ("full_sequence", "pyramid", "autoregressive")
GUIDANCE_MODES = ("none", "vanilla", "fractional", "temporal")

# denoiser(x_t (B, F, C, H, W), t (B, F) int64) -> prediction (B, F, C, H, W)
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Context = Union[int, torch.Tensor]  # a number of leading context frames, or a bool mask (F,)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def context_mask(context: Context, num_frames: int) -> torch.Tensor:
    """The context given as a count of leading frames or as a bool mask, always returned as a bool mask (F,)."""
    if isinstance(context, torch.Tensor):
        if context.dtype != torch.bool or tuple(context.shape) != (num_frames,):
            raise ValueError(f"a context mask must be a bool tensor of shape ({num_frames},), one entry per frame; "
                             f"got a {context.dtype} tensor of shape {tuple(context.shape)}")
        return context.cpu()
    if not _is_int(context) or not 0 <= context <= num_frames:
        raise ValueError(f"context must be a number of leading clean frames in 0..{num_frames} or a bool mask "
                         f"({num_frames},), got {context!r}")
    return torch.arange(num_frames) < context


# ----------------------------------------------------------------------------------------------
# 1. Scheduling matrices
# ----------------------------------------------------------------------------------------------

def scheduling_matrix(kind: str, num_frames: int, num_steps: int, context: Context = 0) -> torch.Tensor:
    """The noise-level indices of every frame at every sampling row (Diffusion Forcing's matrices).

    Index ``num_steps`` (N) is fully noised, index 0 is clean. The g-th frame to generate (context
    frames skipped) sits at

        level[m, g] = clamp(N + g · lag - m, 0, N),     lag = 0 (full_sequence), 1 (pyramid), N (autoregressive)

    so the first row has every generated frame at N, each frame then drops one index per row for N
    rows, and the last row is all clean. Context frames are 0 (clean) in every row.
    With lag = N frame g starts exactly at the row where frame g - 1 becomes clean.

    Returns an int64 tensor (rows, num_frames), rows = N + (G - 1) · lag + 1 for G generated frames.
    Plot it with ``plt.imshow(matrix.T)`` to see the shape the name describes.
    """
    if kind not in SCHEDULING_KINDS:
        raise ValueError(f"unknown scheduling matrix {kind!r}; expected one of {', '.join(SCHEDULING_KINDS)}")
    for name, value in (("num_frames", num_frames), ("num_steps", num_steps)):
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    is_context = context_mask(context, num_frames)                      # (F,)
    num_generated = int((~is_context).sum())
    if num_generated == 0:
        raise ValueError(f"every one of the {num_frames} frames is context: there is nothing to generate")
    lag = {"full_sequence": 0, "pyramid": 1, "autoregressive": num_steps}[kind]
    rows = num_steps + (num_generated - 1) * lag + 1
    m = torch.arange(rows).view(-1, 1)                                   # (rows, 1)
    g = torch.arange(num_generated).view(1, -1)                          # (1, G)
    generated_levels = (num_steps + g * lag - m).clamp(0, num_steps)     # (rows, G)
    matrix = torch.zeros(rows, num_frames, dtype=torch.int64)            # context columns stay 0: clean
    matrix[:, ~is_context] = generated_levels
    return matrix


def timesteps_from_indices(indices: torch.Tensor, num_train_timesteps: int, num_steps: int,
                           spacing: str = "trailing") -> torch.Tensor:
    """Turn noise-level indices (0 … N) into timesteps on toydiff's sampling ladder.

    The ladder is ``sampling_timesteps(T, N, spacing)`` read from its clean end: index k ≥ 1 is its k-th
    timestep counted from the clean end (index N is its first, noisiest entry, T - 1 for "trailing"),
    and index 0 is t = -1 (clean, ᾱ = 1), where the last DDIM step lands. Written as one lookup table,
    so the clean end is an ordinary entry and not a special case.
    indices: int64, any shape.  Returns int64 timesteps of the same shape, in -1 … T-1.
    """
    ladder = sampling_timesteps(num_train_timesteps, num_steps, spacing)    # descending, length N
    if len(ladder) != num_steps:
        raise ValueError(f"spacing {spacing!r} gives only {len(ladder)} distinct timesteps for {num_steps} steps "
                         f"of a {num_train_timesteps}-step schedule; use fewer steps or another spacing")
    table = torch.tensor([-1] + ladder[::-1], dtype=torch.int64)            # (N + 1,): table[k] is index k
    if indices.is_floating_point() or indices.numel() and (int(indices.min()) < 0 or int(indices.max()) > num_steps):
        raise ValueError(f"noise-level indices must be integers in 0..{num_steps} (0 = clean, {num_steps} = fully "
                         f"noised), got {indices.dtype} values from {indices.min().item()} to {indices.max().item()}")
    return table[indices.cpu()]


def check_timestep_matrix(timesteps: torch.Tensor, context: Context, schedule: NoiseSchedule) -> None:
    """Refuse a (rows, F) matrix of timesteps (-1 = clean) that breaks pitfall 15's invariants.

    A level that rises from one row to the next would undo denoising already done; a frame not clean in
    the last row would be returned noisy; a context frame that is not clean in every row would be
    shown to the model noised (and overwritten by the sampler).
    """
    if timesteps.ndim != 2 or timesteps.shape[0] < 1 or timesteps.is_floating_point():
        raise ValueError(f"the schedule must be an int64 matrix (rows, frames) of timesteps, got a {timesteps.dtype} "
                         f"tensor of shape {tuple(timesteps.shape)}")
    timesteps = timesteps.cpu()
    schedule.check_timesteps(timesteps)
    is_context = context_mask(context, timesteps.shape[1])
    rises = (timesteps[1:] > timesteps[:-1]).nonzero()
    if len(rises):
        row, frame = (int(i) for i in rises[0])
        raise ValueError(f"frame {frame}'s noise level rises from t = {int(timesteps[row, frame])} at row {row} to "
                         f"t = {int(timesteps[row + 1, frame])} at row {row + 1}: along the rows a level may only "
                         f"stay or fall (docs/pitfalls.md, pitfall 15)")
    not_clean = (timesteps[-1] != -1).nonzero().flatten().tolist()
    if not_clean:
        raise ValueError(f"frames {not_clean} are not clean (t = -1) in the last row: every frame must end clean")
    noisy_context = (is_context & (timesteps != -1).any(dim=0)).nonzero().flatten().tolist()
    if noisy_context:
        raise ValueError(f"context frames {noisy_context} are not clean (t = -1) in every row; build the matrix with "
                         f"scheduling_matrix(..., context=...) so that context stays clean")


# ----------------------------------------------------------------------------------------------
# 2. One window
# ----------------------------------------------------------------------------------------------

SAMPLER_ETAS = {"ddim": 0.0, "ddpm": 1.0}  # the default η of each sampler
WindowCallback = Optional[Callable[[int, torch.Tensor, torch.Tensor], None]]


@torch.no_grad()
def sample_window(denoiser: Denoiser, x: torch.Tensor, context: Context, schedule: NoiseSchedule,
                  timestep_matrix: torch.Tensor, *, prediction_type: str = "epsilon", sampler: str = "ddim",
                  eta: Optional[float] = None, guidance: Optional[HistoryGuidance] = None,
                  generated_context: Optional[torch.Tensor] = None, stabilization_level: int = CLEAN_LEVEL,
                  generator: Optional[torch.Generator] = None, callback: WindowCallback = None) -> torch.Tensor:
    """Denoise one window of frames by walking the rows of a schedule, one toydiff step per row.

    x: (B, F, C, H, W), context frames holding their clean latents, the others the starting noise (for a
        matrix whose first row is fully noised, x_T ~ N(0, I)).
    context: the number of leading context frames, or a bool mask (F,).
    timestep_matrix: (rows, F) int64 timesteps, -1 = clean (``timesteps_from_indices(scheduling_matrix(...))``);
        checked against pitfall 15 before anything runs.
    sampler: "ddim" (η = ``eta``, default 0) or "ddpm". "ddpm" is ``ddim_step`` with η = 1: over consecutive
        timesteps that is exactly DDPM's ancestral step with the posterior variance β̃_t, and across the
        larger jumps of a shorter ladder (t = 99 -> clean, say) it is the forward process's own posterior
        q(x_prev | x_t, x̂_0), which toydiff's ``ddpm_step`` (t -> t - 1 only) cannot take.
    guidance: history guidance (:class:`HistoryGuidance`); None is the conditional model.
    generated_context, stabilization_level: context frames (bool mask (F,)) that the model generated in an
        earlier window are shown re-noised to ``stabilization_level`` (DFoT's stabilised history), and so
        are frames of this window from the row they become clean; real context is always shown clean.
    callback(row, t_row (F,), x): called after each row, e.g. to record a trajectory.

    At each row transition, frames whose level falls take one step from t to t_prev, all at once with (B, F)
    timesteps; frames whose level stays are left bit for bit; the denoiser sees the whole window once per row
    (one batched call, guidance branches included). Frames already clean are shown at CLEAN_LEVEL and count as
    history for guidance. Context frames are re-set to their clean values after every row.
    Returns the window (B, F, C, H, W), every frame clean.
    """
    check_prediction_type(prediction_type, schedule)
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if sampler == "ddpm" and eta is not None and float(eta) != 1.0:
        raise ValueError(f"sampler 'ddpm' is DDIM with eta = 1; got eta={eta!r}: use sampler='ddim' for other values")
    eta = SAMPLER_ETAS[sampler] if eta is None else float(eta)
    if x.ndim < 3:
        raise ValueError(f"x must be a window of frames (B, F, C, H, W), got shape {tuple(x.shape)}")
    batch, num_frames = x.shape[:2]
    if timestep_matrix.ndim != 2 or timestep_matrix.shape[1] != num_frames:
        raise ValueError(f"the timestep matrix has shape {tuple(timestep_matrix.shape)} but the window has "
                         f"{num_frames} frames: expected (rows, {num_frames})")
    is_context = context_mask(context, num_frames)                                  # (F,)
    check_timestep_matrix(timestep_matrix, is_context, schedule)
    generated = torch.zeros(num_frames, dtype=torch.bool) if generated_context is None else generated_context.cpu()
    if generated.dtype != torch.bool or tuple(generated.shape) != (num_frames,) or (generated & ~is_context).any():
        raise ValueError(f"generated_context must be a bool mask ({num_frames},) marking context frames only, "
                         f"got {generated_context!r}")
    if not _is_int(stabilization_level) or not 0 <= stabilization_level < schedule.num_timesteps:
        raise ValueError(f"stabilization_level must be a timestep in 0..{schedule.num_timesteps - 1} "
                         f"(0 = generated history used clean), got {stabilization_level!r}")

    timestep_matrix = timestep_matrix.to(torch.int64).cpu()
    clean_context = x[:, is_context].clone()                                        # (B, K, C, H, W)
    # One noise for the history of this whole window: every row and every guidance branch sees the same
    # noised history, as if it had been noised once. Drawn even when history is only ever shown clean, so
    # that the generator's stream (hence every later draw) is the same with and without guidance or
    # stabilisation: rollouts that differ only in those are compared on the same sampling noise.
    history_noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    for row in range(timestep_matrix.shape[0] - 1):
        t_now, t_next = timestep_matrix[row], timestep_matrix[row + 1]              # (F,) each
        moving = t_next < t_now                                                     # (F,) frames stepping this row
        if not moving.any():
            continue
        # History: context, and frames of this window already clean (they now condition the others).
        history = is_context | (t_now == -1)                                        # (F,)
        stabilised = generated | (history & ~is_context)                            # (F,) generated history
        history_levels = torch.where(stabilised, stabilization_level, CLEAN_LEVEL)  # (F,)
        t_model = t_now.clamp_min(CLEAN_LEVEL).to(x.device).expand(batch, -1)       # (B, F)
        prediction = history_guided_prediction(denoiser, x, t_model, history, schedule, guidance,
                                               history_levels=history_levels, history_noise=history_noise)
        # One DDIM step for the moving frames only, each from its own t to its own t_prev.
        step_from = t_now[moving].to(x.device).expand(batch, -1)                    # (B, M)
        step_to = t_next[moving].to(x.device).expand(batch, -1)                     # (B, M)
        stepped = ddim_step(schedule, prediction[:, moving], step_from, step_to, x[:, moving], eta=eta,
                            prediction_type=prediction_type, generator=generator)    # (B, M, C, H, W)
        x = x.clone()
        x[:, moving] = stepped
        x[:, is_context] = clean_context                                            # context stays clean, bit for bit
        if callback is not None:
            callback(row + 1, t_next, x)
    return x


# ----------------------------------------------------------------------------------------------
# 3. History guidance
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HistoryGuidance:
    """Classifier-free guidance whose condition is the history, dropped by noising it (DFoT's history guidance).

    Every mode is built from *branches*: the same window shown to the denoiser with its history frames
    at different noise levels. With ``p(·)`` the model's prediction and s = ``scale``:

    - "none":       p(history as given)                                                   1 branch
    - "vanilla":    u + s (c - u)          c: history as given, u: history fully noised       2 branches
    - "fractional": c + (s - 1) (f - u)    f: history noised to ``fractional_level`` k_H       3 branches
                    (the guidance term sees only the coarse, low-frequency part of the history that survives
                    noising to k_H; the DFoT paper finds this keeps the motion that strong vanilla guidance
                    suppresses). The k_H branch enters the guidance term next to u; it does not replace u
                    in vanilla guidance, which would be c + (s - 1)(c - f), another method.
    - "temporal":   u + s Σ_i ŵ_i (c_i - u)  c_i: only the last ``temporal_windows[i]`` history frames as
                    given, the others fully noised; ŵ = ``temporal_weights`` / their sum   1 + n branches.
                    Equivalently u + Σ_i w_i (c_i - u) with weights w_i = s ŵ_i summing to the scale; one
                    window holding all history (None) is vanilla guidance, to the bit.

    "History as given" is clean, or noised to the stabilisation level for generated history. "Fully
    noised" means pure noise at t = T - 1. Scale 1 is the conditional model itself (vanilla, fractional,
    and temporal with a single all-history window), computed with one branch only.
    All branches go through the denoiser as one batch, so a row costs one call.
    """

    mode: str = "none"
    scale: float = 1.0
    fractional_level: Optional[int] = None           # k_H, a timestep in 0..T-1 ("fractional" only)
    temporal_windows: tuple = ()                     # e.g. (None, 2): all history, and the last 2 frames
    temporal_weights: tuple = ()                     # relative weights, one per window, each > 0

    def __post_init__(self):
        if self.mode not in GUIDANCE_MODES:
            raise ValueError(f"unknown history guidance mode {self.mode!r}; "
                             f"expected one of {', '.join(GUIDANCE_MODES)}")
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
            raise ValueError(f"the guidance scale must be a finite number >= 0 (1 = the conditional model), "
                             f"got {scale!r}")
        if self.mode == "none" and scale != 1.0:
            raise ValueError(f"mode 'none' is the conditional model and has no scale, got scale={scale!r}; "
                             f"choose one of 'vanilla', 'fractional', 'temporal' to guide")
        if self.mode == "fractional":
            if not _is_int(self.fractional_level) or self.fractional_level < 0:
                raise ValueError(f"fractional guidance needs fractional_level, the timestep k_H >= 0 the history is "
                                 f"noised to in its extra branch, got {self.fractional_level!r}")
        elif self.fractional_level is not None:
            raise ValueError(f"fractional_level applies to mode 'fractional' only, not to {self.mode!r}")
        if self.mode == "temporal":
            windows, weights = tuple(self.temporal_windows), tuple(self.temporal_weights)
            if not windows or len(windows) != len(weights):
                raise ValueError(f"temporal guidance needs one weight per history window and at least one window, "
                                 f"got windows {windows!r} and weights {weights!r}")
            if not all(w is None or (_is_int(w) and w >= 1) for w in windows):
                raise ValueError(f"each temporal window is a number >= 1 of most recent history frames, or None "
                                 f"for all of them; got {windows!r}")
            if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w > 0
                       for w in weights):
                raise ValueError(f"temporal weights must be finite numbers > 0, got {weights!r}")
            object.__setattr__(self, "temporal_windows", windows)
            object.__setattr__(self, "temporal_weights", weights)
        elif self.temporal_windows or self.temporal_weights:
            raise ValueError(f"temporal_windows and temporal_weights apply to mode 'temporal' only, "
                             f"not to {self.mode!r}")

    @property
    def is_conditional(self) -> bool:
        """True where the guided prediction is the conditional one exactly, so one branch suffices."""
        if self.mode == "none":
            return True
        if self.mode == "temporal":
            return self.scale == 1.0 and self.temporal_windows == (None,)
        return self.scale == 1.0

    def check_levels(self, num_train_timesteps: int) -> None:
        if self.mode == "fractional" and not self.fractional_level < num_train_timesteps:
            raise ValueError(f"fractional_level must be a timestep in 0..{num_train_timesteps - 1}, "
                             f"got {self.fractional_level}")


def _show_history(x: torch.Tensor, history: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor,
                  schedule: NoiseSchedule) -> torch.Tensor:
    """x with each history frame replaced by what the model sees at its level: the clean frame at
    CLEAN_LEVEL, pure noise at T - 1 (no trace of the frame left), and add_noise(frame, noise, level) between.

    x, noise: (B, F, C, H, W);  history: (F,) bool;  levels: (F,) int64.  Returns (B, F, C, H, W).
    """
    fully_noised = schedule.num_timesteps - 1
    t = levels.to(x.device).expand(x.shape[0], -1)                                 # (B, F)
    noised = schedule.add_noise(x, noise, t)                                       # (B, F, C, H, W)
    shown = torch.where(_frames(levels == fully_noised, x), noise, noised)
    shown = torch.where(_frames(levels == CLEAN_LEVEL, x), x, shown)
    return torch.where(_frames(history, x), shown, x)


def _frames(per_frame: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-frame (F,) tensor shaped to broadcast against x (B, F, C, H, W): (1, F, 1, 1, 1)."""
    return per_frame.to(x.device).view(1, -1, *[1] * (x.ndim - 2))


@torch.no_grad()
def history_guided_prediction(denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, history: torch.Tensor,
                              schedule: NoiseSchedule, guidance: Optional[HistoryGuidance] = None, *,
                              history_levels: Optional[torch.Tensor] = None,
                              history_noise: Optional[torch.Tensor] = None,
                              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The denoiser's prediction for a window, guided by its history (formulas: :class:`HistoryGuidance`).

    x: (B, F, C, H, W), history frames holding their *clean* values;  t: (B, F) the timesteps of the
    frames being generated (history columns are set here);  history: (F,) bool, the frames that are known.
    history_levels: (F,) int64, the level each history frame is shown at in the conditional branch
        (CLEAN_LEVEL = clean; a stabilisation level for generated history); default all clean.
    history_noise: (B, F, C, H, W), the noise that noises history in every branch, so that all branches
        (and all rows of a window) see the same noised history; drawn with ``generator`` when None.
    All branches are stacked along the batch and the denoiser is called once, on (branches · B, F, ...).
    Returns the guided prediction (B, F, C, H, W), of the denoiser's prediction type.
    """
    guidance = guidance if guidance is not None else HistoryGuidance()
    guidance.check_levels(schedule.num_timesteps)
    num_frames, fully_noised = x.shape[1], schedule.num_timesteps - 1
    history = history.to(torch.bool).cpu()
    given = (torch.full((num_frames,), CLEAN_LEVEL, dtype=torch.int64) if history_levels is None
             else history_levels.to(torch.int64).cpu())                              # (F,)
    schedule.check_timesteps(given, allow_minus_one=False)

    # The history levels of every branch, (F,) each; the combination at the end reads them by name.
    masked = torch.full_like(given, fully_noised)
    branches = {"conditional": given}
    if not guidance.is_conditional:
        if guidance.mode == "temporal":
            branches = {}
            history_order = history.cumsum(0) - 1                                    # (F,) 0 = oldest history frame
            num_history = int(history.sum())
            for i, window in enumerate(guidance.temporal_windows):
                keep = history_order >= num_history - (num_history if window is None else window)
                branches[f"window {i}"] = torch.where(keep, given, masked)
        branches["unconditional"] = masked
        if guidance.mode == "fractional":
            # Noising only adds noise: a stabilised frame already above k_H stays at its own level.
            branches["fractional"] = given.clamp_min(guidance.fractional_level)

    if history_noise is None:
        # Drawn only where some branch shows a history frame noised; otherwise never read.
        noised_somewhere = any((history & (levels != CLEAN_LEVEL)).any() for levels in branches.values())
        history_noise = (torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                         if noised_somewhere else torch.zeros_like(x))
    batch = x.shape[0]
    inputs = [_show_history(x, history, levels, history_noise, schedule) for levels in branches.values()]
    times = [torch.where(history.to(t.device), levels.to(t.device), t) for levels in branches.values()]   # (B, F) each
    output = denoiser(torch.cat(inputs), torch.cat(times))                            # (branches · B, F, C, H, W)
    if output.shape != (len(branches) * batch, *x.shape[1:]):
        raise ValueError(f"the denoiser returned shape {tuple(output.shape)} for input of shape "
                         f"{(len(branches) * batch, *x.shape[1:])}; it must return one prediction per input frame")
    predictions = dict(zip(branches, output.split(batch)))                            # name -> (B, F, C, H, W)

    s = float(guidance.scale)
    if guidance.is_conditional:
        return predictions["conditional"]
    unconditional = predictions["unconditional"]
    if guidance.mode == "vanilla":
        return combine_guidance(unconditional, predictions["conditional"], s)       # u + s (c - u)
    if guidance.mode == "fractional":
        return predictions["conditional"] + (s - 1.0) * (predictions["fractional"] - unconditional)
    # temporal: the weighted mixture of the window-conditionals, guided away from u with scale s.
    total = sum(guidance.temporal_weights)
    mixture = sum((weight / total) * predictions[f"window {i}"] for i, weight in enumerate(guidance.temporal_weights))
    return combine_guidance(unconditional, mixture, s)                              # u + s Σ ŵ_i (c_i - u)


# ----------------------------------------------------------------------------------------------
# 4. Rollout: a video longer than the window
# ----------------------------------------------------------------------------------------------

def per_branch(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-video values (B, ...) (an anchor, a label) for a denoiser call on ``batch`` rows: history guidance
    stacks its branches along the batch, each branch the same B videos in the same order, so the values are
    tiled once per branch. batch must be a multiple of B."""
    if batch % values.shape[0]:
        raise ValueError(f"values for {values.shape[0]} videos do not fit a batch of {batch} (a multiple of "
                         f"{values.shape[0]}, one block per guidance branch, was expected)")
    return values.repeat(batch // values.shape[0], *[1] * (values.ndim - 1))


def labelled(network, num_videos: int):
    """``network(x_t, t, labels=...)`` as toydiff's label-conditional ``model(x_t, t, labels)`` (what
    ``toydiff.guidance.guided_denoiser`` wraps) for windows of ``num_videos`` videos. The labels come as G
    groups of the B videos' labels, (G * B,) (classifier-free guidance stacks its conditional and null groups,
    G = 2; the guide gets one), and x_t as the same G groups, each holding every history-guidance branch: each
    group's labels are tiled over its branches (per_branch)."""
    def model(x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        groups, left = divmod(labels.shape[0], num_videos)
        if left or groups == 0 or x_t.shape[0] % groups:
            raise ValueError(f"got {labels.shape[0]} labels for {num_videos} videos and a batch of {x_t.shape[0]}: "
                             f"expected whole groups of {num_videos} labels, one per block of the batch")
        rows = x_t.shape[0] // groups
        tiled = torch.cat([per_branch(group, rows) for group in labels.split(num_videos)])
        return network(x_t, t, labels=tiled)

    return model


def with_labels(network, labels: torch.Tensor) -> Denoiser:
    """``network(x_t, t, labels=...)`` as a window denoiser ``(x_t, t)``, given each video's label (B,), tiled
    once per guidance branch (per_branch)."""
    model = labelled(network, labels.shape[0])
    return lambda x_t, t: model(x_t, t, labels)


def in_front(denoiser: Denoiser, frames: torch.Tensor, what: str = "frames in front") -> Denoiser:
    """``denoiser`` with clean frames put in front of every window it is given: a plain window denoiser
    for a model that takes an anchor or memory frames (VideoDiTConfig.anchor_frame, memory_frames).

    frames: (B, M, C, H, W), M clean frames per video. Every call puts them, at CLEAN_LEVEL, in front of the
    window the sampler passes and drops them from the prediction, so the samplers and history guidance see
    windows of F frames as for any model. Guidance stacks its branches along the batch (a multiple of B):
    each branch gets the same frames, which are never guided away. ``what`` names them in errors.
    """
    if frames.ndim != 5:
        raise ValueError(f"{what} are M frames per video, (B, M, C, H, W), got shape {tuple(frames.shape)}")
    count = frames.shape[1]

    def with_frames(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[0] % frames.shape[0] or tuple(x_t.shape[2:]) != tuple(frames.shape[2:]):
            raise ValueError(f"{what} of shape {tuple(frames.shape)} do not fit windows of shape {tuple(x_t.shape)}")
        leading = per_branch(frames.to(x_t.dtype), x_t.shape[0])                       # (batch, M, C, H, W)
        levels = torch.full_like(t[:, :1], CLEAN_LEVEL).expand(-1, count)             # (batch, M)
        return denoiser(torch.cat([leading, x_t], dim=1), torch.cat([levels, t], dim=1))[:, count:]

    return with_frames


def anchored(denoiser: Denoiser, anchor: torch.Tensor) -> Denoiser:
    """The denoiser of a model with an anchor frame (VideoDiTConfig.anchor_frame) as a plain window denoiser:
    :func:`in_front` with one frame per video, anchor (B, C, H, W)."""
    if anchor.ndim != 4:
        raise ValueError(f"an anchor is one frame per video, (B, C, H, W), got shape {tuple(anchor.shape)}")
    return in_front(denoiser, anchor[:, None], "anchors")


def memory_indices(window_start, memory_frames: int, stride: int) -> torch.Tensor:
    """The frames of the video a window starting at frame ``window_start`` takes as its memory
    (VideoDiTConfig.memory_frames): window_start - stride·M, ..., window_start - stride, oldest first, each
    at least 0 (the video's first frame stands in for frames before it). window_start: an int, or a tensor of
    starts (B,); returns (M,) or (B, M) int64. Training clips (videodiff.training.VideoClips) and rollouts
    take the same frames."""
    start = torch.as_tensor(window_start)
    offsets = stride * torch.arange(memory_frames, 0, -1, device=start.device)  # (M,): stride·M .. stride
    return (start[..., None] - offsets).clamp_min(0)


@torch.no_grad()
def rollout(denoiser: Denoiser, context_latents: torch.Tensor, length: int, window: int, schedule: NoiseSchedule,
            *, frames_per_window: Optional[int] = None, kind: str = "full_sequence", num_steps: int = 50,
            spacing: str = "trailing", prediction_type: str = "epsilon", sampler: str = "ddim",
            eta: Optional[float] = None, guidance: Optional[HistoryGuidance] = None,
            stabilization_level: int = CLEAN_LEVEL, anchor: Optional[torch.Tensor] = None,
            memory_frames: int = 0, memory_stride: int = 1,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Generate ``length`` frames after K real context frames, one sliding window at a time.

    context_latents: (B, K, C, H, W), 0 <= K < window.  window: the most frames the model may see at once
    (its training window W).  frames_per_window: the frames generated per window, n_new (default W - K, or
    W - W // 2 when K = 0); each window holds the last W - n_new known frames as history (real context first,
    then generated frames; fewer at the start if fewer are known) followed by n_new frames of noise. With no
    real frame (K = 0) the first window is drawn whole from noise, W frames with no history (a video from
    nothing; a labelled model's denoiser says which scene), and the windows after it slide as usual. The last window is
    padded too: when ``length`` is not a multiple of n_new it still denoises n_new frames and keeps the
    first ones it needs, so that once W - n_new frames are known (from the first window with the default
    n_new) every window holds W frames, the clips the model was trained on (as the DFoT code pads its last
    chunk), and a shorter rollout is the start of a longer one drawn with the same generator. The padded
    window keeps its whole scheduling matrix, so along the autoregressive and pyramid matrices its last
    rows denoise only padding (a few calls, once per rollout; none along full_sequence). Frame positions
    restart at 0 in every window.
    kind, num_steps, spacing: the scheduling matrix of each window (:func:`scheduling_matrix`).
    stabilization_level k_s: generated frames fed back as history are shown re-noised to timestep k_s
    (DFoT's stabilisation; 0 = used clean). Real context is always clean.
    guidance: applied to the whole history of every window, generated frames included.
    anchor: for a model with an anchor frame, the clean frame (B, C, H, W) put in front of every window
    (:func:`anchored`): the last real context frame, as `VideoDiffusionModel.rollout` passes it.
    memory_frames, memory_stride: for a model with memory frames (VideoDiTConfig.memory_frames), the frames of
    the video so far (real or generated, always clean) that every window takes in front of it
    (:func:`memory_indices` of its first frame), after the anchor.
    Returns (B, K + length, C, H, W): the context unchanged, then the generated frames.
    """
    if context_latents.ndim < 3:
        raise ValueError(f"context_latents must be (B, K, C, H, W), got shape {tuple(context_latents.shape)}")
    num_context = context_latents.shape[1]
    if not _is_int(window) or window < 2:
        raise ValueError(f"window must be an integer >= 2 (history and at least one new frame), got {window!r}")
    if not 0 <= num_context < window:
        raise ValueError(f"got {num_context} context frames for a window of {window}: need K < window so that "
                         f"at least one new frame fits; pass fewer context frames or a larger window")
    if not _is_int(length) or length < 1:
        raise ValueError(f"length, the number of frames to generate, must be an integer >= 1, got {length!r}")
    if frames_per_window is None:
        frames_per_window = window - (num_context or window // 2)
    if not _is_int(frames_per_window) or not 1 <= frames_per_window < window:
        raise ValueError(f"frames_per_window must be in 1..{window - 1} for a window of {window} (at least one "
                         f"history frame), got {frames_per_window!r}")
    if kind not in SCHEDULING_KINDS:
        raise ValueError(f"unknown scheduling matrix {kind!r}; expected one of {', '.join(SCHEDULING_KINDS)}")
    sampling_timesteps(schedule.num_timesteps, num_steps, spacing)  # a bad spacing or step count, before any window
    history_length = window - frames_per_window
    for name, value, least in (("memory_frames", memory_frames, 0), ("memory_stride", memory_stride, 1)):
        if not _is_int(value) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if num_context == 0 and memory_frames:
        raise ValueError("memory frames are frames of the video so far, and with no real context frame the first "
                         "window has none: give at least one real frame to a model with memory frames")
    if anchor is not None:
        expected = (context_latents.shape[0], *context_latents.shape[2:])                # (B, C, H, W)
        if tuple(anchor.shape) != expected:
            raise ValueError(f"the anchor must be one frame per video, of shape {expected} (B, C, H, W) as the "
                             f"context's frames, got {tuple(anchor.shape)}")
        denoiser = anchored(denoiser, anchor)

    video = context_latents                                                         # (B, K + generated, C, H, W)
    while video.shape[1] < num_context + length:
        known = video.shape[1]
        num_history = min(history_length, known)
        # Every window denoises frames_per_window new frames, the last one too (padded), and the first a whole
        # window when no frame is known yet; these are kept:
        num_new = frames_per_window if known else window
        num_kept = min(num_new, num_context + length - known)
        history = video[:, known - num_history:]                                    # (B, h, C, H, W)
        noise = torch.randn((video.shape[0], num_new, *video.shape[2:]), generator=generator,
                            dtype=video.dtype, device=video.device)                 # (B, n, C, H, W)
        x = torch.cat([history, noise], dim=1)                                      # (B, h + n, C, H, W)
        # Which history frames the model made: those past the K real context frames.
        frame_index = torch.arange(known - num_history, known + num_new)
        generated = (frame_index >= num_context) & (frame_index < known)            # (h + n,)
        indices = scheduling_matrix(kind, num_history + num_new, num_steps, context=num_history)
        timesteps = timesteps_from_indices(indices, schedule.num_timesteps, num_steps, spacing)
        window_denoiser = denoiser
        if memory_frames:
            memory = video[:, memory_indices(known - num_history, memory_frames, memory_stride)]  # (B, M, C, H, W)
            window_denoiser = in_front(denoiser, memory, "memory frames")
        x = sample_window(window_denoiser, x, num_history, schedule, timesteps, prediction_type=prediction_type,
                          sampler=sampler, eta=eta, guidance=guidance, generated_context=generated,
                          stabilization_level=stabilization_level, generator=generator)
        video = torch.cat([video, x[:, num_history:num_history + num_kept]], dim=1)
    return video
