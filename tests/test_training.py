"""The shared training loop: it learns, checkpoints atomically, resumes exactly, survives Ctrl-C, runs DDP."""
import dataclasses
import math
import os
import signal
import textwrap
from pathlib import Path

import pytest
import torch

from toydiff.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from toydiff.data import make_dataset
from toydiff.losses import DiffusionObjective, min_snr_weight, sample_levels
from toydiff.models import MLPConfig, MLPDenoiser
from toydiff.schedules import make_schedule
from toydiff.training import (
    PREVIOUS_RECIPE_CHECKPOINT, RecipeChangedError, TensorBatches, TrainConfig, learning_rate_at,
    recipe_differences, retrain_if_recipe_changed, train,
)

# One thread: on the 2-core machine, busy with another test run, this file took 82-89 s on two threads
# and 6-7 s on one (the tiny MLP gains nothing from a second thread that waits on the first).
pytestmark = pytest.mark.usefixtures("one_thread")
SCHEDULE = make_schedule("linear")


def tiny_run(tmp_path, steps=60, on_log=None, resume=True, seed=0, run_config=None, **options):
    torch.manual_seed(0)  # the same initial weights whatever the seed: `seed` is the training loop's own
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2, num_classes=3))
    points, labels = make_dataset("spiral", 2000, seed=0)
    objective = DiffusionObjective(SCHEDULE, label_dropout=0.1, null_label=3)
    config = TrainConfig(steps=steps, batch_size=64, log_every=10, checkpoint_every=20, progress=False, seed=seed,
                         warmup_steps=10, snapshot_steps=options.pop("snapshot_steps", ()))
    return train(model, objective, TensorBatches(points, labels), config,
                 checkpoint_path=tmp_path / "checkpoint.pt", run_config=run_config or {"name": "tiny"},
                 resume=resume, on_log=on_log, **options)


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
    # The seed drives the batches and the noise: from the same initial weights, another seed trains otherwise.
    c = tiny_run(tmp_path / "c", steps=30, seed=1)
    assert [h["loss"] for h in c.history] != [h["loss"] for h in a.history]


def test_checkpoint_holds_everything_needed_and_loads_without_code(tmp_path):
    result = tiny_run(tmp_path, steps=20)
    state = load_checkpoint(tmp_path / "checkpoint.pt", kind="toydiff.run")
    assert state["step"] == 20 and state["config"] == {"name": "tiny"}
    for key in ("model", "ema", "optimizer", "rng", "history", "train_config", "format_version"):
        assert key in state
    # Each slot holds what its name says, as of the last step: the raw weights, their average, 20 updates.
    for name, weights in result.model.state_dict().items():
        assert torch.equal(state["model"][name], weights)
    for name, weights in result.ema_model.state_dict().items():
        assert torch.equal(state["ema"]["model"][name], weights)
    assert state["ema"]["num_updates"] == 20
    assert any(not torch.equal(weights, state["ema"]["model"][name]) for name, weights in state["model"].items())
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
    # The average resumes too (its weights and its update count, which sets the warmed-up decay).
    for p, q in zip(resumed.ema_model.parameters(), uninterrupted.ema_model.parameters()):
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
    with pytest.raises(CheckpointError, match=r"different configuration \(differs in: name\)"):
        tiny_run(tmp_path / "run", steps=40, run_config={"name": "another"})


def test_a_checkpoint_of_another_recipe_is_set_aside_and_the_run_trains_anew(tmp_path, capsys):
    old = tiny_run(tmp_path, steps=20)
    old_bytes = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RecipeChangedError) as refused:
        tiny_run(tmp_path, steps=20, run_config={"name": "another"})
    assert refused.value.differing == ["name"]
    new = retrain_if_recipe_changed(lambda: tiny_run(tmp_path, steps=20, run_config={"name": "another"}))
    assert "was trained with another recipe (differs in: name); moved it to checkpoint.previous-recipe.pt" in \
        capsys.readouterr().out
    assert (tmp_path / PREVIOUS_RECIPE_CHECKPOINT).read_bytes() == old_bytes       # kept, not deleted
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"] == {"name": "another"}
    assert new.history[0]["step"] == old.history[0]["step"]                         # trained from step 0
    # The same recipe resumes as before: nothing is moved.
    again = retrain_if_recipe_changed(lambda: tiny_run(tmp_path, steps=20, run_config={"name": "another"}))
    assert again.history == new.history and "moved" not in capsys.readouterr().out


