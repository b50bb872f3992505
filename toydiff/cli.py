"""Command line: ``python -m toydiff train|sample|data|plot|demo``.

    python -m toydiff train --dataset spiral --out runs/spiral
    python -m toydiff sample --checkpoint runs/spiral/checkpoint.pt --sampler ddim --steps 50 \
        --num-samples 4000 --out samples.npy
    python -m toydiff data --dataset spiral --num-samples 4000 --seed 1 --out data.npy
    python -m toydiff plot --checkpoint runs/spiral/checkpoint.pt --out runs/spiral/figures

A bad argument ends the program with status 2 and one line saying what was wrong.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from toydiff.checkpoints import CheckpointError
from toydiff.data import DATASETS, get_dataset, make_dataset
from toydiff.distributed import DEVICE_CHOICES, leave_process_group, pick_device
from toydiff.experiment import ToyRunConfig
from toydiff.losses import WEIGHTINGS
from toydiff.parameterisation import PREDICTION_TYPES
from toydiff.samplers import SPACINGS
from toydiff.schedules import SCHEDULE_KINDS
from toydiff.training import PRECISIONS


class UsageError(Exception):
    """A problem with what the user asked for: printed as one line, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default after its help text, as argparse-based tools do, except
    where there is no value to show: a flag (off unless given), or an option whose default is None,
    whose help says in words what happens without it."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit status 2) and whose help shows defaults."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):  # one line instead of usage + message
        raise UsageError(f"{message} (see {self.prog} --help)")


