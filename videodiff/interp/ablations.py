"""Ablations: break one part of the video DiT and measure what the physics metrics lose.

Every ablation here is a list of ready hooks for `imagediff.hooks.hooks` (or, for the two that change
how the model is *used* rather than what it computes, a change of the rollout), so that any of them
can be combined with any experiment:

    with hooks(run.model, noise_injection(layer=1, alpha=0.5)):
        frames = run.rollout(context, length=16, labels=run.labels_for(videos))

    table = ablation_table(run, standard_ablations(run.model), num_videos=16, context=4, length=16)

What each one asks:
- skip the DiT (`copy_last_frame`): the generated frames are the last real frame, decoded. The floor a
  model must beat, and what a frozen rollout scores (motion ratio 0).
- one denoising step instead of many: how much of the result is iterative refinement.
- AdaLN modulation replaced by its mean over the window's frames: the model can no longer tell a clean
  history frame from a noisy one — the only thing that tells them apart (there is no mask).
- the noise-level embedding fixed to one level for every frame: the same question, asked differently.
- zero- and mean-ablation of chosen heads (videodiff.interp.heads.head_ablation_hooks).
- skipping a block: its attention and MLP add nothing to the residual stream.
- noise injected into a block's output at every step, h + α·std(h)·ε: how much the rest of the
  network relies on that block's output being exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from imagediff.hooks import HookPoint, hooks
from videodiff.metrics import physics_metrics
from videodiff.pipeline import held_out_videos

FwdHooks = list  # [(hook name, fn(activation, hook_point) -> tensor or None)]


def _check_layer(model, layer: int) -> None:
    depth = len(model.blocks)
    if not isinstance(layer, int) or not 0 <= layer < depth:
        raise ValueError(f"layer must be a block index in 0..{depth - 1} for this model of depth {depth}, got {layer!r}.")


def skip_block(model, layer: int) -> FwdHooks:
    """Block ``layer`` adds nothing: its attention and MLP outputs are zeroed, so resid_post = resid_pre."""
    _check_layer(model, layer)
    zero = lambda activation, hook: torch.zeros_like(activation)  # noqa: E731
    return [(f"blocks.{layer}.hook_attn_out", zero), (f"blocks.{layer}.hook_mlp_out", zero)]


def noise_injection(model, layer: int, alpha: float = 0.5, seed: int = 0) -> FwdHooks:
    """h + α · std(h) · ε on block ``layer``'s output at every call (every denoising step), ε ~ N(0, I).

    std(h) is taken per example over all its tokens and channels. The noise is drawn from a generator
    seeded once, so the same call sequence gets the same noise."""
    _check_layer(model, layer)
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha!r}.")
    generator = torch.Generator().manual_seed(seed)

    def inject(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        std = activation.flatten(1).std(dim=1).view(-1, *([1] * (activation.ndim - 1)))  # (B, 1, 1)
        noise = torch.randn(activation.shape, generator=generator).to(activation.device, activation.dtype)
        return activation + alpha * std * noise  # (B, T, D)

    return [(f"blocks.{layer}.hook_resid_post", inject)]


def modulation_mean(model, layers: Optional[list[int]] = None) -> FwdHooks:
    """Every block's adaLN shift, scale and gate (B, F, D) replaced by their mean over the frames: every
    frame modulated alike, so the blocks cannot tell clean history from noisy frames."""
    layers = range(len(model.blocks)) if layers is None else layers
    mean_over_frames = lambda activation, hook: activation.mean(dim=1, keepdim=True).expand_as(activation)  # noqa: E731
    out = []
    for layer in layers:
        _check_layer(model, layer)
        out += [(f"blocks.{layer}.hook_{kind}", mean_over_frames) for kind in model.blocks[layer].MODULATION]
    return out


def fixed_noise_level(model, level: int) -> FwdHooks:
    """The condition c (B, F, D) of every frame replaced by that of noise level ``level`` (and the same label):
    emb(t) is replaced where it is made (hook_time_embed), before a scene label's vector is added to it."""
    if not isinstance(level, int) or not 0 <= level < 100_000:
        raise ValueError(f"level must be a non-negative integer timestep, got {level!r}.")

    def fixed(activation: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        time_embedding = model.timestep_embedder(torch.full(activation.shape[:-1], level, dtype=torch.int64,
                                                            device=activation.device))  # (B, F, D)
        return time_embedding.to(activation.dtype)

    return [("hook_time_embed", fixed)]


# ---------------------------------------------------------------------------------------------
#                                       The ablation table
# ---------------------------------------------------------------------------------------------


@dataclass
class Ablation:
    """One row of the table: hooks to attach during the rollout, and changes to the rollout itself.

    copy_last_frame: do not run the DiT at all; every generated frame is the last real frame.
    """

    name: str
    fwd_hooks: FwdHooks = field(default_factory=list)
    rollout_options: dict = field(default_factory=dict)
    copy_last_frame: bool = False


def standard_ablations(model, heads: Optional[list[tuple[int, int]]] = None, head_means: Optional[dict] = None,
                       alpha: float = 0.5, fixed_level: int = 500) -> list[Ablation]:
    """The issue's list: none, skip the DiT, one step, mean modulation, fixed noise level, each block
    skipped, noise injected into each block, and (given ``heads``) those heads zero- and mean-ablated."""
    from videodiff.interp.heads import head_ablation_hooks

    rows = [Ablation("none (the model as trained)"),
            Ablation("skip the DiT (copy the last real frame)", copy_last_frame=True),
            Ablation("one denoising step per frame", rollout_options={"num_steps": 1}),
            Ablation("adaLN modulation: mean over frames", modulation_mean(model)),
            Ablation(f"noise level embedding fixed at {fixed_level}", fixed_noise_level(model, fixed_level))]
    for layer in range(len(model.blocks)):
        rows.append(Ablation(f"skip block {layer}", skip_block(model, layer)))
    for layer in range(len(model.blocks)):
        rows.append(Ablation(f"noise into block {layer} (α = {alpha:g})", noise_injection(model, layer, alpha)))
    if heads:
        label = ", ".join(f"L{layer}H{head}" for layer, head in heads)
        rows.append(Ablation(f"zero heads {label}", head_ablation_hooks(heads, "zero")))
        if head_means is not None:
            rows.append(Ablation(f"mean heads {label}", head_ablation_hooks(heads, "mean", head_means)))
    return rows


# The ablation table's sampler: 2 deterministic DDIM steps a window (the rollout default until 2026-12-05,
# videodiff.pipeline.ROLLOUT_STEPS). With η = 0 and one seed, two rows differ only by what the ablation breaks,
# not by fresh noise drawn along trajectories that have parted; and a table of a dozen rows stays cheap (the rollout
# default, 10 steps with η = 1, takes five times the calls). The "one denoising step" row asks the same question
# against 2 steps as it did when these figures were first measured.
ABLATION_STEPS = 2
ABLATION_ETA = 0.0
TABLE_KEYS = ("position_error_first", "position_error", "found_share", "well_formed_share", "motion_ratio", "moves")


def ablation_table(run, ablations: list[Ablation], num_videos: int = 16, context: int = 4, length: int = 16,
                   num_steps: int = ABLATION_STEPS, eta: float = ABLATION_ETA, seed: int = 0,
                   on_row: Optional[Callable[[dict], None]] = None) -> list[dict]:
    """Roll out the same held-out videos under every ablation; one dict of physics metrics per row.

    run: a videodiff.pipeline.VideoDiffusionModel. The rollouts share their seed and, by default, take
    ABLATION_STEPS deterministic DDIM steps, so rows differ only by the ablation. They run the model alone,
    without autoguidance (guide_scale 1): the guide is a second, intact network that the hooks do not reach,
    and it would mend part of what an ablation breaks."""
    truth = held_out_videos(run.config, num_videos, num_frames=context + length)
    table = []
    for ablation in ablations:
        if ablation.copy_last_frame:
            latents = run.encode(truth.frames[:, :context])  # (N, K, C, h, w)
            last = latents[:, -1:].expand(-1, length, *latents.shape[2:])  # (N, length, C, h, w)
            generated = run.decode(torch.cat([latents, last], dim=1))
        else:
            options = {"num_steps": num_steps, "eta": eta, "seed": seed, "guide_scale": 1.0,
                       "labels": run.labels_for(truth), **ablation.rollout_options}
            with hooks(run.model, ablation.fwd_hooks):
                generated = run.rollout(truth.frames[:, :context], length, **options)
        metrics = physics_metrics(generated, truth, num_context=context)
        row = {"ablation": ablation.name, **{key: metrics[key] for key in TABLE_KEYS}}
        table.append(row)
        if on_row is not None:
            on_row(row)
    return table


def format_ablation_table(table: list[dict]) -> str:
    """The rows of `ablation_table` as a plain-text table."""
    width = max(len(row["ablation"]) for row in table) + 2
    lines = [f"{'ablation':<{width}} {'err first 8':>11} {'err all':>8} {'found':>6} {'well-formed':>11} "
             f"{'motion':>7} moves"]
    for row in table:
        def number(key):
            value = row[key]
            return "   -" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"
        lines.append(f"{row['ablation']:<{width}} {number('position_error_first'):>11} {number('position_error'):>8} "
                     f"{number('found_share'):>6} {number('well_formed_share'):>11} {number('motion_ratio'):>7} "
                     f"{row['moves']}")
    return "\n".join(lines)