def test_learning_rate_warms_up_then_decays():
    # Warm-up: step n (counted from 0) gets (n + 1)/100 of the peak, so the first step is not wasted at
    # lr 0 and step 99 reaches the peak. Then half a cosine from the peak down to the floor 0.1:
    # lr = 0.1 + 0.9 · ½(1 + cos(π · progress)), progress = (step - 100)/900.
    config = TrainConfig(steps=1000, learning_rate=1.0, warmup_steps=100, min_lr_fraction=0.1)
    known = {
        0: 0.01,
        49: 0.5,
        99: 1.0,
        100: 1.0,                                               # progress 0: the top of the cosine
        325: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)),     # progress ¼: ≈ 0.868 (a line gives 0.775)
        550: 0.55,                                              # progress ½: halfway to the floor
        775: 0.1 + 0.9 * 0.5 * (1 + math.cos(3 * math.pi / 4)),  # progress ¾: ≈ 0.232 (a line gives 0.325)
        999: 0.1,                                               # the floor, not 0
    }
    for step, lr in known.items():
        assert learning_rate_at(config, step) == pytest.approx(lr, abs=1e-5), f"step {step}"
    constant = TrainConfig(steps=1000, learning_rate=1.0, warmup_steps=100, lr_schedule="constant")
    assert [learning_rate_at(constant, step) for step in (0, 99, 100, 999)] == pytest.approx([0.01, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0).validate()


def test_min_snr_weights_are_the_same_weighting_in_every_parameterisation():
    snr = torch.tensor([0.01, 1.0, 5.0, 100.0], dtype=torch.float64)
    # Known values, γ = 5 (Hang et al. 2023): the x_0-error weight is min(snr, γ)…
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "x0"), torch.tensor([0.01, 1.0, 5.0, 5.0], dtype=torch.float64))
    # …the ε-error weight min(snr, γ)/snr = min(1, γ/snr): 1 below γ, γ/snr above…
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "epsilon"), torch.tensor([1.0, 1.0, 1.0, 0.05], dtype=torch.float64))
    # …and the v-error weight min(snr, γ)/(snr + 1).
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "v"),
                               torch.tensor([0.01 / 1.01, 0.5, 5 / 6, 5 / 101], dtype=torch.float64))
    # ε-error = snr · x0-error and v-error = (snr + 1) · x0-error, so the effective x0 weights agree.
    x0_weight = min_snr_weight(snr, 5.0, "x0")
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "epsilon") * snr, x0_weight)
    torch.testing.assert_close(min_snr_weight(snr, 5.0, "v") * (snr + 1), x0_weight)


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
def test_the_objective_weights_each_example_by_min_snr_of_its_own_timestep(prediction_type):
    t = torch.tensor([0, 100, 300, 500, 999])
    alpha_bar = SCHEDULE.alphas_cumprod[t]                      # (5,)
    snr = alpha_bar / (1 - alpha_bar)                           # ≈ 1e4, 8.5, 0.65, 0.084, 4e-5: both sides of γ
    clipped = snr.clamp(max=5.0)                                # γ = 5, the paper's choice and the default
    expected = {"epsilon": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction_type]
    objective = DiffusionObjective(SCHEDULE, prediction_type=prediction_type, weighting="min_snr")
    torch.testing.assert_close(objective.loss_weight(t).double(), expected.double())
    assert torch.equal(DiffusionObjective(SCHEDULE, prediction_type=prediction_type).loss_weight(t),
                       torch.ones(5, dtype=torch.float64))
    # The loss is the weighted mean of the per-example errors, not their plain mean.
    objective.sample_timesteps = lambda x0, generator: t
    zero_model = lambda x_t, t: torch.zeros_like(x_t)
    loss, logs = objective(zero_model, (torch.randn(5, 2, generator=torch.Generator().manual_seed(0)),))
    torch.testing.assert_close(loss, (logs["per_example_loss"] * expected.float()).mean())