def _integer_at_least(text: str, least: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (a count of steps, videos, pairs)."""
    return _integer_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0 (a number of frames that may be none)."""
    return _integer_at_least(text, 0, "an integer >= 0")


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (a guidance scale, a learning rate, a loss weight)."""
    value = finite_float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def finite_float(text: str) -> float:
    """An argparse type: any finite number (e.g. a mean that may be negative)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return value


def existing_file(text: str) -> Path:
    """An argparse type: the path of a file that exists (a checkpoint, a VAE), refused before any work."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def positive_float(text: str) -> float:
    """An argparse type: a number > 0 (a spread, a rate)."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def unit_fraction(text: str) -> float:
    """An argparse type: a number in [0, 1] (a share, a guidance rescale φ, a sampler's η)."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def device_request(text: str) -> str:
    """An argparse type: a device this machine has (toydiff.distributed.pick_device), refused before any work."""
    try:
        pick_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def add_device_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--device`` on a command: ``what`` says what runs there ("the model trains", "the model samples")."""
    parser.add_argument("--device", type=device_request, default="auto",
                        help=f"where {what}: {DEVICE_CHOICES} (auto: cuda, then mps, then cpu)")


def build_parser() -> argparse.ArgumentParser:
    recipe = ToyRunConfig()  # the defaults of `train` are the recipe's
    parser = OneLineParser(prog="toydiff", description="Diffusion on 2-D point clouds: train, sample, plot.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    train = commands.add_parser("train", help="train a denoiser; writes OUT/checkpoint.pt (resumes if present)")
    train.add_argument("--dataset", default=recipe.dataset, choices=sorted(DATASETS), help="the 2-D data set to learn")
    train.add_argument("--out", required=True, help="output folder for checkpoint.pt")
    train.add_argument("--steps", type=positive_int, default=recipe.train.steps, help="training steps")
    train.add_argument("--batch-size", type=positive_int, default=recipe.train.batch_size,
                       help="points per training step")
    train.add_argument("--learning-rate", type=float, default=recipe.train.learning_rate,
                       help="peak AdamW learning rate (after warm-up, before the cosine decay)")
    train.add_argument("--seed", type=int, default=recipe.train.seed, help="seed of the initial weights and batches")
    train.add_argument("--schedule", choices=SCHEDULE_KINDS, default=recipe.schedule, help="the noise schedule β_t")
    train.add_argument("--num-timesteps", type=positive_int, default=recipe.num_timesteps,
                       help="T, the number of diffusion steps")
    train.add_argument("--zero-terminal-snr", action="store_true",
                       help="rescale the schedule so that ᾱ_T = 0 (pure noise at t = T)")
    train.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=recipe.prediction_type,
                       help="what the network predicts: the noise ε, the clean x0, or the velocity v")
    train.add_argument("--weighting", choices=WEIGHTINGS, default=recipe.weighting,
                       help="how the loss weighs the timesteps (min_snr: Hang et al. 2023)")
    train.add_argument("--unconditional", action="store_true", help="train without class labels")
    add_device_option(train, "the model trains")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    train.add_argument("--classifier", action="store_true",
                       help="also train a noisy classifier (OUT/classifier.pt) for classifier guidance")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="draw samples from a checkpoint into a .npy file (N, 2)")
    sample.add_argument("--checkpoint", required=True, help="a checkpoint of train (the file or its folder)")
    sample.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"), help="the sampling algorithm")
    sample.add_argument("--steps", type=positive_int, default=50, help="DDIM steps (DDPM always uses all T)")
    sample.add_argument("--eta", type=non_negative_float, default=0.0,
                        help="DDIM noise, in [0, 1] (0 deterministic, 1 as much noise as DDPM)")
    sample.add_argument("--spacing", default="trailing", choices=SPACINGS,
                        help="how the DDIM steps are spread over 0..T-1")
    sample.add_argument("--num-samples", type=positive_int, default=4000, help="points to draw")
    sample.add_argument("--label", type=int,
                        help="class index to ask for, e.g. the spiral arm (default: none, draw from p(x))")
    sample.add_argument("--guidance", type=non_negative_float, default=1.0,
                        help="guidance scale s: 0 unconditional, 1 conditional, >1 sharper")
    sample.add_argument("--classifier",
                        help="classifier checkpoint: use classifier guidance instead of CFG (default: none, CFG)")
    sample.add_argument("--null-label", action="store_true",
                        help="without --label, sample the model's null-label (unconditional) pass instead of "
                             "drawing each point's class from the data's class frequencies first")
    sample.add_argument("--seed", type=int, default=0, help="seed of the starting noise (same seed, same samples)")
    add_device_option(sample, "the model samples (the same seed draws other points on another device)")
    sample.add_argument("--out", required=True, help="output .npy file")

    data = commands.add_parser("data", help="write fresh data points to a .npy file (N, 2)")
    data.add_argument("--dataset", default="spiral", choices=sorted(DATASETS), help="the 2-D data set to draw")
    data.add_argument("--num-samples", type=positive_int, default=4000, help="points to draw")
    data.add_argument("--seed", type=int, default=0, help="seed of the draw")
    data.add_argument("--out", required=True, help="output .npy file")
    data.add_argument("--labels-out", help="also write the class labels (N,) to this .npy file (default: not written)")

    plot = commands.add_parser("plot", help="write figures: of a data set, or of a trained checkpoint")
    source = plot.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="plot this trained model (one of --checkpoint or --dataset)")
    source.add_argument("--dataset", choices=sorted(DATASETS),
                        help="plot this data set (one of --checkpoint or --dataset)")
    plot.add_argument("--out", required=True, help="output folder")

    demo = commands.add_parser("demo", help="train the spiral model, measure it, write its figures")
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


# ----------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------

def _recipe(args) -> ToyRunConfig:
    """The recipe with the command line's values (whose defaults are the recipe's own)."""
    config = ToyRunConfig(dataset=args.dataset, schedule=args.schedule, num_timesteps=args.num_timesteps,
                          zero_terminal_snr=args.zero_terminal_snr, prediction_type=args.prediction_type,
                          weighting=args.weighting, conditional=not args.unconditional)
    train = config.train
    train.steps, train.batch_size, train.learning_rate = args.steps, args.batch_size, args.learning_rate
    train.seed, train.device, train.progress = args.seed, args.device, not args.quiet
    return config


def command_train(args) -> None:
    from toydiff.experiment import train_noisy_classifier, train_toy_model

    config = _recipe(args)
    out = Path(args.out)
    run = train_toy_model(config, out_dir=out, resume=not args.fresh)
    print(f"trained {config.dataset} for {config.train.steps} steps in {run.seconds:.1f} s; "
          f"final loss {run.history[-1]['loss']:.4f}; wrote {out / 'checkpoint.pt'}")
    if args.classifier:
        train_noisy_classifier(config, out_dir=out)
        print(f"wrote {out / 'classifier.pt'}")


