"""The command line: the documented commands work, every bad argument exits 2 with one clear line, and
every option of every command line (toydiff, imagediff, videodiff) says in --help what it does and its default."""
import argparse
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from imagediff.cli import build_parser as imagediff_parser
from toydiff.cli import build_parser as toydiff_parser
from videodiff.cli import build_parser as videodiff_parser
from toydiff.cli import main


def run_cli(*args):
    completed = subprocess.run([sys.executable, "-m", "toydiff", *args], capture_output=True, text=True, timeout=600)
    return completed.returncode, completed.stdout, completed.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    code = main(["train", "--dataset", "spiral", "--out", str(out), "--steps", "150", "--batch-size", "128",
                 "--quiet"])
    assert code == 0
    return out


def test_train_sample_and_data_write_what_they_promise(trained, tmp_path):
    assert (trained / "checkpoint.pt").exists()
    samples = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(trained / "checkpoint.pt"), "--sampler", "ddim", "--steps", "10",
                 "--num-samples", "300", "--out", str(samples)]) == 0
    points = np.load(samples)
    assert points.shape == (300, 2) and np.isfinite(points).all()
    data = tmp_path / "d.npy"
    assert main(["data", "--dataset", "spiral", "--num-samples", "400", "--seed", "1", "--out", str(data)]) == 0
    assert np.load(data).shape == (400, 2)
    # The same seed gives the same samples.
    again = tmp_path / "s2.npy"
    main(["sample", "--checkpoint", str(trained / "checkpoint.pt"), "--steps", "10", "--num-samples", "300",
          "--out", str(again)])
    assert np.array_equal(np.load(again), points)


def test_guided_sampling_of_a_label(trained, tmp_path):
    out = tmp_path / "arm.npy"
    assert main(["sample", "--checkpoint", str(trained), "--steps", "10", "--num-samples", "50", "--label", "1",
                 "--guidance", "3", "--out", str(out)]) == 0
    assert np.load(out).shape == (50, 2)


