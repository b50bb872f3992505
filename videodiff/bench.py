"""``make bench`` for the video layer: its speed and quality targets, measured on this machine.

1. The default chain — the per-frame VAE, then the video DiT with diffusion forcing — and its training
   time (target: both within 20 minutes on 2 cores).
2. Rollouts of held-out videos from 4 real frames, with the library's sampler (ROLLOUT_STEPS = 10 DDIM
   steps a window at η = ROLLOUT_ETA = 1), scored against their true physics:
   - mean ball-position error over the first 8 generated frames (target <= 1.5 px);
   - over a 64-frame rollout: the share of frames with the right number of well-formed balls
     (target >= 95%), read two ways — where the truth has them ("well-formed") and judged on the frame
     alone ("intact") — and whether the balls still move;
   one row per history guidance (none, vanilla, fractional, temporal; with and without stabilisation),
   all with autoguidance by the run's early EMA (the default), and one without.
3. The same for a full-sequence baseline (one noise level per clip) trained with the same budget.
4. Training throughput in frames per second, and the FLOP rate of a training step (the recipe's, compiled
   by default, and eager) against the fp32 matmul rate (target >= 75%), the three timed in turns in
   2 x ``--repeats`` rounds (medians); where the recipe trains under bf16 autocast, also its step in
   fp32 and the bf16 matmul rate.

    python -m videodiff.bench [--out runs/bench/videodiff] [--repeats 5] [--num-videos 32] [--quick]

``--quick`` runs the same code with tiny settings (a smoke test of the bench itself, not a result).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from imagediff.bench import interleaved_medians, matmul_function, median_seconds, synchronized
from toydiff.cli import OneLineParser, parse_or_report, positive_int
from toydiff.compilation import compile_or_eager, with_eager_fallback
from toydiff.schedules import make_schedule
from toydiff.training import autocast_for, resolved_precision
from videodiff.evaluation import GUIDANCE_ROWS, evaluation_table, format_table, reference_rows, rollout_and_score
from videodiff.dit import VideoDiT, video_training_flops
from videodiff.metrics import format_crowding, format_faults
from videodiff.pipeline import (
    ROLLOUT_ETA, ROLLOUT_SCHEDULING, ROLLOUT_STEPS, VideoDiffusionRunConfig, quick_run_configs, train_video_diffusion,
    train_video_vae, video_vae_run_config,
)
from videodiff.plots import save_rollout_gif
from videodiff.sampling import HistoryGuidance
from videodiff.training import VideoDiffusionObjective

CONTEXT, SHORT, LONG = 4, 8, 64


def training_step(config: VideoDiffusionRunConfig, latent_shape, device="cpu", precision: Optional[str] = None,
                  compile: Optional[bool] = None, batch_size: Optional[int] = None):
    """(step, description): one full training step (forward, backward, AdamW) of the run's video DiT on
    random clips, to time, and what it is — batch size, parameters, FLOPs, the forward it calls (compiled
    or, where compilation failed, eager).

    device, precision, compile: where the step runs, its mixed precision (toydiff.training.autocast_for:
    "no", "bf16" or "auto"; default: as the run trains, config.train.mixed_precision) and whether through
    torch.compile (toydiff.compilation; default: as the run trains, config.train.compile);
    batch_size: clips per step (default: the run's). A compiled step compiles on its first calls.
    """
    compile = config.train.compile if compile is None else compile
    device = torch.device(device)
    dit = replace(config.dit, in_channels=latent_shape[0], input_size=tuple(latent_shape[1:]))
    model = VideoDiT(dit).to(device)
    forward = compile_or_eager(model, enabled=compile)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    objective = VideoDiffusionObjective(make_schedule(config.schedule, config.num_timesteps), config.prediction_type,
                                        config.weighting, noise_mode=config.noise_mode,
                                        context_frames=config.context_frames, anchor_frame=dit.anchor_frame,
                                        memory_frames=dit.memory_frames)
    batch, frames = batch_size or config.train.batch_size, dit.num_frames
    # an anchor and memory frames too, if the model has them
    clips = (torch.randn(batch, dit.input_frames, *latent_shape, device=device),)
    autocast = autocast_for(config.train.mixed_precision if precision is None else precision, device)

    def one_step():
        with autocast:
            loss, _ = objective(forward, clips)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def step():  # a backward that fails to compile falls back to eager, and the rate says it is not compiled
        with_eager_fallback(forward, one_step)

    description = {"batch_size": batch, "frames": batch * frames,  # the frames learned: an anchor is not
                   "parameters": sum(p.numel() for p in model.parameters()),
                   "flops_per_step": video_training_flops(dit, batch),  # the anchor's share of the work included
                   "forward": forward}  # compiled or not is known once it has run (it may fall back to eager)
    return synchronized(step, device), description


def _rate(description: dict, seconds: float) -> dict:
    return {"batch_size": description["batch_size"], "parameters": description["parameters"],
            "compiled": bool(getattr(description["forward"], "compiled", False)), "seconds_per_step": seconds,
            "frames_per_second": description["frames"] / seconds, "flops_per_step": description["flops_per_step"],
            "flop_rate": description["flops_per_step"] / seconds}


def training_rate(config: VideoDiffusionRunConfig, latent_shape, repeats: int, device="cpu",
                  precision: Optional[str] = None,
                  compile: Optional[bool] = None, batch_size: Optional[int] = None) -> dict:
    """Median time of ``training_step``'s step over ``repeats`` calls, with its frames per second and FLOP rate."""
    compile = config.train.compile if compile is None else compile
    step, description = training_step(config, latent_shape, device, precision, compile, batch_size)
    seconds = median_seconds(step, repeats, warmup=3 if compile else 2)  # a compiled step's first call compiles
    return _rate(description, seconds)


def step_shares(config: VideoDiffusionRunConfig, latent_shape, rounds: int) -> dict:
    """The recipe's training step (compiled by default), the eager step and the fp32 matmul rate, timed in
    turns (imagediff.bench.interleaved_medians), so that the shares of the matmul rate and the compiled
    step's gain are not the machine's drift between two timings.

    Where the recipe's step runs under bf16 autocast (mixed precision "auto" on a machine with native bf16,
    or "bf16"), the same step in fp32 ("fp32") and the bf16 matmul rate are timed in the same turns: the
    share of the fp32 rate is the target's measure, the other two say how much of it the bf16 products buy.
    """
    precision = resolved_precision(config.train.mixed_precision, "cpu")
    recipe_step, recipe = training_step(config, latent_shape)
    eager_step, eager = training_step(config, latent_shape, compile=False)
    matmul, matmul_flops = matmul_function()
    functions = {"recipe": recipe_step, "eager": eager_step, "matmul": matmul}
    if precision == "bf16":
        functions["fp32"], fp32 = training_step(config, latent_shape, precision="no")
        functions["matmul_bf16"], _ = matmul_function(dtype=torch.bfloat16)
    medians = interleaved_medians(functions, rounds, warmup=3)
    peak = matmul_flops / medians["matmul"]
    report = {**_rate(recipe, medians["recipe"]), "precision": precision, "matmul_rate": peak,
              "eager": _rate(eager, medians["eager"])}
    report["share_of_matmul_rate"] = report["flop_rate"] / peak
    report["eager"]["share_of_matmul_rate"] = report["eager"]["flop_rate"] / peak
    if precision == "bf16":
        report["matmul_rate_bf16"] = matmul_flops / medians["matmul_bf16"]
        report["share_of_bf16_matmul_rate"] = report["flop_rate"] / report["matmul_rate_bf16"]
        report["fp32"] = _rate(fp32, medians["fp32"])
        report["fp32"]["share_of_matmul_rate"] = report["fp32"]["flop_rate"] / peak
    return report


def run_bench(out: Path, repeats: int, num_videos: int, quick: bool, baseline: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "platform": platform.platform()},
              "command": f"python -m videodiff.bench --out {out} --repeats {repeats} --num-videos {num_videos}"
                         + (" --quick" if quick else "")}
    vae_config = video_vae_run_config()
    config = VideoDiffusionRunConfig(vae_checkpoint=str(out / "vae" / "checkpoint.pt"))
    context, short, long = CONTEXT, SHORT, LONG
    rows = GUIDANCE_ROWS
    if quick:
        vae_config, config = quick_run_configs(str(out / "vae" / "checkpoint.pt"))
        context, short, long, rows = 2, 3, 6, GUIDANCE_ROWS[:2]
    vae_config.train.progress = config.train.progress = False

    # 1. The chain.
    started = time.perf_counter()
    vae_run = train_video_vae(vae_config, out_dir=out / "vae")
    vae_wall = time.perf_counter() - started
    started = time.perf_counter()
    run = train_video_diffusion(config, out_dir=out / "dit", vae=vae_run.vae)
    dit_wall = time.perf_counter() - started
    report["chain"] = {"vae_train_seconds": vae_run.seconds, "dit_train_seconds": run.seconds,
                       "vae_wall_seconds": vae_wall, "dit_wall_seconds": dit_wall,
                       "total_wall_seconds": vae_wall + dit_wall, "target_seconds": 20 * 60}
    print(f"chain: VAE {vae_wall:.0f} s + video DiT {dit_wall:.0f} s = {vae_wall + dit_wall:.0f} s (target <= 1200 s)",
          flush=True)

    # 2. Rollouts: a short one scored on its first frames, and long ones for each guidance; all of them
    # autoguided by the run's early EMA (the default), the table's last row without it.
    report["autoguidance"] = {"guide_step": config.guide_step(), "scale": run.default_guide_scale}
    report["sampler"] = {"scheduling": ROLLOUT_SCHEDULING, "steps": ROLLOUT_STEPS, "eta": ROLLOUT_ETA}
    print(f"autoguidance: w = {run.default_guide_scale:g}, guide = the EMA at step {config.guide_step()}; rollouts "
          f"take {ROLLOUT_STEPS} DDIM steps a window at η = {ROLLOUT_ETA:g}", flush=True)
    _, _, metrics = rollout_and_score(run, num_videos, context, short, HistoryGuidance("none"))
    report["short_rollout"] = {"position_error_first": metrics["position_error_first"], "target_px": 1.5,
                               "found_share": metrics["found_share"], "intact_share": metrics["intact_share"],
                               "intact_by_crowding": metrics["intact_by_crowding"]}
    print(f"position error over the first {short} generated frames: {metrics['position_error_first']:.2f} px "
          f"(target <= 1.5); intact {metrics['intact_share']:.2f}", flush=True)
    print(format_crowding(metrics["intact_by_crowding"]), flush=True)
    table = evaluation_table(run, num_videos, context, long, scale=2.0, stabilization=20, rows=rows)
    # What the same metrics give the truth decoded by the VAE (the ceiling) and a frozen frame (no model).
    reference = reference_rows(run, num_videos, context, long)
    report["long_rollout"] = {"length": long, "rows": table, "target_well_formed_share": 0.95, "reference": reference}
    print(format_table(table), flush=True)
    print(f"{table[0]['guidance']}: " + format_faults(table[0]["faults"]), flush=True)
    print("reference (no model):\n" + format_table(reference), flush=True)
    generated, truth, _ = rollout_and_score(run, min(num_videos, 8), context, long, HistoryGuidance("vanilla", 2.0))
    save_rollout_gif(generated, truth.frames, out / "rollout_vanilla.gif", num_context=context)

    # 3. The full-sequence baseline, same budget.
    if baseline:
        base_config = replace(config, noise_mode="full_sequence", clean_history_probability=0.0,
                              shared_future_level=False)
        started = time.perf_counter()
        base = train_video_diffusion(base_config, out_dir=out / "dit_full_sequence", vae=vae_run.vae)
        _, _, base_short = rollout_and_score(base, num_videos, context, short, HistoryGuidance("none"))
        base_table = evaluation_table(base, num_videos, context, long, scale=2.0, stabilization=20, rows=rows[:2])
        report["full_sequence_baseline"] = {"dit_train_seconds": base.seconds,
                                            "position_error_first": base_short["position_error_first"],
                                            "rows": base_table, "wall_seconds": time.perf_counter() - started}
        print("full-sequence baseline (same steps):", flush=True)
        print(f"position error over the first {short}: {base_short['position_error_first']:.2f} px", flush=True)
        print(format_table(base_table), flush=True)

    # 4. Throughput and the share of the matmul rate.
    latent_shape = (run.model.config.in_channels, *run.model.config.input_size)
    throughput = step_shares(config, latent_shape, rounds=2 * repeats)
    report["throughput"] = {**throughput, "target_share": 0.75}
    bf16 = throughput["precision"] == "bf16"
    recipe_name = ("the recipe's, " + ("compiled" if throughput["compiled"] else "eager")
                   + (", bf16 autocast" if bf16 else ""))
    rows = [(recipe_name, throughput), ("eager" + (", bf16 autocast" if bf16 else ""), throughput["eager"])]
    rows += [("compiled, fp32", throughput["fp32"])] if bf16 else []
    for name, measured in rows:
        print(f"training step ({name}): {measured['frames_per_second']:.0f} frames/s, "
              f"{measured['flop_rate'] / 1e9:.1f} GFLOP/s = {measured['share_of_matmul_rate']:.0%} of the fp32 matmul "
              f"rate {throughput['matmul_rate'] / 1e9:.1f} GFLOP/s (target >= 75%)", flush=True)
    if bf16:
        print(f"the recipe's step is {throughput['share_of_bf16_matmul_rate']:.0%} of the bf16 matmul rate "
              f"{throughput['matmul_rate_bf16'] / 1e9:.1f} GFLOP/s", flush=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'bench.json'} and {out / 'rollout_vanilla.gif'}")
    return report


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m videodiff.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/videodiff", help="output folder")
    parser.add_argument("--repeats", type=positive_int, default=5, help="timings per median")
    parser.add_argument("--num-videos", type=positive_int, default=32, help="held-out videos")
    parser.add_argument("--no-baseline", action="store_true", help="skip the full-sequence baseline")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of the bench itself")
    return parser


def main(argv=None) -> int:
    args = parse_or_report(build_parser(), argv)
    if args is None:
        return 2
    run_bench(Path(args.out), args.repeats, args.num_videos, args.quick, baseline=not args.no_baseline)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