def command_sample(args) -> None:
    from toydiff.experiment import load_noisy_classifier, load_toy_model

    if args.eta > 1:
        raise UsageError(f"--eta must lie in [0, 1], got {args.eta}")
    device = pick_device(args.device)
    run = load_toy_model(args.checkpoint, device=device)
    classifier = load_noisy_classifier(args.classifier, device=device) if args.classifier else None
    if (args.guidance != 1.0 or classifier is not None) and args.label is None:
        raise UsageError("guidance needs a --label to steer towards")
    if args.steps > run.schedule.num_timesteps:
        raise UsageError(f"--steps {args.steps} exceeds the model's {run.schedule.num_timesteps} training timesteps")
    started = time.perf_counter()
    points = run.sample(args.num_samples, sampler=args.sampler, num_steps=args.steps, eta=args.eta,
                        spacing=args.spacing, label=args.label, guidance_scale=args.guidance,
                        classifier=classifier, seed=args.seed, null_label=args.null_label)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, points.cpu().numpy())
    print(f"wrote {len(points)} samples to {out} in {time.perf_counter() - started:.2f} s")


def command_data(args) -> None:
    points, labels = make_dataset(args.dataset, args.num_samples, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, points.numpy())
    if args.labels_out:
        np.save(args.labels_out, labels.numpy())
    print(f"wrote {len(points)} {args.dataset} points to {out} (classes: {', '.join(get_dataset(args.dataset).class_names)})")


def command_plot(args) -> None:
    from toydiff import plots

    out = Path(args.out)
    if args.dataset:
        written = plots.write_data_figures(args.dataset, out)
    else:
        from toydiff.experiment import load_toy_model

        written = plots.write_model_figures(load_toy_model(args.checkpoint), out)
    for path in written:
        print(f"wrote {path}")


def command_demo(args) -> None:
    from toydiff.demo import run_demo

    run_demo(Path(args.out), progress=not args.quiet)


COMMANDS = {"train": command_train, "sample": command_sample, "data": command_data,
            "plot": command_plot, "demo": command_demo}


def autoguidance_scale(asked: Optional[float], run) -> float:
    """The --autoguidance scale for a trained run that may hold a guide (``run.guide``, ``run.default_guide_scale``,
    as imagediff's and videodiff's models do): the run's default when not given, refused when the run has none."""
    if asked is None:
        return run.default_guide_scale
    if asked != 1 and run.guide is None:
        raise UsageError(f"--autoguidance {asked:g}: this run kept no guide (trained with guide_fraction=0 or before "
                         "guides existed); use --autoguidance 1")
    return asked


def add_precision_options(parser: argparse.ArgumentParser, default: str) -> None:
    """``--precision auto|bf16|no`` (TrainConfig.mixed_precision, toydiff.training.autocast_for) and ``--bf16``,
    short for ``--precision bf16``, on a train command whose recipe trains with ``default``."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="mixed precision of the training forward: bf16 autocast, fp32 ('no'), or 'auto': bf16 "
                             "where the device's bf16 products are native (a GPU; a CPU with AMX or AVX-512 BF16)")
    parser.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                        help="short for --precision bf16")


def parse_or_report(parser: OneLineParser, argv=None) -> Optional[argparse.Namespace]:
    """Parse a command line without subcommands (a benchmark's): the arguments, or None after printing the error
    as one line, for the caller to exit with status 2 (run_cli does the same for the layers' command lines)."""
    try:
        return parser.parse_args(argv)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return None


def print_log_entry(entry: dict) -> None:
    """The ``on_log`` of the image and video layers' train commands: one line per history entry."""
    print(f"step {entry['step']:>6}  loss {entry['loss']:.4f}  {entry.get('seconds', 0):.0f} s", flush=True)


def run_cli(prog: str, parser: argparse.ArgumentParser, commands: dict, argv=None) -> int:
    """Parse ``argv`` and run the chosen command; any user error becomes one line and status 2.

    Shared by every layer's command line (toydiff, imagediff, …), so they all fail the same way.
    """
    try:
        args = parser.parse_args(argv)
        commands[args.command](args)
        leave_process_group()  # under torchrun: every rank done, so the group is torn down in order
    except (UsageError, CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"{prog}: interrupted{': ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130
    return 0


def main(argv=None) -> int:
    return run_cli("toydiff", build_parser(), COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
