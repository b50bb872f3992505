"""``make bench`` for videodiff.interp: what the hook points cost, and how long the probe experiment takes.

1. Hook points with nothing attached: the number of hook-point calls in one forward of the default video
   DiT, the cost of one unhooked call, and their product as a share of the forward (target: not
   measurable, far below the spread of the forward's own timing). Also a forward with a do-nothing hook
   on every cheap site, what merely looking costs.
2. With ``--checkpoint``: the whole probe experiment (``python -m videodiff probe``), its wall time
   (target <= 15 minutes on 2 cores) and its figures.

    python -m videodiff.interp.bench [--repeats 7] [--checkpoint runs/video/dit/checkpoint.pt --out runs/bench/probe]
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch

from imagediff.bench import median_seconds
from imagediff.hooks import HookPoint, hook_names, hooks
from toydiff.cli import OneLineParser, existing_file, parse_or_report, positive_int
from videodiff.dit import make_video_dit

EXPENSIVE = ("hook_scores", "hook_pattern", "hook_head_out")  # change the computation when hooked


def hook_point_cost(repeats: int = 7, batch_size: int = 16) -> dict:
    """Time a forward of the default video DiT and what its unhooked hook points add to it."""
    torch.manual_seed(0)
    model = make_video_dit("tiny", num_frames=8, in_channels=4, input_size=(8, 8)).eval()
    x = torch.randn(batch_size, 8, 4, 8, 8)
    t = torch.randint(0, 1000, (batch_size, 8))
    calls = []
    with torch.no_grad():
        with hooks(model, [(lambda name: True, lambda activation, hook: calls.append(hook.name))]):
            model(x, t)
        forward_times = []
        for _ in range(repeats):
            forward_times.append(median_seconds(lambda: model(x, t), 5, warmup=1))
        forward = statistics.median(forward_times)
        spread = statistics.pstdev(forward_times)
        point, value = HookPoint(), torch.zeros(1)
        per_call = median_seconds(lambda: [point(value) for _ in range(10_000)], repeats) / 10_000
        cheap = [name for name in hook_names(model) if not name.endswith(EXPENSIVE)]
        with hooks(model, [(lambda name: name in cheap, lambda activation, hook: None)]):
            looking = median_seconds(lambda: model(x, t), repeats)
    unhooked = len(calls) * per_call
    return {"batch_size": batch_size, "forward_seconds": forward, "forward_spread_seconds": spread,
            "hook_calls_per_forward": len(calls), "seconds_per_unhooked_call": per_call,
            "unhooked_share_of_forward": unhooked / forward, "spread_share_of_forward": spread / forward,
            "forward_with_noop_hooks_seconds": looking, "noop_hooks_overhead": looking / forward - 1}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m videodiff.interp.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=positive_int, default=7, help="timings per median")
    parser.add_argument("--checkpoint", type=existing_file,
                        help="a video diffusion run: also time the whole probe experiment (default: none, the hook "
                             "points only)")
    parser.add_argument("--out", default="runs/bench/probe", help="output folder")
    return parser


def main(argv=None) -> int:
    args = parse_or_report(build_parser(), argv)
    if args is None:
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "command": "python -m videodiff.interp.bench " + " ".join(argv or [])}
    cost = hook_point_cost(args.repeats)
    report["hook_points"] = cost
    print(f"hook points, nothing attached: {cost['hook_calls_per_forward']} calls x "
          f"{cost['seconds_per_unhooked_call'] * 1e9:.0f} ns = {cost['unhooked_share_of_forward']:.3%} of a "
          f"{cost['forward_seconds'] * 1e3:.1f} ms forward (its own run-to-run spread: "
          f"{cost['spread_share_of_forward']:.1%}); a do-nothing hook on every cheap site: "
          f"{cost['noop_hooks_overhead']:+.1%}", flush=True)
    if args.checkpoint:
        from videodiff.interp.experiment import run_probe_experiment
        from videodiff.pipeline import load_video_diffusion

        started = time.perf_counter()
        result = run_probe_experiment(load_video_diffusion(args.checkpoint), out_dir=out / "probe")
        wall = time.perf_counter() - started
        report["probe"] = {"wall_seconds": wall, "target_seconds": 15 * 60, "best": result["best"],
                           **{name: result[name] for name in ("vae_latent_baseline", "x_t_baseline",
                                                              "random_init_baseline", "permutation_p_value")}}
        print(f"probe experiment: {wall:.0f} s (target <= 900 s); best per-video accuracy "
              f"{result['best']['per_video_accuracy']:.3f}", flush=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
