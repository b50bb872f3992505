"""``make bench`` for the image layer: the image layer's speed and quality targets, measured on this machine.

1. The whole chain with the default configuration — VAE, then the latent DiT — and its wall time
   (target ≤ 10 minutes on 2 cores). Then, on held-out images:
   - VAE reconstruction PSNR (target ≥ 28 dB);
   - classifier-free guidance at s = 0, 1, 3, 5, 7 as the sampler draws by default (guidance rescale
     φ = GUIDANCE_RESCALE at s > 1): accuracy of the evaluation classifier against the requested class
     (target ≥ 95% at s = 3) and Fréchet distance (target ≤ 4 × the real images' own), next to real
     images' values; the same without rescale at s = 3, 5, 7; both with autoguidance; classifier guidance
     with a noisy-latent classifier.
2. Latent against pixel diffusion with the same DiT size: accuracy (s = 3) over training wall time.
3. The DiT training step's FLOP rate (6 · parameters · tokens + attention) against the fp32 matmul
   rate measured in the same run (target ≥ 75%); medians of ``--repeats`` timings.

    python -m imagediff.bench [--out runs/bench/imagediff] [--repeats 3] [--quick]

``--quick`` runs the same code with tiny settings (a smoke test of the bench itself, not a result).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from imagediff.classifier import (
    EvaluationClassifierConfig, EvaluationRunConfig, NoisyClassifierRunConfig, evaluation_classifier,
    train_noisy_classifier,
)
from imagediff.data import make_dataset
from imagediff.dit import DiT, training_flops
from imagediff.evaluation import Grader, balanced_request, format_sweep, guidance_sweep
from imagediff.metrics import psnr
from imagediff.pipeline import (
    AUTOGUIDANCE_SCALE, GUIDANCE_RESCALE, DiffusionRunConfig, VAERunConfig, decode_latents, encode_images,
    train_image_diffusion, train_vae,
)
from imagediff.plots import columns_per_class_grid, save_curves, save_image_grid
from toydiff.cli import OneLineParser, parse_or_report, positive_int
from toydiff.compilation import compile_or_eager, with_eager_fallback
from toydiff.losses import DiffusionObjective
from toydiff.schedules import make_schedule
from toydiff.training import autocast_for, resolved_precision

CURVE_SCALE = 3.0          # the guidance scale of the accuracy-over-time curves
HELD_OUT_SEED = 300        # PSNR images: a seed no model trained on


def median_seconds(function, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved_medians(functions: dict, rounds: int, per_round: int = 4, warmup: int = 2) -> dict:
    """{name: median seconds} of each function, timed in turns: ``rounds`` rounds, each calling every
    function ``per_round`` times in a row (after ``warmup`` untimed calls of each).

    On a shared machine whose speed drifts by a fifth within minutes, two medians timed one after the other
    can disagree by more than the difference they are meant to show (a compiled step against an eager
    one, a step against the matmul rate it is a share of). Timed in turns, the drift slows every function
    alike, and the ratios of the medians hold.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            for _ in range(per_round):
                started = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def matmul_function(size: int = 1024, device="cpu", dtype: torch.dtype = torch.float32):
    """(function, FLOPs): a square matrix product of size n (2 n³ FLOPs) to time, waiting for the device
    on a GPU (CUDA runs asynchronously)."""
    device = torch.device(device)
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    return synchronized(lambda: torch.mm(a, b), device), 2 * size**3


def matmul_rate(size: int = 1024, repeats: int = 7, device="cpu", dtype: torch.dtype = torch.float32) -> float:
    """Median FLOP/s of a square matrix product (2 n³ FLOPs): fp32 on the current CPU threads by default;
    on a GPU each timing waits for the device (CUDA runs asynchronously)."""
    function, flops = matmul_function(size, device, dtype)
    return flops / median_seconds(function, repeats)