def test_timestep_sampling_uniform_is_ddpms_draw_and_logit_normal_has_the_median_it_asks_for():
    # "uniform" draws exactly what torch.randint draws, so runs from before the option reproduce.
    uniform = sample_levels((3000,), 1000, torch.Generator().manual_seed(0))
    assert torch.equal(uniform, torch.randint(0, 1000, (3000,), generator=torch.Generator().manual_seed(0)))
    for mean, std in ((0.0, 1.0), (1.5, 0.5), (-1.0, 2.0)):
        t = sample_levels((20000,), 1000, torch.Generator().manual_seed(1), sampling="logit_normal",
                          logit_mean=mean, logit_std=std)
        assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 999
        # floor(T·sigmoid(m + s·n)): the median is T·sigmoid(m), the quartiles T·sigmoid(m ± 0.674 s).
        quartiles = torch.quantile(t.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)) / 1000
        expected = torch.sigmoid(torch.tensor([mean - 0.674 * std, mean, mean + 0.674 * std], dtype=torch.float64))
        torch.testing.assert_close(quartiles, expected, atol=0.01, rtol=0)
    objective = DiffusionObjective(SCHEDULE, "v", timestep_sampling="logit_normal", logit_mean=2.0)
    assert objective.sample_timesteps(torch.zeros(5000, 2), torch.Generator().manual_seed(2)).double().mean() > 800
    with pytest.raises(ValueError, match="unknown timestep sampling 'beta'; expected one of uniform, logit_normal"):
        DiffusionObjective(SCHEDULE, timestep_sampling="beta")
    with pytest.raises(ValueError, match="logit_std must be positive"):
        DiffusionObjective(SCHEDULE, timestep_sampling="logit_normal", logit_std=0.0)


class TwoWeights(torch.nn.Module):
    """θ = (a, b) in two separate tensors, so that clipping their joint norm differs from clipping each."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([1.0]))
        self.b = torch.nn.Parameter(torch.tensor([-0.5]))


# Step n's loss is s_n · (3a + 4b): its gradient s_n · (3, 4) has norm 5 s_n, above the clip of 1 for some
# steps and below it for others, so the trajectory shows whether, when and how gradients were clipped.
GRADIENT_SCALES = [10.0, 0.05, 3.0, 0.02, 0.5, 8.0, 0.1, 1.0, 0.03, 4.0, 0.2, 0.01]
# Per-example logs at t = 0, 4 | 5 | 47, 49 of T = 50: with 10 bins of width 5, bins 0, 1 and 9.
LOGGED_T = torch.tensor([0, 4, 5, 47, 49])
LOGGED_LOSSES = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])


def train_two_weights(**overrides):
    """Train TwoWeights on the losses above; return its config, the result and each step's loss."""
    settings = dict(steps=len(GRADIENT_SCALES), learning_rate=0.1, warmup_steps=3, min_lr_fraction=0.2,
                    weight_decay=0.1, grad_clip=1.0, ema_decay=0.5, log_every=4, checkpoint_every=0,
                    progress=False, device="cpu")
    config = TrainConfig(**{**settings, **overrides})
    losses = []

    def objective(model, batch, generator):
        n = len(losses)
        loss = GRADIENT_SCALES[n] * (3 * model.a + 4 * model.b).sum()
        losses.append(loss.item())
        return loss, {"t": LOGGED_T, "per_example_loss": LOGGED_LOSSES * (n + 1)}

    result = train(TwoWeights(), objective, TensorBatches(torch.zeros(8, 1)), config, num_timesteps=50)
    return config, result, losses


def adamw_with_clipping_by_hand(config):
    """The raw and EMA weights after each step, from the textbook formulas, in float64.

    Clip: g ← g · min(1, c/‖g‖) with ‖g‖ over all parameters.  AdamW (Loshchilov & Hutter 2019):
    θ ← θ(1 - lr·λ), m ← β₁m + (1-β₁)g, v ← β₂v + (1-β₂)g², θ ← θ - lr · m̂ / (√v̂ + ε) with m̂, v̂ bias-corrected.
    EMA after update k (counted from 1): θ_ema ← d θ_ema + (1 - d) θ, d = min(decay, (1 + k)/(10 + k)).
    """
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    theta = torch.tensor([1.0, -0.5], dtype=torch.float64)
    ema, m, v = theta.clone(), torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    raw_trajectory, ema_trajectory = [], []
    for n, scale in enumerate(GRADIENT_SCALES[:config.steps]):
        gradient = scale * torch.tensor([3.0, 4.0], dtype=torch.float64)
        if config.grad_clip > 0:
            gradient = gradient * min(1.0, config.grad_clip / gradient.norm().item())
        lr = learning_rate_at(config, n)  # the schedule's own values are checked in the test above
        theta = theta * (1 - lr * config.weight_decay)
        m = beta1 * m + (1 - beta1) * gradient
        v = beta2 * v + (1 - beta2) * gradient**2
        m_hat, v_hat = m / (1 - beta1 ** (n + 1)), v / (1 - beta2 ** (n + 1))
        theta = theta - lr * m_hat / (v_hat.sqrt() + eps)
        k = n + 1
        decay = min(config.ema_decay, (1 + k) / (10 + k))
        ema = decay * ema + (1 - decay) * theta
        raw_trajectory.append(theta)
        ema_trajectory.append(ema)
    return raw_trajectory, ema_trajectory


