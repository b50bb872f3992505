"""``make demo``, the video part: train the per-frame VAE and the video DiT, then roll out held-out videos.

    python -m videodiff demo --out runs/demo/video      # its run time: README, "Two commands"

Checkpoints under OUT are reused (training resumes where it stopped), so a second run only rolls out.
Writes rollout.gif (generated beside the truth), metrics.json and report.json with each stage's seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from toydiff.training import retrain_if_recipe_changed
from videodiff.evaluation import rollout_and_score
from videodiff.pipeline import (
    VideoDiffusionRunConfig, quick_run_configs, train_video_diffusion, train_video_vae, video_vae_run_config,
)
from videodiff.plots import save_rollout_gif
from videodiff.sampling import HistoryGuidance

# The demo's rollout: 4 real frames, then 4x the training window, with the library's sampler, autoguided by the
# run's early EMA (the library's default) and without history guidance. On the labelled bench model under that
# sampler (10 steps, η = 1), no history guidance kept 0.43 of 64 frames intact at 1.44 px over the first 8
# generated frames; vanilla guidance (s = 2) 0.21 at 1.83 px; fractional guidance about the same as none, 0.42
# at 1.31 px, a gain that did not carry over to two other models (docs/video_rollouts.md, "Fresh noise at every
# step").
CONTEXT, LENGTH, GUIDANCE = 4, 32, HistoryGuidance("none")


def run_demo(out: Path, progress: bool = True, quick: bool = False) -> dict:
    """quick: the same stages on a few short videos with a few dozen training steps (for tests)."""
    out.mkdir(parents=True, exist_ok=True)
    stages = {}
    vae_config = video_vae_run_config()
    config = VideoDiffusionRunConfig(vae_checkpoint=str(out / "vae" / "checkpoint.pt"))
    context, length, num_videos = CONTEXT, LENGTH, 16
    if quick:
        vae_config, config = quick_run_configs(str(out / "vae" / "checkpoint.pt"))
        context, length, num_videos = 2, 5, 2
    vae_config.train.progress = config.train.progress = progress

    started = time.perf_counter()
    print(f"== videodiff: training the per-frame VAE ({vae_config.train.steps} steps) -> {out / 'vae'}", flush=True)
    vae_run = retrain_if_recipe_changed(lambda: train_video_vae(vae_config, out_dir=out / "vae"))
    stages["vae_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    print(f"== videodiff: training the video DiT with diffusion forcing ({config.train.steps} steps) -> "
          f"{out / 'dit'}", flush=True)
    run = retrain_if_recipe_changed(lambda: train_video_diffusion(config, out_dir=out / "dit", vae=vae_run.vae))
    stages["dit_seconds"] = time.perf_counter() - started

    started = time.perf_counter()
    generated, truth, metrics = rollout_and_score(run, num_videos, context, length, GUIDANCE)
    save_rollout_gif(generated, truth.frames, out / "rollout.gif", num_context=context)
    stages["rollout_seconds"] = time.perf_counter() - started
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report = {**stages, "vae_train_seconds": vae_run.seconds, "dit_train_seconds": run.seconds,
              "position_error_first": metrics["position_error_first"],
              "well_formed_share": metrics["well_formed_share"], "intact_share": metrics["intact_share"],
              "moves": metrics["moves"]}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"   stages: VAE {stages['vae_seconds']:.0f} s, video DiT {stages['dit_seconds']:.0f} s, "
          f"rollout {stages['rollout_seconds']:.0f} s")
    print(f"   {num_videos} held-out videos, {context} real frames then {length} generated "
          f"(autoguidance w = {run.default_guide_scale:g}, no history guidance): position error over the first 8 "
          f"{_number(metrics['position_error_first'])} px, well-formed frames {metrics['well_formed_share']:.0%}, "
          f"intact {metrics['intact_share']:.0%}, moves: {metrics['moves']}")
    print(f"   wrote rollout.gif, metrics.json and report.json under {out}")
    return report


def _number(value) -> str:
    return "-" if value is None else f"{value:.2f}"
