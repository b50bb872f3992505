"""The command line: the documented commands work, and every bad argument exits 2 with one clear line."""
import subprocess
import sys

import numpy as np
import pytest

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
