"""The physical-plausibility experiment: can a linear probe read "this video is impossible" off the DiT?

Matched pairs of videos (videodiff.data.physics.make_impossible_pairs) share a set-up up to an event
frame; after it, one continues lawfully and its twin does something impossible (a teleport, a ball
that vanishes, gravity reversing, ...). For each video, a window of frames around the event is
encoded by the VAE and DDIM-inverted through the DiT (videodiff.interp.trajectories), its first frames
held clean as a rollout holds its history (by default the history the run trained with, which ends
where the event begins: ProbeExperimentConfig.history_frames and frames_before_event); every block's
output is mean-pooled over tokens (by default over the whole window, as the paper does; optionally per
frame, see ProbeExperimentConfig.pool) at every noise level the inversion visits. One linear probe per
cell (site, block, noise level) then tries to tell plausible from impossible, evaluated honestly
(videodiff.interp.probes): pairs never straddle a split, the best cell is chosen on inner folds and
reported on outer ones, and the same procedure runs on baselines — the VAE latents the DiT starts from,
the noisy latents x_t themselves, and a DiT of the same shape with random weights — and under
permuted labels.

    result = run_probe_experiment(run, ProbeExperimentConfig(num_pairs=200), out_dir="runs/probe")
    result["best"], result["vae_latent_baseline"], result["permutation_p_value"]

Written to out_dir: probe.json (the figures), features.npz (every pooled feature the probes were fit on,
with labels, kinds and pair ids, so anyone can refit them with another library) and the figures
(heatmaps per site, accuracy against inversion steps, the intervention sweep).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from imagediff.hooks import hooks
from videodiff.data.physics import make_impossible_pairs
from videodiff.dit import VideoDiT, require_plain_windows
from videodiff.interp.ablations import noise_injection
from videodiff.interp.activations import pool_tokens, pool_tokens_per_frame, project, select_frames, then
from videodiff.interp.probes import (accuracy, choose_l2, control_labels, fit_logistic, grouped_folds,
                                     grouped_regression_r2, nested_probe, nested_probe_over_seeds,
                                     permutation_test, selectivity)
from videodiff.interp.trajectories import invert_video
from toydiff.samplers import sampling_timesteps
from videodiff.pipeline import physics_config

PAIR_SEED_OFFSET = 2_000_000  # pairs are drawn apart from the training (0) and held-out (1e6) videos
SITES = ("resid_post", "attn_out", "mlp_out")
POOLS = ("all", "after_event", "per_frame")


@dataclass
class ProbeExperimentConfig:
    num_pairs: int = 200                 # matched pairs: 2 · num_pairs videos
    seed: int = 0
    frames_before_event: int = 4         # the window starts this many frames before the event frame
    # The first frames of the window held clean along the inversion (shown at CLEAN_LEVEL with their
    # latents, as a rollout shows its history; videodiff.interp.trajectories), so that the model is asked
    # what it was mostly trained to do: continue a clean history. None: the history the run trained with
    # (VideoDiffusionRunConfig.history_frames(): 4 of 8 for the recipe; 0 for a run that trains none);
    # 0: every frame inverted, as the paper does.
    history_frames: Optional[int] = None
    # "all": mean over the window's tokens (as the paper pools); "after_event": over the frames from the
    # event on; "per_frame": over each frame's tokens, frames kept in order (F·D features, projected to
    # projection_dim), so that a linear probe can compare frames.
    pool: str = "all"
    inversion_steps: int = 10
    num_levels: int = 5                  # noise levels kept for the probes, spread over those the inversion visits
    sites: tuple = SITES
    step_sweep: tuple = (1, 2, 5, 10, 20)
    intervention_alpha: float = 0.5
    probe_seeds: tuple = (0, 1, 2)       # splits into folds: the figures' spread over seeds
    outer_folds: int = 5
    inner_folds: int = 4
    l2_grid: tuple = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    num_permutations: int = 199
    # The null re-runs the whole nested procedure 199 times: over the best site's cells, with a smaller
    # λ grid and 3 inner folds, so that it fits the time budget (probe.json says what it used).
    permutation_l2_grid: tuple = (1e-1, 1.0)
    permutation_inner_folds: int = 3
    projection_dim: int = 256            # flattened latents and x_t are projected to this many dimensions
    batch_size: int = 96

    def __post_init__(self) -> None:
        if self.num_pairs < 10:
            raise ValueError(f"num_pairs must be at least 10 (5 folds of 2 pairs), got {self.num_pairs}.")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}.")
        if self.frames_before_event < 0:
            raise ValueError(f"frames_before_event must be >= 0, got {self.frames_before_event}.")
        if self.history_frames is not None and (isinstance(self.history_frames, bool) or
                                                not isinstance(self.history_frames, int) or self.history_frames < 0):
            raise ValueError(f"history_frames must be None (the run's own) or an integer >= 0, "
                             f"got {self.history_frames!r}.")
        if not self.sites or any(site not in SITES for site in self.sites):
            raise ValueError(f"sites must be a non-empty subset of {SITES}, got {self.sites!r}.")
        if self.num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {self.num_levels}.")
        if self.inversion_steps not in self.step_sweep:
            self.step_sweep = tuple(sorted(set(self.step_sweep) | {self.inversion_steps}))
        self.sites, self.step_sweep = tuple(self.sites), tuple(self.step_sweep)
        self.probe_seeds, self.l2_grid = tuple(self.probe_seeds), tuple(self.l2_grid)
        self.permutation_l2_grid = tuple(self.permutation_l2_grid)


def quick_probe_config() -> ProbeExperimentConfig:
    """Smoke-test sizes: prove the experiment runs end to end in seconds; the figures mean nothing."""
    return ProbeExperimentConfig(num_pairs=28, inversion_steps=2, num_levels=2, step_sweep=(1, 2), probe_seeds=(0,),
                                 outer_folds=2, inner_folds=2, num_permutations=3, l2_grid=(0.1, 1.0),
                                 permutation_l2_grid=(1.0,), permutation_inner_folds=2, batch_size=32)


# ---------------------------------------------------------------------------------------------
#                                   The videos and their windows
# ---------------------------------------------------------------------------------------------


@dataclass
class PairWindows:
    """Plausible and impossible videos cut to the model's window around the event.

    frames (2P, W, H, W, 3) uint8; labels (2P,) 1 plausible, 0 impossible; pair_ids (2P,); kinds (2P,)
    the pair's impossibility (both twins carry it); event_offset: the event's frame within the window;
    ball_state (2P, 4): ball 0's mean (x, y) position and (vx, vy) velocity over the window;
    attribute (2P, 2): number of balls and ball 0's colour, the control task's nuisance attribute.
    """

    frames: np.ndarray
    labels: np.ndarray
    pair_ids: np.ndarray
    kinds: np.ndarray
    event_offset: np.ndarray
    ball_state: np.ndarray
    attribute: np.ndarray


def held_history_frames(run, config: ProbeExperimentConfig) -> int:
    """How many frames at the window's start the inversion holds clean: config.history_frames, or the
    clean history the run trained with when that is None."""
    frames = config.history_frames
    if frames is None:
        frames = run.config.history_frames() or 0
    if frames >= run.window:
        raise ValueError(f"history_frames must leave a frame of the model's window of {run.window} to invert, "
                         f"got {frames}.")
    return frames


def pair_windows(run, config: ProbeExperimentConfig) -> PairWindows:
    window = run.window
    physics = physics_config(run.config.physics)
    pairs = make_impossible_pairs(config.num_pairs, seed=PAIR_SEED_OFFSET + config.seed, config=physics)
    before = min(config.frames_before_event, window - 1)
    starts = np.clip(pairs.event_frames - before, 0, physics.num_frames - window)  # (P,)
    rows = np.arange(len(pairs))[:, None]
    frame_index = starts[:, None] + np.arange(window)  # (P, W)
    frames, states, attributes = [], [], []
    for videos in (pairs.plausible, pairs.impossible):
        frames.append(videos.frames[rows, frame_index])  # (P, W, H, W, 3)
        positions = videos.positions[rows, frame_index][:, :, 0]  # (P, W, 2): ball 0
        velocities = videos.velocities[rows, frame_index][:, :, 0]
        states.append(np.concatenate([positions.mean(1), velocities.mean(1)], axis=1))  # (P, 4)
        attributes.append(np.stack([videos.present[:, 0].sum(1), videos.colours[:, 0, 0]], axis=1))  # (P, 2)
    both = lambda a: np.concatenate([a, a])  # noqa: E731  the twins share pair id, kind and event
    return PairWindows(frames=np.concatenate(frames), labels=np.repeat([1, 0], len(pairs)),
                       pair_ids=both(pairs.pair_ids), kinds=both(pairs.kinds),
                       event_offset=both(pairs.event_frames - starts), ball_state=np.concatenate(states),
                       attribute=np.concatenate(attributes))


# ---------------------------------------------------------------------------------------------
#                             Features along the inverted trajectories
# ---------------------------------------------------------------------------------------------


def random_projection(dim_in: int, dim_out: int, seed: int = 0) -> Optional[torch.Tensor]:
    """A fixed Gaussian map (dim_in, dim_out) / sqrt(dim_out), or None when dim_in <= dim_out: it keeps
    linear separability roughly intact (Johnson-Lindenstrauss) while making probes cheap."""
    if dim_in <= dim_out:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim_in, dim_out, generator=generator, dtype=torch.float64) / dim_out**0.5


def pooling(config: ProbeExperimentConfig, window: int, tokens_per_frame: int, hidden_dim: int, before: int):
    """The select(name, tensor) that turns a site's tokens into a video's feature vector, by config.pool;
    ``before``: the first frame of the event (the earliest over the pairs)."""
    if config.pool == "all":
        return pool_tokens
    if config.pool == "after_event":
        return then(select_frames(range(before, window), window, tokens_per_frame), pool_tokens)
    projection = random_projection(window * hidden_dim, config.projection_dim, seed=config.seed)
    return then(pool_tokens_per_frame(window, tokens_per_frame),
                project(None if projection is None else projection.float()))


def _flat(x: torch.Tensor, projection: Optional[torch.Tensor]) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1).cpu().double()  # (B, F·C·H·W)
    return (flat if projection is None else flat @ projection).numpy()


@torch.no_grad()
def kept_levels(num_steps: int, num_levels: int, num_timesteps: int = 1000) -> list[int]:
    """The noise levels at which a ``num_steps``-step inversion evaluates the model, thinned to
    ``num_levels`` spread evenly over them (the first, clean one included)."""
    visited = [0, *sampling_timesteps(num_timesteps, num_steps)[::-1][:-1]]  # what ddim_invert evaluates at
    picks = np.unique(np.linspace(0, len(visited) - 1, min(num_levels, len(visited))).round().astype(int))
    return [visited[i] for i in picks]


def trajectory_features(model, latents: torch.Tensor, schedule, *, prediction_type: str, num_steps: int,
                        sites, select, batch_size: int, levels=None, fwd_hooks=(),
                        projection_dim: Optional[int] = None, history_frames: int = 0):
    """Pooled features of every (site, block, level) along each video's DDIM inversion.

    latents (n, W, C, H, W); levels: the evaluation levels to keep (None: all); history_frames: the
    first frames held clean (invert_video). Returns (features
    {(site, block, level): (n, D)}, the levels kept, x_t {level: (n, projection_dim)} — the noisy
    latents the model saw at each kept level, flattened and projected — when projection_dim is given,
    else {}).
    """
    pieces: dict = {}
    states: dict = {}
    projection = None
    if projection_dim is not None:
        projection = random_projection(int(np.prod(latents.shape[1:])), projection_dim)
    kept = []
    device = next(model.parameters()).device  # the features come back to the CPU, where the probes are fitted
    with hooks(model, list(fwd_hooks)):
        for start in range(0, latents.shape[0], batch_size):
            batch = latents[start:start + batch_size].to(device)
            trajectory = invert_video(model, batch, schedule, num_steps=num_steps, prediction_type=prediction_type,
                                      names=list(sites), select=select, levels=levels,
                                      keep_states=projection_dim is not None, history_frames=history_frames)
            for level, cache in trajectory.caches.items():
                for site in sites:
                    for block in cache.layers(site):
                        pieces.setdefault((site, block, level), []).append(cache[site, block].cpu().double().numpy())
            for level, state in zip(trajectory.levels, trajectory.states):
                if level in trajectory.caches:
                    states.setdefault(level, []).append(_flat(state, projection))
            kept = sorted(trajectory.caches)
    features = {cell: np.concatenate(parts) for cell, parts in pieces.items()}
    return features, kept, {level: np.concatenate(parts) for level, parts in states.items()}


def randomly_initialised_like(model: VideoDiT, seed: int = 0) -> VideoDiT:
    """A video DiT of the same configuration whose every Linear is Xavier-initialised — adaLN-Zero's
    zeros included: with them every block is the identity and the "random network" would be no network."""
    torch.manual_seed(seed)
    other = VideoDiT(model.config).to(next(model.parameters()).device)
    for module in other.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            torch.nn.init.zeros_(module.bias)
    return other.eval()


# ---------------------------------------------------------------------------------------------
#                                          The probes
# ---------------------------------------------------------------------------------------------


def _summary(over_seeds: dict) -> dict:
    return {name: over_seeds[f"{name}_mean"] for name in ("per_video_accuracy", "pairwise_accuracy", "auroc")} | {
        f"{name}_std": over_seeds[f"{name}_std"] for name in ("per_video_accuracy", "pairwise_accuracy", "auroc")}


def _cross_fitted_verdicts(X: np.ndarray, others: list[np.ndarray], windows: PairWindows, config) -> list[np.ndarray]:
    """Held-out margins on X and on each of ``others`` (the same videos, changed), from probes fitted per
    grouped fold on X's training rows only (λ by inner CV)."""
    y, groups = windows.labels, windows.pair_ids
    margins = [np.zeros(len(y)) for _ in range(1 + len(others))]
    for fold, (train, test) in enumerate(grouped_folds(groups, config.outer_folds, config.seed)):
        l2, _ = choose_l2(X[train], y[train], groups[train], config.l2_grid, config.inner_folds, [config.seed, fold])
        probe = fit_logistic(X[train], y[train], l2)
        for target, source in zip(margins, [X, *others]):
            target[test] = probe.decision(source[test])
    return margins


