"""The shared training loop: it learns, checkpoints atomically, resumes exactly, survives Ctrl-C, runs DDP."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from toydiff.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from toydiff.data import make_dataset
from toydiff.losses import DiffusionObjective, min_snr_weight
from toydiff.models import MLPConfig, MLPDenoiser
from toydiff.schedules import make_schedule
from toydiff.training import TensorBatches, TrainConfig, learning_rate_at, train

SCHEDULE = make_schedule("linear")


def tiny_run(tmp_path, steps=60, on_log=None, resume=True, seed=0, run_config=None):
    torch.manual_seed(seed)
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2, num_classes=3))
    points, labels = make_dataset("spiral", 2000, seed=0)
    objective = DiffusionObjective(SCHEDULE, label_dropout=0.1, null_label=3)
    config = TrainConfig(steps=steps, batch_size=64, log_every=10, checkpoint_every=20, progress=False, seed=seed,
                         warmup_steps=10)
    return train(model, objective, TensorBatches(points, labels), config,
                 checkpoint_path=tmp_path / "checkpoint.pt", run_config=run_config or {"name": "tiny"},
                 resume=resume, on_log=on_log)


def test_training_lowers_the_loss_and_logs_it_by_t(tmp_path):
    result = tiny_run(tmp_path, steps=200)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.8 * first["loss"]
    assert len(last["loss_by_t"]) == 10
    # ε-prediction error is largest at small t (little noise to see), smallest near pure noise.
    assert last["loss_by_t"][0] > last["loss_by_t"][-1]


def test_same_seed_same_numbers(tmp_path):
    a = tiny_run(tmp_path / "a", steps=30)
    b = tiny_run(tmp_path / "b", steps=30)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    for p, q in zip(a.ema_model.parameters(), b.ema_model.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_holds_everything_needed_and_loads_without_code(tmp_path):
    tiny_run(tmp_path, steps=20)
    state = load_checkpoint(tmp_path / "checkpoint.pt", kind="toydiff.run")
    assert state["step"] == 20 and state["config"] == {"name": "tiny"}
    for key in ("model", "ema", "optimizer", "rng", "history", "train_config", "format_version"):
        assert key in state
    # Nothing in it is pickled code: weights_only loading succeeded above.


def test_ctrl_c_writes_a_checkpoint_and_resuming_continues_with_identical_losses(tmp_path):
    uninterrupted = tiny_run(tmp_path / "full", steps=60)

    def interrupt_at_30(entry):
        if entry["step"] == 30:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C mid-run

    with pytest.raises(KeyboardInterrupt):
        tiny_run(tmp_path / "split", steps=60, on_log=interrupt_at_30)
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["step"] in (30, 31)
    resumed = tiny_run(tmp_path / "split", steps=60)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in uninterrupted.history]
    for p, q in zip(resumed.model.parameters(), uninterrupted.model.parameters()):
        assert torch.equal(p, q)


def test_a_crash_while_writing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"kind": "x", "step": 1})

    def failing_save(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"kind": "x", "step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_corrupt_missing_foreign_and_mismatched_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match=f"{corrupt}.*not a readable checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not written by this project"):
        load_checkpoint(foreign)
    save_checkpoint(tmp_path / "other.pt", {"kind": "imagediff.vae"})
    with pytest.raises(CheckpointError, match="expected 'toydiff.run'"):
        load_checkpoint(tmp_path / "other.pt", kind="toydiff.run")
    tiny_run(tmp_path / "run", steps=20)
    with pytest.raises(CheckpointError, match="different configuration"):
        tiny_run(tmp_path / "run", steps=40, run_config={"name": "another"})


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=1000, learning_rate=1.0, warmup_steps=100, min_lr_fraction=0.1)
    assert learning_rate_at(config, 0) == pytest.approx(0.01)
    assert learning_rate_at(config, 99) == pytest.approx(1.0)
    assert learning_rate_at(config, 999) == pytest.approx(0.1, abs=1e-4)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0).validate()


def test_min_snr_weights_are_the_same_weighting_in_every_parameterisation():
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0], dtype=torch.float64)
    x0_weight = min_snr_weight(snr, 5.0, "x0")
    # ε-error = snr · x0-error and v-error = (snr + 1) · x0-error, so the effective x0 weights agree.
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "epsilon") * snr, x0_weight)
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "v") * (snr + 1), x0_weight)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from toydiff.data import make_dataset
    from toydiff.losses import DiffusionObjective
    from toydiff.models import MLPConfig, MLPDenoiser
    from toydiff.schedules import make_schedule
    from toydiff.training import TensorBatches, TrainConfig, train
    torch.manual_seed(0)
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2))
    points, _ = make_dataset("spiral", 2000, seed=0)
    config = TrainConfig(steps=40, batch_size=64, log_every=10, progress=False, device="cpu")
    result = train(model, DiffusionObjective(make_schedule("linear")), TensorBatches(points), config,
                   checkpoint_path=sys.argv[1] + "/checkpoint.pt", run_config={"ddp": True})
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert dist.get_world_size() == 2
    assert torch.equal(gathered[0], gathered[1]), "replicas diverged"
    print("rank", dist.get_rank(), "ok", result.history[-1]["loss"])
    dist.destroy_process_group()
""")