def weights_of(model):
    return torch.cat([model.a.detach(), model.b.detach()]).double()


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_each_step_is_adamw_on_the_clipped_gradient_at_the_scheduled_learning_rate(grad_clip):
    config, result, _ = train_two_weights(grad_clip=grad_clip)
    raw, _ = adamw_with_clipping_by_hand(config)
    torch.testing.assert_close(weights_of(result.model), raw[-1], rtol=1e-5, atol=1e-6)
    # The other clipping setting ends elsewhere, so this trajectory tells clipped from unclipped.
    other, _ = adamw_with_clipping_by_hand(dataclasses.replace(config, grad_clip=1.0 - grad_clip))
    assert (other[-1] - raw[-1]).abs().max() > 1e-2


def test_the_ema_follows_its_warmed_up_decay_step_by_step():
    config, result, _ = train_two_weights()
    _, ema = adamw_with_clipping_by_hand(config)
    torch.testing.assert_close(weights_of(result.ema_model), ema[-1], rtol=1e-5, atol=1e-6)
    assert (ema[-1] - weights_of(result.model)).abs().min() > 1e-2  # the average lags: not a copy of θ


def test_the_log_holds_each_window_mean_loss_its_last_lr_and_its_losses_by_bin_of_t():
    config, result, losses = train_two_weights()
    assert [entry["step"] for entry in result.history] == [4, 8, 12]
    for window, entry in enumerate(result.history):
        steps = range(4 * window, 4 * window + 4)
        assert entry["loss"] == pytest.approx(sum(losses[n] for n in steps) / 4)
        assert entry["lr"] == pytest.approx(learning_rate_at(config, steps[-1]))
        # Each window's bins start empty: logged losses were scaled by n + 1, whose window mean is 4w + 2.5.
        factor = 4 * window + 2.5
        expected = [1.5 * factor, 3.0 * factor] + [math.nan] * 7 + [4.5 * factor]
        assert entry["loss_by_t"] == pytest.approx(expected, nan_ok=True)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from toydiff.data import make_dataset
    from toydiff.distributed import leave_process_group
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
    # Each rank reports in its own file: two processes printing to one pipe interleave their words.
    with open(sys.argv[1] + f"/rank{dist.get_rank()}.ok", "w") as report:
        report.write(str(result.history[-1]["loss"]))
    # Torn down in order (toydiff.distributed.leave_process_group): left to the interpreter's exit, gloo
    # sometimes aborted a rank ("terminate called without an active exception").
    leave_process_group()
""")


def test_two_process_ddp_on_cpu(tmp_path, torchrun):
    completed = torchrun(DDP_SCRIPT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("rank*.ok")) == ["rank0.ok", "rank1.ok"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 40
    generators = load_checkpoint(tmp_path / "checkpoint.pt")["rng"]["generators"]
    assert len(generators) == 2
    assert not torch.equal(generators[0], generators[1])  # each process drew its own share, not the same batch


CLI_TORCHRUN_SCRIPT = textwrap.dedent("""
    import os, sys, torch.distributed as dist
    from toydiff.cli import main
    code = main(["train", "--dataset", "spiral", "--steps", "8", "--batch-size", "16", "--quiet",
                 "--out", sys.argv[1] + "/run"])
    with open(sys.argv[1] + "/rank" + os.environ["RANK"] + ".report", "w") as report:
        report.write(f"status {code}, group left: {not dist.is_initialized()}")
