"""The video layer on a GPU: the CUDA paths checked, and the GPU-size models' training throughput.

    python -m videodiff.bench_gpu [--out runs/bench/videodiff_gpu] [--sizes tiny small base large]
                                  [--batch-size 128] [--repeats 10] [--compile base]

Checks, each reported as passed or failed with its figure (the command exits 1 if any fails):

1. placement   — a video DiT moved to the GPU gives the CPU model's outputs (fp32, within tolerance),
                 and the 3-D RoPE tables follow the model to the device;
2. bf16        — under bf16 autocast the forward stays close to fp32, the prediction comes back in
                 bf16 and the loss and gradients are finite;
3. sdpa        — a bf16 forward and backward of each size run with SDPA restricted to one fast kernel
                 (flash attention, then memory-efficient attention): PyTorch raises if the model's
                 queries, keys and values do not qualify (dtype, head dimension, layout), so a pass
                 means the fast kernels are really used, not silently replaced by the math fallback;
4. chain       — the smoke-test chain (toydiff.training.train: the VAE, then the video DiT with bf16
                 autocast) trained on the GPU, its checkpoint read back on the CPU with the same
                 outputs, a rollout on the GPU scored by the physics metrics, and an attention
                 pattern cached through videodiff.interp's hooks on the GPU;
5. commands    — ``python -m videodiff rollout / evaluate / probe / ablate --device`` on that
                 checkpoint: each loads the run on the GPU and finishes.

Then the training throughput of each size on the default window and latent shape: fp32 and bf16
(and bf16 through torch.compile for the sizes named by ``--compile``), frames per second, FLOP rate and its share of
the bf16 / fp32 matmul rate measured in the same run; medians of ``--repeats`` steps.

On a machine without CUDA it exits 2, unless ``--device cpu --quick`` asks for the same code on the
CPU with tiny sizes (how the tests keep this script working where no GPU is at hand).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from imagediff.bench import matmul_rate
from imagediff.hooks import run_with_cache
from toydiff.cli import OneLineParser, parse_or_report, positive_int
from toydiff.schedules import make_schedule
from videodiff.bench import training_rate
from videodiff.dit import VIDEO_DIT_SIZES, VideoDiT, video_dit_config
from videodiff.evaluation import rollout_and_score
from videodiff.pipeline import (
    VideoDiffusionRunConfig, load_video_diffusion, quick_run_configs, train_video_diffusion, train_video_vae,
)
from videodiff.sampling import HistoryGuidance
from videodiff.training import VideoDiffusionObjective

LATENT_SHAPE = (4, 8, 8)   # the default VAE's frame latents (32x32 RGB, 4x down, 4 channels)


def _small_input(config, batch: int, device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.num_frames, config.in_channels, *config.input_size, generator=generator)
    t = torch.randint(0, 1000, (batch, config.num_frames), generator=generator)
    return x.to(device), t.to(device)


def _checked_model(size: str, window: int) -> VideoDiT:
    """A video DiT of ``size`` on the CPU, every weight drawn from N(0, 0.02²) with seed 0: AdaLN-Zero
    starts with zero output, which would make any comparison of outputs pass."""
    torch.manual_seed(0)
    model = VideoDiT(video_dit_config(size, num_frames=window, in_channels=LATENT_SHAPE[0],
                                      input_size=LATENT_SHAPE[1:]))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02)
    return model


def check_placement(size: str, window: int, device) -> dict:
    """The same weights on the CPU and on the device give the same prediction (fp32)."""
    model = _checked_model(size, window).eval()
    x, t = _small_input(model.config, 2, "cpu")
    with torch.no_grad():
        expected = model(x, t)
        model.to(device)
        got = model(x.to(device), t.to(device))
    buffers_on_device = all(buffer.device.type == torch.device(device).type for buffer in model.buffers())
    error = ((got.float().cpu() - expected).abs().max() / expected.abs().max()).item()
    return {"size": size, "relative_max_error": error, "buffers_on_device": buffers_on_device,
            "output_device": str(got.device), "passed": error < 1e-3 and buffers_on_device
            and got.device.type == torch.device(device).type}


def check_bf16(size: str, window: int, device) -> dict:
    """bf16 autocast forward against fp32, and a finite loss and gradients under autocast."""
    device = torch.device(device)
    model = _checked_model(size, window).to(device)
    x, t = _small_input(model.config, 4, device)
    with torch.no_grad():
        reference = model(x, t)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            low = model(x, t)
    error = ((low.float() - reference).norm() / reference.norm()).item()
    objective = VideoDiffusionObjective(make_schedule("linear", 1000), "epsilon", "uniform")
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss, _ = objective(model, (x,))
    loss.backward()
    finite = bool(torch.isfinite(loss)) and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                                if p.grad is not None)
    expected_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"size": size, "relative_error_vs_fp32": error, "output_dtype": str(low.dtype),
            "loss": loss.item(), "finite": finite,
            "passed": error < 0.05 and finite and low.dtype == expected_dtype}


def check_sdpa_kernels(size: str, window: int, device, batch: int = 8) -> dict:
    """Forward and backward under bf16 autocast with SDPA allowed one fast kernel at a time."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    device = torch.device(device)
    config = video_dit_config(size, num_frames=window, in_channels=LATENT_SHAPE[0], input_size=LATENT_SHAPE[1:])
    model = VideoDiT(config).to(device)
    x, t = _small_input(config, batch, device)
    result = {"size": size, "head_dim": config.head_dim, "tokens": window * config.tokens_per_frame}
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}
    for name, backend in backends.items():
        if device.type != "cuda":
            result[name] = "not applicable on the CPU"
            continue
        model.zero_grad(set_to_none=True)
        try:
            with sdpa_kernel([backend]), torch.autocast("cuda", dtype=torch.bfloat16):
                model(x, t).float().square().mean().backward()
            torch.cuda.synchronize(device)
            result[name] = "ran"
        except RuntimeError as error:
            result[name] = f"refused: {str(error).strip().splitlines()[0][:200]}"
    result["passed"] = device.type != "cuda" or all(result[name] == "ran" for name in backends)
    return result