def test_two_process_ddp_on_cpu(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count(" ok ") == 2
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 40
    assert len(load_checkpoint(tmp_path / "checkpoint.pt")["rng"]["generators"]) == 2


def test_evaluation_hook_sees_the_ema_model_and_its_time_is_not_training_time(tmp_path):
    import time
    torch.manual_seed(0)
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2))
    points, _ = make_dataset("spiral", 500, seed=0)
    config = TrainConfig(steps=40, batch_size=32, log_every=10, progress=False, warmup_steps=5)
    calls = []

    def evaluate(ema_model, step):
        assert not ema_model.training and ema_model is not model
        calls.append(step)
        time.sleep(0.3)
        return {"answer": step * 2}

    started = time.perf_counter()
    result = train(model, DiffusionObjective(SCHEDULE), TensorBatches(points), config, evaluate=evaluate,
                   evaluate_every=20)
    wall = time.perf_counter() - started
    assert calls == [20, 40]
    assert [h.get("evaluation") for h in result.history] == [None, {"answer": 40}, None, {"answer": 80}]
    assert result.seconds <= wall - 0.6 + 0.05  # the two 0.3 s evaluations are not counted
    assert result.history[-1]["seconds"] == pytest.approx(result.seconds, abs=0.05)
    assert model.training  # the raw model is back in training mode after each evaluation
    with pytest.raises(ValueError, match="multiple of log_every"):
        train(model, DiffusionObjective(SCHEDULE), TensorBatches(points), config, evaluate=evaluate,
              evaluate_every=15)


def test_training_seconds_carry_over_a_resume_in_the_history_and_the_result(tmp_path):
    import time

    def slow_first_session(entry):  # on_log time is training time: the first session lasts >= 0.4 s
        if entry["step"] == 10:
            time.sleep(0.4)

    first = tiny_run(tmp_path, steps=20, on_log=slow_first_session)
    stored = load_checkpoint(tmp_path / "checkpoint.pt")["seconds"]
    assert stored >= 0.4
    assert stored == pytest.approx(first.history[-1]["seconds"], abs=0.05)
    assert first.seconds == pytest.approx(stored, abs=0.05)
    assert first.session_seconds == first.seconds  # nothing resumed: the run is this session

    resumed = tiny_run(tmp_path, steps=40)
    assert resumed.history[-1]["seconds"] > stored  # cumulative, not restarted from 0
    # The result says what the history says: the whole run's seconds, the first session included…
    assert resumed.seconds == pytest.approx(resumed.history[-1]["seconds"], abs=0.05)
    assert resumed.seconds == pytest.approx(load_checkpoint(tmp_path / "checkpoint.pt")["seconds"], abs=0.05)
    # …and this call's own share separately.
    assert resumed.session_seconds == pytest.approx(resumed.seconds - stored, abs=0.05)
    assert resumed.session_seconds < resumed.seconds - 0.35

    finished = tiny_run(tmp_path, steps=40)  # nothing left to train: the run's time, this call's ~0
    assert finished.seconds == pytest.approx(resumed.seconds, abs=0.05)
    assert finished.session_seconds < 0.05