""")


def test_a_train_command_under_torchrun_leaves_its_process_group_before_exit(tmp_path, torchrun):
    """The train command joins the torchrun group (toydiff.distributed.setup_process) and, once it has
    succeeded, leaves it (toydiff.distributed.leave_process_group) rather than leave gloo to the exit."""
    completed = torchrun(CLI_TORCHRUN_SCRIPT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    reports = {p.name: p.read_text() for p in tmp_path.glob("rank*.report")}
    assert reports == {f"rank{r}.report": "status 0, group left: True" for r in (0, 1)}, reports
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 8


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


# ---------------------------------------------------------------------------------------------
#                                     Self-conditioning
# ---------------------------------------------------------------------------------------------


class EstimateSpy(torch.nn.Module):
    """model(x_t, t, previous_x0=None): a fixed linear map of x_t (and of the estimate), recording the calls."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.calls = []

    def forward(self, x_t, t, previous_x0=None):
        self.calls.append({"previous_x0": previous_x0, "grad": torch.is_grad_enabled(), "x_t": x_t})
        out = self.scale * x_t
        return out if previous_x0 is None else out + 0.25 * previous_x0


def test_a_self_conditioned_batch_feeds_the_first_passs_x0_estimate_to_the_second():
    from toydiff.parameterisation import predict_x0

    schedule = make_schedule("linear", 100)
    objective = DiffusionObjective(schedule, "v", self_condition=1.0)
    spy = EstimateSpy().train()
    loss, logs = objective(spy, (torch.randn(6, 2),), torch.Generator().manual_seed(0))
    first, second = spy.calls
    assert first["previous_x0"] is None and not first["grad"] and second["grad"]
    expected = predict_x0(schedule, 0.5 * first["x_t"], logs["t"], first["x_t"], "v")
    assert torch.allclose(second["previous_x0"], expected.float())
    loss.backward()  # the gradient flows through the second pass only
    assert spy.scale.grad is not None


def test_self_conditioning_is_drawn_per_batch_and_off_by_default():
    schedule = make_schedule("linear", 100)
    spy = EstimateSpy().train()
    generator = torch.Generator().manual_seed(0)
    objective = DiffusionObjective(schedule, "v", self_condition=0.5)
    for _ in range(40):
        objective(spy, (torch.randn(4, 2),), generator)
    passes = len(spy.calls)
    assert 50 < passes < 70  # 40 batches, about half of them twice
    spy.calls.clear()
    DiffusionObjective(schedule, "v")(spy, (torch.randn(4, 2),), generator)
    assert len(spy.calls) == 1 and spy.calls[0]["previous_x0"] is None
    spy.calls.clear()
    objective(spy.eval(), (torch.randn(4, 2),), generator)  # evaluation: always as the sampler runs it
    assert len(spy.calls) == 2
    with pytest.raises(ValueError, match=r"probability that a batch is self-conditioned, in \[0, 1\]; got 1.5"):
        DiffusionObjective(schedule, "v", self_condition=1.5)


def test_snapshots_keep_the_ema_of_their_step_in_the_result_and_over_a_resume(tmp_path):
    seen = {}

    def record(ema_model, step):
        seen[step] = {name: value.clone() for name, value in ema_model.state_dict().items()}
        return {}

    result = tiny_run(tmp_path, steps=30, snapshot_steps=(10, 30), evaluate=record, evaluate_every=10)
    assert sorted(result.snapshots) == [10, 30]
    for step in (10, 30):
        assert all(torch.equal(result.snapshots[step][name], seen[step][name]) for name in seen[step])
    first = next(name for name in seen[10] if seen[10][name].is_floating_point() and seen[10][name].numel() > 1)
    assert not torch.equal(result.snapshots[10][first], result.snapshots[30][first])  # a copy, not the live weights
    stored = load_checkpoint(tmp_path / "checkpoint.pt")["snapshots"]
    assert torch.equal(stored[10][first], seen[10][first])
    resumed = tiny_run(tmp_path, steps=40, snapshot_steps=(10, 30, 40))  # continues the same run to step 40
    assert sorted(resumed.snapshots) == [10, 30, 40] and torch.equal(resumed.snapshots[10][first], seen[10][first])
    with pytest.raises(ValueError, match=r"snapshot_steps are steps in 1..40 \(the run's length\), got \[50\]"):
        tiny_run(tmp_path / "bad", steps=40, snapshot_steps=(50,))


