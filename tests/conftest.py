import os
import socket
import subprocess
import sys

import pytest
import torch

# Two cores on CI: more threads only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run a test on one thread, restoring the setting afterwards.

    Small convolutions and matrices gain little from a second thread, and on a busy 2-core machine two
    OpenMP threads that wait on each other made such tests up to 50 times slower. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torchrun(tmp_path):
    """``torchrun(script_text)`` runs a script as 2 CPU processes under torch.distributed.run, with
    tmp_path as its one argument, and returns the CompletedProcess (stdout and stderr as text).

    Each process gets one OpenMP thread, and the rendezvous a free port (a fixed one may still be held
    by a last run). No GPU is visible to them, so that a script left at device "auto" stays on the CPU
    (gloo) on a machine with one GPU too.
    """

    def run(script_text: str):
        script = tmp_path / "torchrun_script.py"
        script.write_text(script_text)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
             str(script), str(tmp_path)],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
        )

    return run


@pytest.fixture
def objective_options(monkeypatch):
    """``objective_options(module, name, train, config)``: the keyword arguments that ``train(config)``
    gives the objective class ``module.name``, which is replaced by a stand-in that stops the run there
    (before any training step)."""

    class Stop(Exception):
        pass

    def stand_in(*args, **options):
        raise Stop(options)

    def options_of(module, name, train, config) -> dict:
        monkeypatch.setattr(module, name, stand_in)
        with pytest.raises(Stop) as stopped:
            train(config)
        return stopped.value.args[0]

    return options_of


class Encoded(Exception):
    """Raised by encoding_device's stand-in encoder: the run got as far as encoding its data set."""


@pytest.fixture
def encoding_device(monkeypatch):
    """encoding_device(train, device_module, encoder_module, encoder): the device type of the VAE with which
    ``train()`` encodes its data set, where ``device_module.process_device`` answers "meta" (a GPU's stand-in)
    and ``encoder_module.<encoder>`` records the VAE's device and stops the run there."""
    def run(train, device_module, encoder_module, encoder: str) -> str:
        seen = {}

        def encode(vae, *args, **kwargs):
            seen["device"] = vae.latent_scale.device.type
            raise Encoded

        monkeypatch.setattr(device_module, "process_device", lambda requested: torch.device("meta"))
        monkeypatch.setattr(encoder_module, encoder, encode)
        with pytest.raises(Encoded):
            train()
        return seen["device"]

    return run