def check_chain(device, work: Path) -> dict:
    """The smoke-test chain trained on the device with bf16, read back on the CPU, rolled out and hooked."""
    vae_config, config = quick_run_configs(str(work / "vae" / "checkpoint.pt"))
    bf16 = torch.device(device).type == "cuda"
    vae_config.train = replace(vae_config.train, device=str(device), progress=False)
    config.train = replace(config.train, device=str(device), progress=False, mixed_precision="bf16" if bf16 else "no")
    vae_run = train_video_vae(vae_config, out_dir=work / "vae")
    run = train_video_diffusion(config, out_dir=work / "dit", vae=vae_run.vae)
    # The DiT and the VAE that encoded its training videos (and encodes and decodes its rollouts) are both there.
    on_device = run.device.type == torch.device(device).type == run.vae.latent_scale.device.type
    losses = [entry["loss"] for entry in run.history if "loss" in entry]
    # The checkpoint read back on the CPU predicts what the trained model predicts on the device.
    cpu_run = load_video_diffusion(work / "dit" / "checkpoint.pt", device="cpu")
    x, t = _small_input(cpu_run.model.config, 2, "cpu")
    with torch.no_grad():
        on_cpu = cpu_run.model(x, t)
        there = run.model(x.to(run.device), t.to(run.device)).float().cpu()
    reload_error = ((there - on_cpu).abs().max() / on_cpu.abs().max().clamp_min(1e-12)).item()
    generated, _, metrics = rollout_and_score(run, 4, 2, 4, HistoryGuidance("vanilla", 2.0), stabilization_level=20)
    _, cache = run_with_cache(run.model, x.to(run.device), t.to(run.device), names=["pattern"], layers=[0])
    pattern = cache["pattern", 0]
    rows_sum_to_one = bool(torch.allclose(pattern.sum(-1), torch.ones((), device=pattern.device), atol=1e-3))
    finite_metrics = all(math.isfinite(value) for value in metrics.values() if isinstance(value, float))
    return {"device": str(run.device), "vae_device": str(run.vae.latent_scale.device),
            "vae_seconds": vae_run.seconds, "dit_seconds": run.seconds,
            "losses": losses, "reload_relative_max_error": reload_error, "rollout_shape": list(generated.shape),
            "position_error_first": metrics.get("position_error_first"), "pattern_device": str(pattern.device),
            "passed": on_device and bool(losses) and all(math.isfinite(loss) for loss in losses) and reload_error < 1e-3
            and generated.shape[1] == 2 + 4 and rows_sum_to_one and finite_metrics
            and pattern.device.type == torch.device(device).type}


def check_commands(device, work: Path) -> dict:
    """The commands that sample a model, given ``--device``, on the chain's checkpoint (check_chain first): each
    loads the run there and finishes with status 0 (that they hand the device to the loader is tested on the CPU).
    """
    from videodiff.cli import main as videodiff_main

    common = ["--checkpoint", str(work / "dit" / "checkpoint.pt"), "--device", str(device)]
    clip = ["--num-videos", "2", "--context", "2", "--length", "4"]
    requests = {"rollout": ["rollout", *common, *clip, "--out", str(work / "rollout")],
                "evaluate": ["evaluate", *common, *clip],
                "probe": ["probe", *common, "--quick", "--out", str(work / "probe")],
                "ablate": ["ablate", *common, *clip]}
    statuses = {name: videodiff_main(argv) for name, argv in requests.items()}
    frames = work / "rollout" / "frames.npy"
    shape = list(np.load(frames).shape) if frames.exists() else None
    return {"device": str(device), "exit_statuses": statuses, "rollout_frames_shape": shape,
            "passed": all(status == 0 for status in statuses.values()) and shape == [2, 2 + 4, 32, 32, 3]}


