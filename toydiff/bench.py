"""``make bench`` for the toy layer: the toy layer's speed and quality targets, measured here, as medians.

1. Wall time of the default ``python -m toydiff train --dataset spiral`` (target ≤ 30 s on 2 cores),
   and the energy distance of 4000 DDIM-50 samples to fresh data (target ≤ 0.003), with DDPM-1000 too.
2. DDIM-50 on 10 000 points against the 50 model evaluations alone (target: ratio ≤ 1.2).

    python -m toydiff.bench [--repeats 3] [--out runs/bench/toydiff.json]
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from toydiff.cli import OneLineParser, parse_or_report, positive_int
from toydiff.data import make_dataset
from toydiff.experiment import load_toy_model
from toydiff.metrics import compare_to_data
from toydiff.samplers import ddim_sample, sampling_timesteps


def bench_training(repeats: int) -> dict:
    seconds, distances, ddpm_distances, precisions, checkpoint = [], [], [], [], None
    fresh, _ = make_dataset("spiral", 4000, seed=1001)
    second_fresh, _ = make_dataset("spiral", 4000, seed=1002)
    for repeat in range(repeats):
        out = Path(tempfile.mkdtemp(prefix="toydiff-bench-"))
        command = [sys.executable, "-m", "toydiff", "train", "--dataset", "spiral", "--out", str(out), "--quiet"]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds.append(time.perf_counter() - started)
        run = load_toy_model(out / "checkpoint.pt")
        comparison = compare_to_data(run.sample(4000, "ddim", 50, seed=repeat), fresh, second_fresh)
        distances.append(comparison["energy_distance"]["value"])
        precisions.append(comparison["precision"]["value"])
        precision_floor = comparison["precision"]["floor"]
        floor = comparison["energy_distance"]["floor"]
        ddpm = compare_to_data(run.sample(4000, "ddpm", seed=repeat), fresh, second_fresh)
        ddpm_distances.append(ddpm["energy_distance"]["value"])
        checkpoint = out / "checkpoint.pt"
    return {
        "command": "python -m toydiff train --dataset spiral --out DIR --quiet",
        "train_seconds_runs": seconds, "train_seconds_median": statistics.median(seconds),
        "train_seconds_target": 30.0,
        "ddim50_energy_distance_runs": distances, "ddim50_energy_distance_median": statistics.median(distances),
        "ddpm1000_energy_distance_runs": ddpm_distances,
        "ddpm1000_energy_distance_median": statistics.median(ddpm_distances),
        "energy_distance_floor": floor, "energy_distance_target": 0.003,
        "ddim50_precision_runs": precisions, "ddim50_precision_median": statistics.median(precisions),
        "precision_floor": precision_floor,
        "checkpoint": str(checkpoint),
    }


def bench_sampler_overhead(checkpoint: Path, repeats: int) -> dict:
    run = load_toy_model(checkpoint)
    model = run.denoiser()  # the unconditional pass, one model call per step
    x_T = torch.randn(10_000, 2, generator=torch.Generator().manual_seed(0))
    timesteps = sampling_timesteps(run.schedule.num_timesteps, 50, "trailing")
    t_batches = [torch.full((10_000,), t, dtype=torch.int64) for t in timesteps]

    def model_only():
        with torch.no_grad():
            for t in t_batches:
                model(x_T, t)

    def full_sampler():
        ddim_sample(model, x_T, run.schedule, num_steps=50, prediction_type=run.config.prediction_type)

    model_only(), full_sampler()  # warm up
    model_seconds, sampler_seconds = [], []
    for _ in range(repeats):
        started = time.perf_counter(); model_only(); model_seconds.append(time.perf_counter() - started)
        started = time.perf_counter(); full_sampler(); sampler_seconds.append(time.perf_counter() - started)
    model_median, sampler_median = statistics.median(model_seconds), statistics.median(sampler_seconds)
    return {"model_evaluations_seconds_median": model_median, "ddim50_seconds_median": sampler_median,
            "ratio": sampler_median / model_median, "ratio_target": 1.2, "points": 10_000}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m toydiff.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=3,
                        help="training runs per median (the sampler's timing takes at least 5)")
    parser.add_argument("--out", default="runs/bench/toydiff.json", help="the report, a JSON file")
    return parser


def main(argv=None) -> int:
    args = parse_or_report(build_parser(), argv)
    if args is None:
        return 2
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    report = {"machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
              "training": bench_training(args.repeats)}
    report["sampler"] = bench_sampler_overhead(Path(report["training"]["checkpoint"]), max(5, args.repeats))
    training, sampler = report["training"], report["sampler"]
    print(f"toydiff bench ({report['machine']}), medians of {args.repeats} runs")
    print(f"  train (default spiral)      {training['train_seconds_median']:7.1f} s    target <= 30 s   runs {['%.1f' % s for s in training['train_seconds_runs']]}")
    print(f"  DDIM-50 energy distance     {training['ddim50_energy_distance_median']:7.4f}      target <= 0.003  (floor {training['energy_distance_floor']:.4f})")
    print(f"  DDIM-50 precision           {training['ddim50_precision_median']:7.3f}      (share of samples on the arms; floor {training['precision_floor']:.3f})")
    print(f"  DDPM-1000 energy distance   {training['ddpm1000_energy_distance_median']:7.4f}")
    print(f"  DDIM-50 / 50 model calls    {sampler['ratio']:7.3f}      target <= 1.2    ({sampler['ddim50_seconds_median']*1000:.1f} ms vs {sampler['model_evaluations_seconds_median']*1000:.1f} ms, 10 000 points)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