def leave_one_type_out(features: dict, windows: PairWindows, config) -> dict:
    """Train on the pairs of every other kind of impossibility, test on the held-out kind. The cell and
    λ are chosen by inner grouped CV on the training kinds only. Returns {kind: per-video accuracy}."""
    y, groups, kinds = windows.labels, windows.pair_ids, windows.kinds
    out = {}
    for kind in sorted(set(kinds.tolist())):
        train, test = np.flatnonzero(kinds != kind), np.flatnonzero(kinds == kind)
        best = None
        for cell, X in features.items():
            l2, score = choose_l2(X[train], y[train], groups[train], config.l2_grid, config.inner_folds, config.seed)
            if best is None or score > best[0]:
                best = (score, cell, l2)
        _, cell, l2 = best
        probe = fit_logistic(features[cell][train], y[train], l2)
        out[str(kind)] = accuracy(probe.decision(features[cell][test]), y[test])
    return out


def _cell_json(cell) -> dict:
    site, block, level = cell
    return {"site": site, "block": int(block), "noise_level": int(level)}


# ---------------------------------------------------------------------------------------------
#                                       The whole experiment
# ---------------------------------------------------------------------------------------------


def run_probe_experiment(run, config: Optional[ProbeExperimentConfig] = None, out_dir=None,
                         log: Callable[[str], None] = print) -> dict:
    """Run everything the module docstring lists; returns probe.json's contents (and writes the files
    to out_dir when given). run: a videodiff.pipeline.VideoDiffusionModel."""
    config = config or ProbeExperimentConfig()
    require_plain_windows(run.model, "the probe experiment")
    started, seconds = time.perf_counter(), {}

    def lap(name: str) -> None:
        seconds[name] = round(time.perf_counter() - started - sum(seconds.values()), 1)
        log(f"  {name}: {seconds[name]:.1f} s")

    model, schedule = run.model.eval(), run.schedule
    history = held_history_frames(run, config)
    kw = dict(prediction_type=run.config.prediction_type, batch_size=config.batch_size, history_frames=history)
    windows = pair_windows(run, config)
    y, groups, pair_ids = windows.labels, windows.pair_ids, windows.pair_ids
    window = run.window
    tokens_per_frame = model.config.tokens_per_frame
    before = int(windows.event_offset.min())
    select = pooling(config, window, tokens_per_frame, model.config.hidden_dim, before)
    latents = run.encode(windows.frames).cpu()  # (2P, W, C, H, W)
    lap("videos and VAE latents")

    # 1. Features along the inversion, for the trained DiT and for a random one of the same shape.
    features_by_steps = {}
    levels = kept_levels(config.inversion_steps, config.num_levels, schedule.num_timesteps)
    features, levels, x_t = trajectory_features(model, latents, schedule, num_steps=config.inversion_steps,
                                                sites=config.sites, select=select, levels=levels,
                                                projection_dim=config.projection_dim, **kw)
    features_by_steps[config.inversion_steps] = features
    lap(f"DDIM inversion, {config.inversion_steps} steps, trained DiT")
    random_features, _, _ = trajectory_features(randomly_initialised_like(model, config.seed), latents, schedule,
                                                num_steps=config.inversion_steps, sites=config.sites, select=select,
                                                levels=levels, **kw)
    lap("DDIM inversion, random DiT")
    # The VAE latents the DiT starts from: the same fixed projection as x_t (x_t at level 0 is x_0 itself).
    vae_features = {("vae_latent", 0, 0): _flat(latents, random_projection(int(np.prod(latents.shape[1:])),
                                                                           config.projection_dim))}
    x_t_features = {("x_t", 0, level): x_t[level] for level in levels}

    # 2. The probes: the trained DiT's cells and each baseline, nested, over probe seeds.
    probe_kw = dict(outer_folds=config.outer_folds, inner_folds=config.inner_folds, l2_grid=config.l2_grid)
    trained = nested_probe_over_seeds(features, y, groups, pair_ids, seeds=config.probe_seeds, **probe_kw)
    best_cell = trained["results"][0].best_cell
    lap("nested probes, trained DiT")
    baselines, baseline_runs = {}, {}
    for name, cells in (("vae_latent_baseline", vae_features), ("x_t_baseline", x_t_features),
                        ("random_init_baseline", random_features)):
        over_seeds = nested_probe_over_seeds(cells, y, groups, pair_ids, seeds=config.probe_seeds, **probe_kw)
        baselines[name], baseline_runs[name] = _summary(over_seeds), over_seeds
        if name != "vae_latent_baseline":
            baselines[name]["best_cell"] = _cell_json(over_seeds["results"][0].best_cell)
    lap("nested probes, baselines")

    # 3. The permutation null, the whole nested procedure over the best site's cells.
    site_cells = {cell: X for cell, X in features.items() if cell[0] == best_cell[0]}
    observed, null, p_value = permutation_test(
        site_cells, y, groups, pair_ids, num_permutations=config.num_permutations, seed=config.seed,
        outer_folds=config.outer_folds, inner_folds=config.permutation_inner_folds, l2_grid=config.permutation_l2_grid)
    lap(f"permutation null ({config.num_permutations} relabellings)")

    # 4. Control task and selectivity: the same procedure on labels that only a memorising probe gets.
    control = control_labels(windows.attribute, seed=config.seed)
    try:
        # Grouped by pair as always; no pairwise figure (twins share the attribute, hence the label).
        control_accuracy = nested_probe(site_cells, control, groups, np.arange(len(y)), seed=config.seed,
                                        **probe_kw).per_video_accuracy
    except ValueError as error:  # a fold whose control labels are all one class (only with very few pairs)
        log(f"  control task skipped: {error}")
        control_accuracy = None
    # 5. Leave one kind of impossibility out.
    loto = leave_one_type_out(site_cells, windows, config)
    # 6. Physical state, linearly: ball 0's mean position and velocity, from the best cell and from the VAE.
    plausible = y == 1
    regression = {}
    for name, X in (("best_cell", features[best_cell]), ("vae_latent", vae_features[("vae_latent", 0, 0)])):
        r2 = grouped_regression_r2(X[plausible], windows.ball_state[plausible], pair_ids[plausible],
                                   folds=config.outer_folds, inner_folds=config.inner_folds, seed=config.seed)
        regression[name] = {"r2_position_x": float(r2["r2_per_output"][0]), "r2_position_y": float(r2["r2_per_output"][1]),
                            "r2_velocity_x": float(r2["r2_per_output"][2]), "r2_velocity_y": float(r2["r2_per_output"][3])}
    lap("control task, leave-one-type-out, state regression")

    # 7. Accuracy against the number of inversion steps (the best cell's site, all blocks and levels).
    steps_accuracy = {}
    for steps in config.step_sweep:
        if steps not in features_by_steps:
            features_by_steps[steps], _, _ = trajectory_features(
                model, latents, schedule, num_steps=steps, sites=(best_cell[0],), select=select,
                levels=kept_levels(steps, config.num_levels, schedule.num_timesteps), **kw)
        cells = {cell: X for cell, X in features_by_steps[steps].items() if cell[0] == best_cell[0]}
        steps_accuracy[str(steps)] = nested_probe(cells, y, groups, pair_ids, seed=config.seed,
                                                  **probe_kw).per_video_accuracy
    lap("inversion-steps sweep")

    # 8. Intervention: noise into one block's output at every inversion step; how often the verdict of
    # the best cell's probe flips (held-out verdicts, probes fitted on clean features).
    intervened = []
    for block in range(len(model.blocks)):
        changed, _, _ = trajectory_features(
            model, latents, schedule, num_steps=config.inversion_steps, sites=(best_cell[0],), select=select,
            levels=[best_cell[2]], fwd_hooks=noise_injection(model, block, config.intervention_alpha, seed=config.seed),
            **kw)
        intervened.append(changed[best_cell])
    margins = _cross_fitted_verdicts(features[best_cell], intervened, windows, config)
    clean_verdict = margins[0] > 0
    intervention = {str(block): float(np.mean((m > 0) != clean_verdict)) for block, m in enumerate(margins[1:])}
    intervention_accuracy = {str(block): accuracy(m, y) for block, m in enumerate(margins[1:])}
    lap("intervention sweep")

    heatmaps = {site: [[trained_cell_accuracy(trained, (site, block, level)) for level in levels]
                       for block in range(len(model.blocks))] for site in config.sites}
    site = best_cell[0]
    random_heatmap = [[trained_cell_accuracy(baseline_runs["random_init_baseline"], (site, block, level))
                       for level in levels] for block in range(len(model.blocks))]
    result = {
        "num_pairs": config.num_pairs,
        "num_videos": int(len(y)),
        "kinds": sorted(set(windows.kinds.tolist())),
        "history_frames": history,
        "best": {**_cell_json(best_cell), **_summary(trained),
                 "chosen_cells_per_seed": [_cell_json(r.best_cell) for r in trained["results"]],
                 "per_kind_accuracy": per_kind_accuracy(trained, windows)},
        **baselines,
        "permutation_p_value": p_value,
        "permutation": {"observed": observed, "null_mean": float(null.mean()), "null_max": float(null.max()),
                        "num_permutations": config.num_permutations,
                        "cells": f"the {len(site_cells)} cells of site {best_cell[0]}",
                        "l2_grid": list(config.permutation_l2_grid), "inner_folds": config.permutation_inner_folds},
        "control_task": {"attribute": "number of balls and ball 0's colour",
                         "accuracy": control_accuracy,
                         "task_accuracy_same_cells": observed,
                         "selectivity": None if control_accuracy is None else selectivity(observed, control_accuracy)},
        "leave_one_type_out": loto,
        "inversion_steps": steps_accuracy,
        "intervention": intervention,
        "intervention_accuracy": intervention_accuracy,
        "state_regression": regression,
        "heatmap": {"levels": [int(level) for level in levels], "blocks": list(range(len(model.blocks))),
                    "accuracy": heatmaps, "random_init_best_site": random_heatmap,
                    "note": "each cell's own held-out accuracy (mean over probe seeds): descriptive; the "
                            "selected-and-reported figure is 'best'"},
        "config": asdict(config),
        "seconds": seconds,
    }
    if out_dir is not None:
        write_outputs(Path(out_dir), result, features, vae_features, x_t_features, random_features, windows)
        lap("writing files")
    result["seconds"]["total"] = round(time.perf_counter() - started, 1)
    if out_dir is not None:
        (Path(out_dir) / "probe.json").write_text(json.dumps(result, indent=2))
    return result