@pytest.mark.parametrize("args,message", [
    (["data", "--dataset", "mnist", "--out", "x.npy"], "invalid choice: 'mnist'"),
    (["sample", "--checkpoint", "c.pt", "--steps", "-5", "--out", "x.npy"], "expected a positive integer, got -5"),
    (["sample", "--checkpoint", "nowhere/checkpoint.pt", "--out", "x.npy"], "no checkpoint at nowhere/checkpoint.pt"),
    (["train", "--out", "x", "--steps", "zero"], "expected a positive integer"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(args, message):
    code, stdout, stderr = run_cli(*args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in stderr


def test_corrupt_checkpoint_and_impossible_requests(trained, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    code, _, stderr = run_cli("sample", "--checkpoint", str(corrupt), "--out", str(tmp_path / "x.npy"))
    assert code == 2 and "not a readable checkpoint" in stderr and len(stderr.strip().splitlines()) == 1
    code, _, stderr = run_cli("sample", "--checkpoint", str(trained), "--steps", "5000", "--out", str(tmp_path / "x.npy"))
    assert code == 2 and "exceeds" in stderr
    code, _, stderr = run_cli("sample", "--checkpoint", str(trained), "--label", "7", "--out", str(tmp_path / "x.npy"))
    assert code == 2 and "out of range" in stderr
    code, _, stderr = run_cli("sample", "--checkpoint", str(trained), "--guidance", "3", "--out", str(tmp_path / "x.npy"))
    assert code == 2 and "needs a --label" in stderr


def test_guidance_asked_of_an_unconditional_model(tmp_path):
    assert main(["train", "--out", str(tmp_path), "--steps", "5", "--unconditional", "--quiet"]) == 0
    code, _, stderr = run_cli("sample", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--label", "0",
                              "--guidance", "2", "--out", str(tmp_path / "x.npy"))
    assert code == 2 and "unconditional" in stderr and len(stderr.strip().splitlines()) == 1


def test_help_lists_the_commands():
    code, stdout, _ = run_cli("--help")
    assert code == 0
    for command in ("train", "sample", "data", "plot"):
        assert command in stdout


# ---------------------------------------------------------------------------------------------
#                                  --help of both command lines
# ---------------------------------------------------------------------------------------------


def _options(parser: argparse.ArgumentParser):
    """(command, its parser, option, whether a required mutually exclusive group holds it), for every
    option of every subcommand of ``parser``."""
    (subcommands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    for command, subparser in subcommands.choices.items():
        required_groups = [group for group in subparser._mutually_exclusive_groups if group.required]
        for action in subparser._actions:
            yield command, subparser, action, any(action in group._group_actions for group in required_groups)


@pytest.mark.parametrize("build_parser", [toydiff_parser, imagediff_parser, videodiff_parser],
                         ids=["toydiff", "imagediff", "videodiff"])
def test_every_option_of_every_command_says_what_it_does_and_its_default(build_parser):
    parser = build_parser()
    (subcommands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    assert all(choice.help for choice in subcommands._choices_actions)  # each command in `prog --help`
    checked = 0
    for command, subparser, action, in_required_group in _options(parser):
        _check_help(f"{parser.prog} {command} {'/'.join(action.option_strings)}", subparser, action, in_required_group)
        checked += 1
    assert checked > 30


def _check_help(where: str, parser: argparse.ArgumentParser, action, in_required_group: bool = False) -> None:
    """The option has help text, and the text --help prints for it says its default (a flag is off unless
    given; an option the user must give has none)."""
    assert action.help and action.help != argparse.SUPPRESS, f"{where} has no help text"
    shown = parser._get_formatter()._expand_help(action)  # the text --help prints for it
    takes_a_value = action.nargs != 0  # not a flag such as --quiet
    if takes_a_value and not action.required and not in_required_group:
        assert "default" in shown, f"{where}: --help does not say its default: {shown!r}"
    if action.default not in (None, False, argparse.SUPPRESS):
        assert f"(default: {action.default})" in shown, f"{where}: --help hides its default {action.default!r}"


# Each benchmark with the function its command calls first to do the work.
BENCHES = [("toydiff.bench", "bench_training"), ("imagediff.bench", "run_bench"), ("videodiff.bench", "run_bench"),
           ("videodiff.interp.bench", "hook_point_cost"), ("videodiff.bench_gpu", "run_checks")]


@pytest.mark.parametrize("module,work", BENCHES, ids=[module for module, _ in BENCHES])
def test_every_bench_option_says_its_default_and_a_bad_value_exits_2_with_one_line_before_any_work(
        module, work, monkeypatch, capsys):
    """The benchmarks (make bench) are command lines too: --repeats 0 used to run a bench for minutes and then
    fail on an empty median."""
    import importlib

    bench = importlib.import_module(module)

    def started(*args, **kwargs):
        raise AssertionError(f"{module} started its work on a bad request")

    monkeypatch.setattr(bench, work, started)
    parser = bench.build_parser()
    for action in parser._actions:
        _check_help(f"{parser.prog} {'/'.join(action.option_strings)}", parser, action)
    for bad, message in ((["--repeats", "0"], "argument --repeats: expected a positive integer, got 0"),
                         (["--frobnicate"], "unrecognized arguments: --frobnicate")):
        assert bench.main(bad) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"{parser.prog}: error:"), lines


def test_the_defaults_help_shows_are_the_recipes(monkeypatch, tmp_path):
    from toydiff.cli import _recipe
    from toydiff.experiment import ToyRunConfig

    # Nothing given but the output folder: the toy recipe itself.
    assert _recipe(toydiff_parser().parse_args(["train", "--out", "x"])) == ToyRunConfig()

    import imagediff.cli
    from imagediff.pipeline import DiffusionRunConfig, VAERunConfig

    started = {}

    def stand_in(name, result):
        def train(config, **_):
            started[name] = config
            return result
        return train

    monkeypatch.setattr(imagediff.cli, "train_vae",
                        stand_in("vae", SimpleNamespace(seconds=0.0, vae=SimpleNamespace(latent_scale=1.0))))
    monkeypatch.setattr(imagediff.cli, "train_image_diffusion", stand_in("diffusion", SimpleNamespace(seconds=0.0)))
    assert imagediff.cli.main(["train-vae", "--out", str(tmp_path)]) == 0
    assert imagediff.cli.main(["train", "--out", str(tmp_path)]) == 0
    assert started["vae"] == VAERunConfig() and started["diffusion"] == DiffusionRunConfig()
    assert imagediff.cli.main(["train-vae", "--out", str(tmp_path), "--kl-weight", "0"]) == 0
    assert started["vae"].vae.kl_weight == 0.0 and started["vae"].vae.image_channels == 3
    assert imagediff.cli.main(["train", "--out", str(tmp_path), "--guide-fraction", "0"]) == 0
    assert started["diffusion"].guide_fraction == 0.0 and started["diffusion"].guide_step() == 0
    assert not started["diffusion"].dit.angle_conditioning
    assert imagediff.cli.main(["train", "--out", str(tmp_path), "--angle-conditioning"]) == 0
    assert started["diffusion"].dit.angle_conditioning and started["diffusion"].canonical_frame is False
    assert DiffusionRunConfig().canonical_frame is True  # the shapes, not told the angle: on
    assert imagediff.cli.main(["train", "--out", str(tmp_path), "--no-canonical-frame"]) == 0
    assert started["diffusion"].canonical_frame is False
    assert imagediff.cli.main(["train", "--out", str(tmp_path), "--dataset", "glyphs"]) == 0
    assert started["diffusion"].canonical_frame is False  # the digits cannot be drawn upright: off by default
    assert imagediff.cli.main(["train", "--out", str(tmp_path), "--canonical-frame", "--angle-conditioning"]) == 2
    assert DiffusionRunConfig().train.mixed_precision == "auto"
    for flags, precision in (([], "auto"), (["--precision", "no"], "no"), (["--bf16"], "bf16")):
        assert imagediff.cli.main(["train", "--out", str(tmp_path), *flags]) == 0
        assert started["diffusion"].train.mixed_precision == precision


def test_help_prints_each_option_with_its_default():
    completed = subprocess.run([sys.executable, "-m", "imagediff", "train", "--help"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0
    text = " ".join(completed.stdout.split())  # argparse wraps long lines
    from imagediff.pipeline import DiffusionRunConfig

    assert f"training steps (default: {DiffusionRunConfig().train.steps})" in text
    assert "seed of the generated training images (default: 0)" in text


def test_a_device_is_checked_against_the_machine_before_any_work(monkeypatch):
    """toydiff.distributed.pick_device: names torch does not know, or a device this machine lacks, become one
    ValueError naming the request and what can be asked for, not torch's error deep inside the first move."""
    import torch
    from toydiff.distributed import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    for name in ("gpu", "cuda:x", "meta", "xla", ""):
        with pytest.raises(ValueError, match=f"unknown device '{name}': expected auto, cpu, cuda, cuda:N or mps"):
            pick_device(name)
    with pytest.raises(ValueError, match="'cuda' was asked for but CUDA is not available here"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="'mps' was asked for but MPS"):
        pick_device("mps")
    # One GPU: cuda and cuda:0 are it, cuda:1 is past the last one.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("auto") == torch.device("cuda") and pick_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"'cuda:1' was asked for but this machine has 1 CUDA device\(s\), cuda:0 to "
                                         "cuda:0"):
        pick_device("cuda:1")


# Every command that runs a model, with the arguments it requires.
DEVICE_COMMANDS = [
    ("toydiff", ["train", "--out", "x"]), ("toydiff", ["sample"]),
    ("imagediff", ["train-vae", "--out", "x"]), ("imagediff", ["train", "--out", "x"]), ("imagediff", ["sample"]),
    ("imagediff", ["train-classifier", "--kind", "evaluation", "--out", "x"]),
    ("imagediff", ["evaluate"]),
    ("videodiff", ["train-vae"]), ("videodiff", ["train"]), ("videodiff", ["rollout"]), ("videodiff", ["evaluate"]),
    ("videodiff", ["probe"]), ("videodiff", ["ablate"]),
]


@pytest.mark.parametrize("layer,args", DEVICE_COMMANDS, ids=[f"{layer} {args[0]}" for layer, args in DEVICE_COMMANDS])
def test_every_command_that_runs_a_model_refuses_a_device_the_machine_lacks(layer, args, capsys):
    import importlib

    main_of = importlib.import_module(f"{layer}.cli").main
    assert main_of([*args, "--device", "gpu"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "argument --device: unknown device 'gpu'" in lines[0], lines


@pytest.mark.parametrize("layer,loader,args", [
    ("toydiff", "toydiff.experiment.load_toy_model", ["sample", "--out", "unused.npy"]),
    ("imagediff", "load_image_diffusion", ["sample"]), ("imagediff", "load_image_diffusion", ["evaluate"]),
    ("videodiff", "load_video_diffusion", ["rollout"]), ("videodiff", "load_video_diffusion", ["evaluate"]),
    ("videodiff", "load_video_diffusion", ["probe"]), ("videodiff", "load_video_diffusion", ["ablate"]),
])
def test_sampling_commands_load_their_model_where_device_says(layer, loader, args, monkeypatch, tmp_path, capsys):
    """A model trained on a GPU is sampled there too: the command hands --device to the loader (on a GPU,
    videodiff.bench_gpu's commands check runs the video ones; docs/gpu.md)."""
    import importlib

    import torch
    from toydiff.cli import UsageError

    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"")
    asked = []

    def loader_that_records(path, device=None, **kwargs):
        asked.append(device)
        raise UsageError("stopped after loading")

    cli = importlib.import_module(f"{layer}.cli")
    if "." in loader:  # a loader the command imports when it runs (toydiff's commands keep --help fast)
        module, name = loader.rsplit(".", 1)
        monkeypatch.setattr(importlib.import_module(module), name, loader_that_records)
    else:
        monkeypatch.setattr(cli, loader, loader_that_records)
    assert cli.main([*args, "--checkpoint", str(checkpoint), "--device", "cpu"]) == 2
    assert "stopped after loading" in capsys.readouterr().err
    assert asked == [torch.device("cpu")]


@pytest.mark.parametrize("kind,trainer", [("evaluation", "train_evaluation_classifier"), ("noisy", "train_noisy_classifier")])
def test_train_classifier_trains_where_device_says(kind, trainer, monkeypatch, tmp_path, capsys):
    """imagediff train-classifier hands --device to the training loop's config, as the other train commands do."""
    from imagediff import cli
    from toydiff.cli import UsageError

    trained_on = []

    def trainer_that_records(*args, **kwargs):
        config = args[-1] if kind == "noisy" else args[0]
        trained_on.append(config.train.device)
        raise UsageError("stopped before training")

    monkeypatch.setattr(cli, trainer, trainer_that_records)
    monkeypatch.setattr(cli, "load_image_diffusion", lambda path, **kwargs: object())
    assert cli.main(["train-classifier", "--kind", kind, "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "stopped before training" in capsys.readouterr().err
    assert trained_on == ["cpu"]