def test_a_setting_an_older_checkpoint_lacks_is_unchanged_only_when_asked_off(tmp_path):
    stored = {"name": "run", "model": {"width": 8}}
    # Settings added later, asked off (their default), at the top or nested: the same recipe.
    assert recipe_differences(stored, {"name": "run", "model": {"width": 8, "angles": False, "parts": None},
                                       "extra": 0.0}) == []
    # Asked on, or changed, or dropped: another recipe, named by its top-level key.
    assert recipe_differences(stored, {"name": "run", "model": {"width": 8, "angles": True}}) == ["model"]
    assert recipe_differences(stored, {"name": "run", "model": {"width": 8}, "fraction": 0.15}) == ["fraction"]
    assert recipe_differences(stored, {"name": "run", "model": {"width": 16}}) == ["model"]
    assert recipe_differences(stored, {"name": "run"}) == ["model"]
    # A checkpoint written before a setting existed resumes under a version that has it, off.
    tiny_run(tmp_path, steps=10, run_config={"name": "run"})
    with pytest.raises(RecipeChangedError, match="differs in: new_option"):
        tiny_run(tmp_path, steps=20, run_config={"name": "run", "new_option": True})
    assert tiny_run(tmp_path, steps=20, run_config={"name": "run", "new_option": False}).history[-1]["step"] == 20


def test_bf16_mixed_precision_runs_the_forward_in_bf16_on_a_cpu_and_keeps_the_weights_fp32(tmp_path):
    from toydiff.training import autocast_for
    torch.manual_seed(0)
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2))
    points, _ = make_dataset("spiral", 500, seed=0)
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    for precision, dtype in (("no", torch.float32), ("bf16", torch.bfloat16)):
        seen.clear()
        config = TrainConfig(steps=3, batch_size=32, log_every=1, progress=False, warmup_steps=1,
                             mixed_precision=precision, device="cpu")
        result = train(model, DiffusionObjective(SCHEDULE), TensorBatches(points), config)
        assert seen == [dtype] * 3
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
        assert all(p.dtype == torch.float32 for p in result.ema_model.parameters())
        assert all(math.isfinite(h["loss"]) for h in result.history)
    with autocast_for("bf16", "cpu"):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16
    with autocast_for("no", "cpu"):
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.float32
    with pytest.raises(ValueError, match="'no', 'bf16', 'auto', got 'fp16'"):
        autocast_for("fp16", "cpu")
    with pytest.raises(ValueError, match="mixed_precision must be one of 'no', 'bf16', 'auto', got 'fp16'"):
        TrainConfig(mixed_precision="fp16").validate()


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch):
    from toydiff.training import autocast_for, fast_bf16
    for amx, avx512 in ((True, False), (False, True), (False, False)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512, raising=False)
        assert fast_bf16("cpu") is (amx or avx512)
        with autocast_for("auto", "cpu"):
            dtype = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype
        assert dtype == (torch.bfloat16 if amx or avx512 else torch.float32)
        with autocast_for("bf16", "cpu"):  # asked for, it is bf16 either way
            assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16


def test_under_torchrun_each_process_works_on_the_gpu_of_its_local_rank(monkeypatch):
    """process_device: what a run's work before training (encoding a data set, say) is moved to."""
    import toydiff.distributed as distributed
    monkeypatch.setattr(distributed, "pick_device", lambda requested: torch.device(requested))  # no GPU needed
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    current = []  # what the process made its current CUDA device
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.process_device("cuda") == torch.device("cuda") and current == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.process_device("cuda") == torch.device("cuda", 1)
    # set_device takes an index or a device: either one naming GPU 1 passes
    assert [torch.device("cuda", d) if isinstance(d, int) else d for d in current] == [torch.device("cuda", 1)]
    assert distributed.process_device("cpu") == torch.device("cpu") and len(current) == 1  # no GPU made current
    monkeypatch.setenv("LOCAL_RANK", "2")  # more processes than GPUs: one clear line, not torch's error later
    with pytest.raises(ValueError, match=r"LOCAL_RANK 2 .* 2 CUDA device\(s\).*nproc_per_node"):
        distributed.process_device("cuda")
    assert distributed.process_device("cpu") == torch.device("cpu")  # a CPU run under torchrun has no GPU to count