def per_kind_accuracy(over_seeds: dict, windows: PairWindows) -> dict:
    """The nested (held-out) per-video accuracy on the pairs of each kind of impossibility, mean over seeds."""
    kinds = windows.kinds
    return {str(kind): float(np.mean([accuracy(result.margins[kinds == kind], windows.labels[kinds == kind])
                                      for result in over_seeds["results"]])) for kind in sorted(set(kinds.tolist()))}


def trained_cell_accuracy(over_seeds: dict, cell) -> float:
    """A cell's own held-out accuracy, mean over the probe seeds (the heatmaps' entries)."""
    return float(np.mean([result.cell_accuracy[cell] for result in over_seeds["results"]]))


def _array_name(cell) -> str:
    site, block, level = cell
    return f"{site}_block{block}_level{level}"


def write_outputs(out_dir: Path, result: dict, features: dict, vae_features: dict, x_t_features: dict,
                  random_features: dict, windows: PairWindows) -> None:
    """features.npz, the heatmaps and the sweep figures (probe.json is written by the caller)."""
    from videodiff.interp.plots import plot_probe_figures

    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = {_array_name(cell): X.astype(np.float32) for cell, X in features.items()}
    arrays |= {f"random_init_{_array_name(cell)}": X.astype(np.float32) for cell, X in random_features.items()}
    arrays |= {_array_name(cell): X.astype(np.float32) for cell, X in {**vae_features, **x_t_features}.items()}
    np.savez_compressed(out_dir / "features.npz", labels=windows.labels, kinds=windows.kinds.astype(str),
                        pair_ids=windows.pair_ids, event_offset=windows.event_offset, **arrays)
    plot_probe_figures(result, out_dir)