def throughput(sizes, window: int, batch: int, repeats: int, device, compile=()) -> list[dict]:
    device = torch.device(device)
    rows = []
    for size in sizes:
        config = VideoDiffusionRunConfig(dit=video_dit_config(size, num_frames=window))
        modes = [("fp32", False, False)] + ([("bf16", True, False)] if device.type == "cuda" else [])
        if size in compile:
            modes.append(("bf16+compile" if device.type == "cuda" else "fp32+compile", device.type == "cuda", True))
        for name, bf16, compiled in modes:
            started = time.perf_counter()
            rate = training_rate(config, LATENT_SHAPE, repeats, device=device, precision="bf16" if bf16 else "no",
                                 compile=compiled, batch_size=batch)
            rows.append({"size": size, "mode": name, **rate, "wall_seconds": time.perf_counter() - started})
            print(f"  {size:>7} {name:>13}: {rate['frames_per_second']:10.0f} frames/s  "
                  f"{rate['flop_rate'] / 1e12:7.2f} TFLOP/s  ({rate['seconds_per_step'] * 1e3:.1f} ms/step)",
                  flush=True)
    return rows


def run_checks(out: Path, sizes, batch: int, repeats: int, device, compile=(), quick: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    window = VideoDiffusionRunConfig().dit.num_frames if not quick else 4
    report = {"machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                          "torch": torch.__version__, "platform": platform.platform()},
              "window": window, "latent_shape": list(LATENT_SHAPE), "checks": {}}

    def save():
        (out / "gpu_bench.json").write_text(json.dumps(report, indent=2))

    check_sizes = sizes[:2]
    for name, check in (("placement", check_placement), ("bf16", check_bf16), ("sdpa", check_sdpa_kernels)):
        report["checks"][name] = [check(size, window, device) for size in check_sizes]
        print(f"{name}: {report['checks'][name]}", flush=True)
        save()
    with tempfile.TemporaryDirectory() as work:
        report["checks"]["chain"] = [check_chain(device, Path(work))]
        print(f"chain: {report['checks']['chain']}", flush=True)
        report["checks"]["commands"] = [check_commands(device, Path(work))]
    print(f"commands: {report['checks']['commands']}", flush=True)
    save()

    print("training throughput:", flush=True)
    report["throughput"] = throughput(sizes, window, batch, repeats, device, compile)
    matmul_size = 4096 if device.type == "cuda" else 256
    report["matmul_rate"] = {"fp32": matmul_rate(matmul_size, repeats, device, torch.float32)}
    if device.type == "cuda":
        report["matmul_rate"]["bf16"] = matmul_rate(8192, repeats, device, torch.bfloat16)
    for row in report["throughput"]:
        peak = report["matmul_rate"]["bf16" if row["mode"].startswith("bf16") else "fp32"]
        row["share_of_matmul_rate"] = row["flop_rate"] / peak
    print(f"matmul rate: { {k: f'{v / 1e12:.1f} TFLOP/s' for k, v in report['matmul_rate'].items()} }", flush=True)
    report["passed"] = all(entry["passed"] for entries in report["checks"].values() for entry in entries)
    save()
    return report


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m videodiff.bench_gpu", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench/videodiff_gpu", help="folder of gpu_bench.json")
    parser.add_argument("--device", default="cuda", help="the GPU to check")
    parser.add_argument("--sizes", nargs="+", choices=VIDEO_DIT_SIZES, default=["tiny", "small", "base", "large"],
                        help="registry sizes to time (the first two are also checked)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="clips per timed training step")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed steps per median")
    parser.add_argument("--compile", nargs="*", choices=VIDEO_DIT_SIZES, default=None, metavar="SIZE",
                        help="also time these sizes through torch.compile (tens of seconds of compiling each) "
                             "(default: none)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (a smoke test, not a result)")
    return parser


def main(argv=None) -> int:
    args = parse_or_report(build_parser(), argv)
    if args is None:
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("videodiff.bench_gpu: no CUDA device here; this benchmark needs a GPU "
              "(or --device cpu --quick for a smoke test of the script)", file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.quick:
        print("videodiff.bench_gpu: --device cpu is only for the --quick smoke test; the CPU's figures are "
              "in python -m videodiff.bench", file=sys.stderr)
        return 2
    sizes = ["tiny"] if args.quick else args.sizes
    batch, repeats = (2, 1) if args.quick else (args.batch_size, args.repeats)
    report = run_checks(Path(args.out), sizes, batch, repeats, device, args.compile or [], args.quick)
    failed = [name for name, entries in report["checks"].items() if not all(entry["passed"] for entry in entries)]
    print(f"wrote {Path(args.out) / 'gpu_bench.json'}; " + (f"FAILED: {failed}" if failed else "all checks passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