def synchronized(function, device):
    """``function`` followed by waiting for ``device`` to finish, so that a wall-clock timing of it
    measures the work and not only its launch (a no-op wrapper on a CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return function

    def run():
        result = function()
        torch.cuda.synchronize(device)
        return result

    return run


def dit_training_rate(config: DiffusionRunConfig, sample_shape, num_classes: int, repeats: int,
                      compile: Optional[bool] = None, precision: Optional[str] = None) -> dict:
    """Time full training steps (forward, backward, AdamW) of the run's DiT; FLOPs from training_flops.

    The step is timed in turns with the fp32 matmul (``interleaved_medians``, ``repeats`` rounds of one call each), whose
    rate is returned as "matmul_rate", so that the step's share of it is not the machine's drift between
    two timings. compile: the step through torch.compile (toydiff.compilation); None: as the recipe trains
    (config.train.compile). precision: the forward's mixed precision (toydiff.training.autocast_for); None:
    as the recipe trains (config.train.mixed_precision). The matmul stays fp32, the rate the step's share is
    of; a step under bf16 autocast is also timed in turns with a bf16 matmul ("matmul_bf16_rate").
    A self-conditioned run (share p of its batches take an extra forward pass without gradients) is timed
    both ways; its step is the average (1 - p) · plain + p · self-conditioned, and its FLOPs count the
    extra forward pass (a third of a step's matrix products) in the same share.
    """
    dit_config = replace(config.dit, in_channels=sample_shape[0], input_size=tuple(sample_shape[1:]),
                         num_classes=num_classes, self_condition=config.self_condition > 0)
    model = DiT(dit_config)
    compile = config.train.compile if compile is None else compile
    precision = resolved_precision(config.train.mixed_precision if precision is None else precision, "cpu")
    forward = compile_or_eager(model, enabled=compile)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    schedule = make_schedule(config.schedule, config.num_timesteps)
    batch = config.train.batch_size
    data = (torch.randn(batch, *sample_shape), torch.randint(0, num_classes, (batch,)))
    extra_inputs = ("angles",) if config.dit.angle_conditioning else ()
    if config.dit.angle_conditioning:
        data += (torch.rand(batch) * 2 * math.pi,)

    def make_step(self_condition: float):
        objective = DiffusionObjective(schedule, config.prediction_type, config.weighting,
                                       label_dropout=config.label_dropout, null_label=model.null_label,
                                       self_condition=self_condition, extra_inputs=extra_inputs)

        def one_step():
            with autocast_for(precision, "cpu"):
                loss, _ = objective(forward, data)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        # a backward that fails to compile falls back to eager (toydiff.compilation.with_eager_fallback)
        return lambda: with_eager_fallback(forward, one_step)

    share = config.self_condition
    matmul, matmul_flops = matmul_function()
    steps = {"plain": make_step(0.0), "matmul": matmul}
    if share > 0:
        steps["self_conditioned"] = make_step(1.0)
    if precision == "bf16":
        steps["matmul_bf16"] = matmul_function(dtype=torch.bfloat16)[0]
    medians = interleaved_medians(steps, repeats, per_round=1, warmup=3 if compile else 2)
    seconds = medians["plain"] if share == 0 else (1 - share) * medians["plain"] + share * medians["self_conditioned"]
    flops = training_flops(dit_config, batch) * (1 + share / 3)
    return {"batch_size": batch, "tokens": dit_config.num_tokens, "step_seconds": seconds, "step_flops": flops,
            "flop_rate": flops / seconds, "matmul_rate": matmul_flops / medians["matmul"],
            "compiled": bool(getattr(forward, "compiled", False)), "precision": precision,
            **({"matmul_bf16_rate": matmul_flops / medians["matmul_bf16"]} if precision == "bf16" else {})}


class AccuracyCurve:
    """An ``evaluate`` hook: accuracy and Fréchet distance at CURVE_SCALE, and the time it took."""

    def __init__(self, grader: Grader, per_class: int, num_steps: int):
        self.grader, self.per_class, self.num_steps = grader, per_class, num_steps
        self.seconds = 0.0

    def __call__(self, run, step) -> dict:
        started = time.perf_counter()
        labels = balanced_request(len(run.class_names), self.per_class)
        # Plain guidance (no rescale), so that the curve compares with those recorded before the default.
        images = run.sample(labels=labels, guidance_scale=CURVE_SCALE, rescale=0.0, num_steps=self.num_steps,
                            seed=step)
        score = self.grader.score(images, labels)
        self.seconds += time.perf_counter() - started
        return score


def curve_points(history) -> tuple[list, list, list]:
    points = [(h["seconds"], h["evaluation"]["accuracy"], h["evaluation"]["frechet_distance"])
              for h in history if "evaluation" in h]
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


def run_bench(out: Path, repeats: int, quick: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__}}
    options, size = ({"shapes": ["ring", "cross"], "colours": ["red", "blue"]}, 16) if quick else ({}, 32)

    vae_config = VAERunConfig(image_size=size, dataset_options=options)
    latent_config = DiffusionRunConfig(image_size=size, dataset_options=options,
                                       vae_checkpoint=str(out / "vae" / "checkpoint.pt"))
    grader_config = EvaluationRunConfig(image_size=size, dataset_options=options)
    noisy_config = NoisyClassifierRunConfig()
    per_class, curve_per_class, sample_steps, evaluate_every = 12, 4, 50, 500
    if quick:
        for config in (vae_config, latent_config, grader_config):
            config.num_train_images = 1000
        vae_config.train = replace(vae_config.train, steps=60)
        latent_config.train = replace(latent_config.train, steps=100, batch_size=32, log_every=25, compile=False)
        grader_config.train = replace(grader_config.train, steps=60)
        grader_config.classifier = EvaluationClassifierConfig(width=8)
        noisy_config.train = replace(noisy_config.train, steps=30)
        per_class, curve_per_class, sample_steps, evaluate_every = 4, 2, 10, 50
    for config in (vae_config, latent_config, grader_config, noisy_config):
        config.train.progress = False

    # -- the grader (not part of the chain: it only measures) -----------------------------------
    started = time.perf_counter()
    grader_net = evaluation_classifier(out / "evaluation" / "checkpoint.pt", grader_config)
    num_classes = make_dataset("shapes", 1, image_size=size, **options).num_classes
    # As many real images as the largest set of samples scored: every Fréchet distance has a real-image
    # reference of its own size (see Grader).
    grader = Grader.build(grader_net, num_images=per_class * num_classes, image_size=size, **options)
    report["evaluation_classifier"] = {"seconds": time.perf_counter() - started, "reference": grader.reference}
    print(f"evaluation classifier: {grader.num_images} real held-out images score {grader.reference}", flush=True)

    # -- 1. the chain: VAE, then the latent DiT ------------------------------------------------
    started = time.perf_counter()
    vae_run = train_vae(vae_config, out_dir=out / "vae", resume=False)
    vae_seconds = time.perf_counter() - started
    held_out = make_dataset("shapes", 200 if quick else 1000, seed=HELD_OUT_SEED, image_size=size, **options).images
    values = psnr(decode_latents(vae_run.vae, encode_images(vae_run.vae, held_out)), held_out)
    report["vae"] = {"seconds": vae_seconds, "train_seconds": vae_run.seconds, "steps": vae_config.train.steps,
                     "psnr_mean_db": values.mean().item(), "psnr_median_db": values.median().item(),
                     "psnr_target_db": 28.0, "latent_scale": float(vae_run.vae.latent_scale)}
    print(f"VAE: {vae_seconds:.0f} s, PSNR {values.mean().item():.2f} dB (target 28)", flush=True)

    curve = AccuracyCurve(grader, curve_per_class, 25 if not quick else 5)
    started = time.perf_counter()
    latent = train_image_diffusion(latent_config, out_dir=out / "latent", resume=False, vae=vae_run.vae,
                                   evaluate=curve, evaluate_every=evaluate_every)
    latent_seconds = time.perf_counter() - started - curve.seconds
    chain = vae_seconds + latent_seconds
    report["chain"] = {"seconds": chain, "target_seconds": 600.0, "vae_seconds": vae_seconds,
                       "latent_dit_seconds": latent_seconds, "latent_dit_train_seconds": latent.seconds,
                       "latent_dit_steps": latent_config.train.steps}
    print(f"chain (VAE + latent DiT): {chain:.0f} s (target 600)", flush=True)

    rows = guidance_sweep(latent, grader, (0, 1, 3, 5, 7), per_class=per_class, num_steps=sample_steps)
    plain = guidance_sweep(latent, grader, (3, 5, 7), per_class=per_class, num_steps=sample_steps, rescale=0.0)
    report["classifier_free_guidance"] = {"rows": rows, "rescale": GUIDANCE_RESCALE, "rows_without_rescale": plain,
                                          "target_accuracy_at_3": 0.95,
                                          "target_frechet_distance_at_3": 4 * grader.reference["frechet_distance"],
                                          "samples_per_scale": per_class * len(latent.class_names),
                                          "ddim_steps": sample_steps}
    # The same sweep with autoguidance by the run's early snapshot (the default sampling of a run that has one).
    autoguided = guidance_sweep(latent, grader, (0, 1, 2, 3, 5, 7), per_class=per_class, num_steps=sample_steps,
                                guide_scale=AUTOGUIDANCE_SCALE)
    autoguided_plain = guidance_sweep(latent, grader, (3,), per_class=per_class, num_steps=sample_steps,
                                      guide_scale=AUTOGUIDANCE_SCALE, rescale=0.0)
    report["classifier_free_guidance"]["autoguided"] = {"guide_scale": AUTOGUIDANCE_SCALE,
                                                        "guide_step": latent_config.guide_step(), "rows": autoguided,
                                                        "rows_without_rescale": autoguided_plain}
    print(format_sweep(rows, grader.reference, f"CFG scale (rescale {GUIDANCE_RESCALE:g} at s > 1)"), flush=True)
    print(format_sweep(plain, None, "CFG, no rescale"), flush=True)
    print(format_sweep(autoguided, grader.reference, f"CFG, autoguided {AUTOGUIDANCE_SCALE:g}"), flush=True)
    print(format_sweep(autoguided_plain, None, "autoguided, no rescale"), flush=True)
    labels = balanced_request(len(latent.class_names), 1)
    for scale in (0, 1, 3, 7):
        save_image_grid(latent.sample(labels=labels, guidance_scale=scale, num_steps=sample_steps),
                        out / f"latent_cfg_{scale}.png", columns=columns_per_class_grid(latent.class_names),
                        title=f"latent DiT, one sample per class (rows: shapes), CFG s = {scale}")
    save_image_grid(latent.sample(labels=labels, guidance_scale=3, guide_scale=AUTOGUIDANCE_SCALE,
                                  num_steps=sample_steps),
                    out / "latent_cfg_3_autoguided.png", columns=columns_per_class_grid(latent.class_names),
                    title=f"latent DiT, CFG s = 3 and autoguidance w = {AUTOGUIDANCE_SCALE:g} by its early snapshot")

    started = time.perf_counter()
    noisy = train_noisy_classifier(latent, noisy_config, out_dir=out / "noisy", resume=False)
    classifier_seconds = time.perf_counter() - started
    guided = guidance_sweep(latent, grader, (0, 1, 3, 10), per_class=per_class, classifier=noisy,
                            num_steps=sample_steps)
    report["classifier_guidance"] = {"rows": guided, "classifier_train_seconds": classifier_seconds}
    print(format_sweep(guided, grader.reference, "classifier scale"), flush=True)

    # -- 2. the same DiT on pixels, for about the same training time ---------------------------
    pixel_config = replace(latent_config, space="pixel")
    pixel_config.dit = replace(latent_config.dit)
    pixel_config.train = replace(latent_config.train)
    pixel_shape = (3, size, size)
    pixel_rate = dit_training_rate(pixel_config, pixel_shape, len(latent.class_names), repeats)
    # As many steps as fit in the latent DiT's training time, logged 4 times and evaluated twice.
    log_every = max(1, int(latent.seconds / pixel_rate["step_seconds"]) // 4)
    steps = 4 * log_every
    pixel_config.train = replace(pixel_config.train, steps=steps, log_every=log_every,
                                 warmup_steps=min(pixel_config.train.warmup_steps, steps // 4))
    pixel_curve = AccuracyCurve(grader, curve_per_class, 25 if not quick else 5)
    pixel = train_image_diffusion(pixel_config, out_dir=out / "pixel", resume=False, evaluate=pixel_curve,
                                  evaluate_every=2 * log_every)
    latent_curve, pixel_points = curve_points(latent.history), curve_points(pixel.history)
    # The step budget came from a bare timing loop; the seconds on the curves are the real loop's.
    report["latent_vs_pixel"] = {
        "guidance_scale": CURVE_SCALE, "samples_per_point": curve_per_class * len(latent.class_names),
        "latent": {"train_seconds": latent_curve[0], "accuracy": latent_curve[1], "frechet_distance": latent_curve[2],
                   "steps": latent_config.train.steps},
        "pixel": {"train_seconds": pixel_points[0], "accuracy": pixel_points[1], "frechet_distance": pixel_points[2],
                  "steps": steps, "train_seconds_total": pixel.seconds,
                  "step_seconds_bare_loop": pixel_rate["step_seconds"]},
    }
    save_curves({"latent DiT": latent_curve[:2], "pixel DiT (same size)": pixel_points[:2]},
                out / "latent_vs_pixel.png", "training time (s)", f"accuracy at CFG s = {CURVE_SCALE:g}",
                "Latent vs pixel diffusion, same DiT", reference=grader.reference["accuracy"])
    print(f"latent curve {list(zip(*latent_curve[:2]))}\npixel curve {list(zip(*pixel_points[:2]))}", flush=True)

    # -- 3. FLOP rate of a training step against the matmul rate --------------------------------
    # Each step timed in turns with the matmul (dit_training_rate): its share is of the rate measured beside it.
    latent_shape = tuple(encode_images(vae_run.vae, held_out[:1]).shape[1:])
    rate = dit_training_rate(latent_config, latent_shape, len(latent.class_names), 3 * repeats)
    matmul = rate["matmul_rate"]
    eager = dit_training_rate(latent_config, latent_shape, len(latent.class_names), 3 * repeats, compile=False)
    eager_share = eager["flop_rate"] / eager["matmul_rate"]  # of the matmul rate timed beside the eager step
    report["flop_rate"] = {"matmul_fp32_flops": matmul, "latent_dit": rate, "pixel_dit": pixel_rate,
                           "latent_dit_eager": eager, "latent_eager_fraction_of_matmul": eager_share,
                           "latent_fraction_of_matmul": rate["flop_rate"] / matmul,
                           "pixel_fraction_of_matmul": pixel_rate["flop_rate"] / pixel_rate["matmul_rate"],
                           "target_fraction": 0.75}
    bf16 = rate["precision"] == "bf16"
    print(f"fp32 matmul {matmul / 1e9:.1f} GFLOP/s; latent DiT step {rate['flop_rate'] / 1e9:.1f} GFLOP/s "
          f"({rate['flop_rate'] / matmul:.0%}{', compiled' if rate['compiled'] else ''}"
          f"{', bf16 autocast' if bf16 else ''}; eager {eager_share:.0%} of {eager['matmul_rate'] / 1e9:.1f}); "
          f"pixel DiT step {pixel_rate['flop_rate'] / 1e9:.1f} GFLOP/s "
          f"({pixel_rate['flop_rate'] / pixel_rate['matmul_rate']:.0%} of {pixel_rate['matmul_rate'] / 1e9:.1f}); "
          f"target 75%", flush=True)
    if bf16:  # what the bf16 products buy: the same step in fp32, and the step against the bf16 matmul
        fp32 = dit_training_rate(latent_config, latent_shape, len(latent.class_names), 3 * repeats, precision="no")
        report["flop_rate"]["latent_dit_fp32"] = fp32
        report["flop_rate"]["latent_fp32_fraction_of_matmul"] = fp32["flop_rate"] / fp32["matmul_rate"]
        report["flop_rate"]["latent_fraction_of_bf16_matmul"] = rate["flop_rate"] / rate["matmul_bf16_rate"]
        print(f"latent DiT step in fp32: {fp32['step_seconds'] * 1e3:.1f} ms against {rate['step_seconds'] * 1e3:.1f} "
              f"ms under bf16 autocast, {fp32['flop_rate'] / fp32['matmul_rate']:.0%} of the fp32 matmul "
              f"{fp32['matmul_rate'] / 1e9:.1f} GFLOP/s; the bf16 step is "
              f"{rate['flop_rate'] / rate['matmul_bf16_rate']:.0%} of the bf16 matmul "
              f"{rate['matmul_bf16_rate'] / 1e9:.1f} GFLOP/s", flush=True)
    return report


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m imagediff.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/imagediff", help="output folder of report.json and the runs")
    parser.add_argument("--repeats", type=positive_int, default=3, help="timings per median")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of the bench itself")
    return parser


def main(argv=None) -> int:
    args = parse_or_report(build_parser(), argv)
    if args is None:
        return 2
    if not torch.cuda.is_available():
        torch.set_num_threads(min(2, os.cpu_count() or 1))  # the targets are stated for 2 cores
    out = Path(args.out)
    started = time.perf_counter()
    report = run_bench(out, args.repeats, args.quick)
    report["command"] = "python -m imagediff.bench" + (" --quick" if args.quick else "")
    report["bench_seconds"] = time.perf_counter() - started
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
