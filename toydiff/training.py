"""The one training loop of the project, shared by every layer.

    for step in range(start, steps):
        batch = data.sample(batch_size)                 # random rows of an in-memory data set
        loss, logs = objective(model, batch, generator)  # e.g. DiffusionObjective, a VAE loss
        loss.backward(); clip gradients; AdamW step with warm-up and cosine decay; EMA update
        every checkpoint_every steps: write the checkpoint atomically

It knows nothing about diffusion: the objective does. Everything random goes through one seeded
``torch.Generator`` whose state is saved in the checkpoint, so a resumed run continues with exactly
the losses of an uninterrupted one (same seed, same machine).  Under ``torchrun`` the model is wrapped
in DistributedDataParallel and each process draws its own share of the batch.
Ctrl-C finishes the current step, writes a checkpoint, then stops.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from toydiff.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from toydiff.compilation import CompiledOrEager, compile_or_eager, with_eager_fallback
from toydiff.distributed import ProcessContext, barrier, gather_objects, setup_process
from toydiff.ema import ExponentialMovingAverage


PRECISIONS = ("no", "bf16", "auto")  # TrainConfig.mixed_precision, autocast_for


@dataclass
class TrainConfig:
    steps: int = 3000
    batch_size: int = 512              # global: split across processes under torchrun
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    adam_betas: tuple = (0.9, 0.999)
    warmup_steps: int = 100
    lr_schedule: str = "cosine"        # "cosine" (to min_lr_fraction) or "constant" after warm-up
    min_lr_fraction: float = 0.05
    grad_clip: float = 1.0             # max gradient norm; 0 disables clipping
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 100
    loss_bins: int = 10                # the loss is also logged in this many equal bins of t
    checkpoint_every: int = 1000       # 0: only at the end
    device: str = "auto"
    # "bf16": forward passes under bf16 autocast (autocast_for), on a GPU or a CPU; "no": fp32 throughout;
    # "auto": bf16 where the device's bf16 products are native (fast_bf16), fp32 elsewhere
    mixed_precision: str = "no"
    # torch.compile the training forward (and backward); falls back to eager where the machine cannot
    # compile (toydiff.compilation). The first steps are slower while it compiles.
    compile: bool = False
    progress: bool = True
    # Steps after which a copy of the EMA weights is kept (checkpoint key "snapshots", TrainResult.snapshots):
    # an early, weaker version of the model, e.g. the guide of autoguidance (toydiff.guidance).
    snapshot_steps: tuple = ()

    def validate(self) -> None:
        positive = {"steps": self.steps, "batch_size": self.batch_size, "loss_bins": self.loss_bins,
                    "log_every": self.log_every}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"TrainConfig.lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.mixed_precision must be one of {', '.join(map(repr, PRECISIONS))}, "
                             f"got {self.mixed_precision!r}")
        for step in self.snapshot_steps:
            if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= self.steps:
                raise ValueError(f"TrainConfig.snapshot_steps are steps in 1..{self.steps} (the run's length), "
                                 f"got {list(self.snapshot_steps)}")


class RunConfig:
    """Mixin for a run's ``@dataclass`` description that has a ``train: TrainConfig`` field.

    ``to_dict`` gives the plain types stored in a checkpoint (the training settings are stored
    separately, so a resumed run may change them); ``from_plain`` rebuilds the dataclass, ignoring
    keys it does not know, with the nested dataclasses passed in already built.
    """

    def to_dict(self) -> dict:
        description = asdict(self)
        description.pop("train")
        return description

    @classmethod
    def from_plain(cls, description: dict, train: Optional[TrainConfig] = None, **nested):
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in description.items() if k in known and k not in nested and k != "train"}
        return cls(**values, **nested, train=train or TrainConfig())


class GuidedRunConfig(RunConfig):
    """Mixin for a run description with a ``guide_fraction`` field: autoguidance's guide (toydiff.guidance)
    is the EMA weights after that share of the training steps, kept in the checkpoint as a snapshot
    (TrainConfig.snapshot_steps). An early snapshot of the same run is a weaker model of the same
    distribution, and free: no extra training. guide_fraction 0 keeps none.
    """

    def check_guide_fraction(self) -> None:
        if not 0.0 <= self.guide_fraction < 1.0:
            raise ValueError(f"guide_fraction is the share of training after which the EMA weights are kept as "
                             f"autoguidance's guide, in [0, 1) (0: none); got {self.guide_fraction}")

    def guide_step(self) -> int:
        """The training step whose EMA weights become the guide: guide_fraction of the steps (0: no guide)."""
        return max(1, round(self.guide_fraction * self.train.steps)) if self.guide_fraction > 0 else 0

    def train_config_with_guide(self) -> TrainConfig:
        """``self.train`` with the guide's step among its snapshot steps. The step is asked of this training
        only: self.train stays as given, so that a copy of the run with fewer steps (e.g. a shorter baseline)
        does not inherit a snapshot step beyond its end."""
        step = self.guide_step()
        if not step:
            return self.train
        return replace(self.train, snapshot_steps=tuple(sorted({*self.train.snapshot_steps, step})))

    def guide_from(self, snapshots: dict, build: Callable[[], nn.Module], device="cpu") -> Optional[nn.Module]:
        """``build()`` loaded with the snapshot of ``guide_step()``, in eval mode without gradients; None for a
        run without a guide or without its snapshot (e.g. one resumed with another number of steps, whose
        guide step moved). A snapshot that does not fit the model raises RuntimeError (load_state_dict's)."""
        step = self.guide_step()
        if not step or step not in snapshots:
            return None
        guide = build()
        guide.load_state_dict(snapshots[step])
        return guide.to(device).eval().requires_grad_(False)


class RecipeChangedError(CheckpointError):
    """The checkpoint to resume from was written by a run with another configuration; ``differing`` names
    the settings that differ."""

    def __init__(self, path, differing: list):
        self.path, self.differing = Path(path), list(differing)
        super().__init__(f"{path} was written by a run with a different configuration (differs in: "
                         f"{', '.join(self.differing) or 'everything'}); use another output folder, or delete the "
                         "checkpoint to start over")


# Where a checkpoint of another recipe is kept when a new run takes its place: beside it.
PREVIOUS_RECIPE_CHECKPOINT = "checkpoint.previous-recipe.pt"


def set_aside(checkpoint_path, differing: list) -> Path:
    """Move a checkpoint written by another recipe to PREVIOUS_RECIPE_CHECKPOINT in its folder (kept, not
    deleted), say so in one line naming the settings that differ, and return where it went."""
    checkpoint_path = Path(checkpoint_path)
    aside = checkpoint_path.with_name(PREVIOUS_RECIPE_CHECKPOINT)
    checkpoint_path.replace(aside)
    print(f"{checkpoint_path} was trained with another recipe (differs in: {', '.join(differing)}); moved it to "
          f"{aside.name}, training anew", flush=True)
    return aside


def recipe_differences(stored: dict, asked: dict) -> list:
    """The top-level keys in which two run descriptions differ, nested dictionaries compared key by key.

    A setting the stored description lacks (the checkpoint predates it) counts as unchanged when it is
    asked for off (False, None, 0 or empty), as every setting a later version adds is by default, so that
    a new option does not make every older checkpoint another recipe. Any other missing key differs.
    """
    absent = object()

    def same(old, new) -> bool:
        if isinstance(old, dict) and isinstance(new, dict):
            return all(same(old.get(key, absent), new.get(key, absent)) for key in old.keys() | new.keys())
        if old is absent:  # off: None, False, or a zero or empty number or sequence (not True, not a string)
            return new is None or new is False or (type(new) in (int, float, tuple, list) and not new)
        return old == new

    return sorted(key for key in stored.keys() | asked.keys() if not same(stored.get(key, absent), asked.get(key, absent)))


def retrain_if_recipe_changed(train_run: Callable[[], object]):
    """``train_run()``, a training that resumes from its checkpoint; if that checkpoint was written by another
    recipe (the library's defaults changed since it was trained, say), set it aside and train again from
    scratch. What ``make demo`` does with the runs of an older version; the command lines instead refuse
    such a checkpoint (exit 2), since there the user chose the folder."""
    try:
        return train_run()
    except RecipeChangedError as error:
        set_aside(error.path, error.differing)
        return train_run()


class TensorBatches:
    """An in-memory data set of aligned tensors, from which random batches are drawn.

    Every data set in this project is generated and fits in memory, so this is all the data
    loading the training loop needs; it keeps the batch order reproducible through the generator.
    """

    def __init__(self, *tensors: torch.Tensor):
        if not tensors:
            raise ValueError("TensorBatches needs at least one tensor")
        length = len(tensors[0])
        if length == 0:
            raise ValueError("the training data set is empty")
        for tensor in tensors:
            if len(tensor) != length:
                raise ValueError(f"tensors of different lengths: {[len(x) for x in tensors]}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def to(self, device) -> "TensorBatches":
        return TensorBatches(*(x.to(device) for x in self.tensors))

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple:
        index = torch.randint(0, len(self), (batch_size,), generator=generator, device=generator.device)
        return tuple(x[index.to(x.device)] for x in self.tensors)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``seconds`` counts the whole run's training time, over every session that a resume continued,
    like the "seconds" of each history entry and of the checkpoint; ``session_seconds`` counts only
    this call's. Neither includes the time spent in ``evaluate``. A run resumed from a finished
    checkpoint has ``session_seconds`` near 0 and ``seconds`` equal to the training it loaded.
    """

    model: nn.Module                   # the trained (raw) model
    ema_model: nn.Module               # its exponential moving average: sample from this one
    step: int
    history: list = field(default_factory=list)  # one dict per log interval
    seconds: float = 0.0               # training seconds of the whole run, resumed sessions included
    session_seconds: float = 0.0       # training seconds of this call only
    snapshots: dict = field(default_factory=dict)  # {step: EMA state_dict} at TrainConfig.snapshot_steps


def learning_rate_at(config: TrainConfig, step: int) -> float:
    """Linear warm-up to ``learning_rate``, then constant or cosine decay to ``min_lr_fraction``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.learning_rate
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.learning_rate * (config.min_lr_fraction + (1 - config.min_lr_fraction) * cosine)


class _LossByTimestep:
    """Accumulates per-example losses into equal-width bins of t between two log lines."""

    def __init__(self, num_bins: int, num_timesteps: Optional[int]):
        self.num_bins, self.num_timesteps = num_bins, num_timesteps
        self.reset()

    def reset(self):
        self.sums = torch.zeros(self.num_bins, dtype=torch.float64)
        self.counts = torch.zeros(self.num_bins, dtype=torch.float64)

    def add(self, logs: dict):
        if self.num_timesteps is None or "t" not in logs or "per_example_loss" not in logs:
            return
        t = logs["t"].flatten().cpu()
        losses = logs["per_example_loss"].flatten().double().cpu()
        bins = (t * self.num_bins // self.num_timesteps).clamp(0, self.num_bins - 1)
        self.sums.index_add_(0, bins, losses)
        self.counts.index_add_(0, bins, torch.ones_like(losses))

    def means(self) -> list:
        means = self.sums / self.counts.clamp_min(1)
        return [float(m) if c > 0 else float("nan") for m, c in zip(means, self.counts)]


@contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C into a flag checked between steps; a second one interrupts at once."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        flag["stop"] = True
        signal.signal(signal.SIGINT, previous)  # a second Ctrl-C behaves as usual

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def fast_bf16(device) -> bool:
    """Whether bf16 matrix products are native on ``device``: a CUDA GPU that supports bf16, or a CPU with
    AMX tiles or AVX-512 BF16 instructions (elsewhere a CPU emulates them, slower than fp32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def autocast_for(mixed_precision: str, device):
    """The context a forward pass runs in: bf16 autocast on ``device`` for "bf16", none for "no", and for
    "auto" bf16 where ``fast_bf16(device)``, else none.

    Under autocast the matrix products (linear layers, convolutions, attention) run in bf16 while the
    weights, the optimizer and what autocast keeps in fp32 (LayerNorm, softmax, the loss) stay fp32. Run
    only the forward and the loss inside it; ``loss.backward()`` goes outside. Where bf16 is not native,
    a CPU emulates it and a step runs slower than in fp32: hence "auto".
    """
    if resolved_precision(mixed_precision, device) == "no":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def resolved_precision(mixed_precision: str, device) -> str:
    """What ``mixed_precision`` means on ``device``: "bf16" or "no" ("auto" resolved by ``fast_bf16``)."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(map(repr, PRECISIONS))}, got {mixed_precision!r}")
    if mixed_precision == "auto":
        return "bf16" if fast_bf16(device) else "no"
    return mixed_precision


def unwrap_distributed(model):
    """The network inside a DistributedDataParallel wrapper, also when compile_or_eager wraps that (the loop's
    forward under torchrun, what an objective is given); any other model as it is. For what a wrapper lacks
    (the network's config) or need not do (synchronise a forward pass that takes no gradient)."""
    inner = model.model if isinstance(model, CompiledOrEager) else model
    return inner.module if isinstance(inner, nn.parallel.DistributedDataParallel) else model


def _forward_backward(objective, forward_model, batch, generator, autocast, optimizer, step: int):
    """One step's loss and gradients (the optimizer not yet stepped): (loss, the objective's logs)."""
    with autocast:
        loss, logs = objective(forward_model, batch, generator)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"the loss became {loss.item()} at step {step}; the last good checkpoint is kept. "
            "Lower the learning rate or enable gradient clipping"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss, logs


def train(model: nn.Module, objective: Callable, data: TensorBatches, config: TrainConfig,
          checkpoint_path=None, run_config: Optional[dict] = None, resume: bool = True,
          checkpoint_kind: str = "toydiff.run", num_timesteps: Optional[int] = None,
          on_log: Optional[Callable[[dict], None]] = None,
          evaluate: Optional[Callable[[nn.Module, int], dict]] = None, evaluate_every: int = 0) -> TrainResult:
    """Train ``model`` on ``objective`` over batches of ``data``; return the model and its EMA.

    checkpoint_path: where to write the run's single checkpoint (None: no checkpoints).
    run_config: plain-type description of the run (model config, data set, schedule…), stored in the
        checkpoint so that the run can be rebuilt; on resume it must match the stored one.
    resume: continue from ``checkpoint_path`` if it exists.
    num_timesteps: T, for logging the loss in bins of t (taken from ``objective.schedule`` if present).
    on_log: called with each history entry (e.g. to print or plot progress).
    evaluate: ``evaluate(ema_model, step) -> dict`` of figures (accuracy, a distance, samples…), called
        every ``evaluate_every`` steps (a multiple of ``log_every``) and stored under "evaluation" in
        that step's history entry. Its time is not counted in the entry's "seconds" (training time
        only), so curves of quality against training time stay honest.
    """
    config.validate()
    if evaluate is not None and (evaluate_every < 1 or evaluate_every % config.log_every):
        raise ValueError(f"evaluate_every must be a positive multiple of log_every={config.log_every}, "
                         f"got {evaluate_every}")
    context: ProcessContext = setup_process(config.device)
    device = context.device
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {context.world_size} processes")
    local_batch = config.batch_size // context.world_size
    run_config = run_config or {}
    if num_timesteps is None and hasattr(objective, "schedule"):
        num_timesteps = objective.schedule.num_timesteps

    model = model.to(device)
    data = data.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]  # listed once, not walked every step
    # fused: one kernel updates every tensor. On CPU torch otherwise takes its per-tensor Python loop,
    # measured at ~15% of a toy training step; fused beat foreach by ~9% here.
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, betas=tuple(config.adam_betas),
                                  weight_decay=config.weight_decay, fused=True)
    ema = ExponentialMovingAverage(model, config.ema_decay)
    generator = torch.Generator(device=device)
    # Each process draws different batches; rank 0 of a single-process run uses the seed itself.
    generator.manual_seed(config.seed + 1_000_003 * context.rank)
    start_step, history, resumed_seconds = 0, [], 0.0
    snapshots: dict = {}

    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path, kind=checkpoint_kind)
        differing = recipe_differences(state.get("config", {}), run_config or {})
        if differing:
            raise RecipeChangedError(checkpoint_path, differing)
        unwrap_distributed(model).load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, history = int(state["step"]), list(state.get("history", []))
        snapshots = dict(state.get("snapshots", {}))
        resumed_seconds = float(state.get("seconds", history[-1].get("seconds", 0.0) if history else 0.0))
        generators = state["rng"]["generators"]
        if len(generators) == context.world_size:
            generator.set_state(generators[context.rank].to(generator.get_state().device))
        else:  # a different number of processes: reproducible, but not the same stream as before
            generator.manual_seed(config.seed + 1_000_003 * context.rank + start_step)
        torch.set_rng_state(state["rng"]["torch_cpu"])

    if context.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def write_checkpoint(step: int) -> None:
        generator_states = gather_objects(context, generator.get_state().cpu())
        if context.is_main and checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "kind": checkpoint_kind,
                "config": run_config,
                "train_config": asdict(config),
                "model": unwrap_distributed(model).state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "rng": {"generators": generator_states, "torch_cpu": torch.get_rng_state()},
                "history": history,
                "snapshots": snapshots,
                "seconds": training_seconds(),  # training time up to this step, over all sessions
            })
        barrier(context)

    # The objective calls the compiled model; checkpoints, EMA and clipping use `model`, whose
    # parameters it shares.
    forward_model = compile_or_eager(model, enabled=config.compile)
    autocast = autocast_for(config.mixed_precision, device)
    bins = _LossByTimestep(config.loss_bins, num_timesteps)
    window_loss, window_steps = 0.0, 0
    # Training seconds so far: carried over a resume, and excluding time spent in `evaluate`.
    evaluation_seconds = 0.0
    started = time.perf_counter()

    def training_seconds() -> float:
        return resumed_seconds + time.perf_counter() - started - evaluation_seconds

    model.train()
    progress = tqdm(range(start_step, config.steps), initial=start_step, total=config.steps,
                    disable=not (config.progress and context.is_main), desc="train", leave=False)
    completed = start_step  # steps finished so far
    with _deferred_interrupt() as interrupt:
        for step in progress:
            lr = learning_rate_at(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = data.sample(local_batch, generator)
            def one_step():
                return _forward_backward(objective, forward_model, batch, generator, autocast, optimizer, step)

            if context.distributed:  # a backward that fails to compile stops the run: see with_eager_fallback
                loss, logs = one_step()
            else:  # where the backward fails to compile, the step is redone eagerly with the same draws
                drawn = generator.get_state() if getattr(forward_model, "compiled", False) else None
                loss, logs = with_eager_fallback(forward_model, one_step, lambda: generator.set_state(drawn))
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip, foreach=True)
            optimizer.step()
            ema.update(unwrap_distributed(model))
            if step + 1 in config.snapshot_steps:
                snapshots[step + 1] = {name: value.detach().clone() for name, value in ema.model.state_dict().items()}

            window_loss += loss.item()
            window_steps += 1
            bins.add(logs)
            completed = step + 1
            if completed % config.log_every == 0 or completed == config.steps:
                entry = {"step": completed, "loss": window_loss / window_steps, "lr": lr,
                         "loss_by_t": bins.means() if num_timesteps else [],
                         "seconds": training_seconds()}
                if evaluate is not None and completed % evaluate_every == 0 and context.is_main:
                    evaluation_started = time.perf_counter()
                    entry["evaluation"] = evaluate(ema.model, completed)
                    evaluation_seconds += time.perf_counter() - evaluation_started
                    model.train()
                history.append(entry)
                progress.set_postfix(loss=f"{entry['loss']:.4f}")
                if on_log is not None and context.is_main:
                    on_log(entry)
                window_loss, window_steps = 0.0, 0
                bins.reset()
            if config.checkpoint_every and completed % config.checkpoint_every == 0 and completed < config.steps:
                write_checkpoint(completed)
            if interrupt["stop"]:
                write_checkpoint(completed)
                progress.close()
                raise KeyboardInterrupt(f"stopped at step {completed}; checkpoint written to {checkpoint_path}")
    progress.close()
    total_seconds = training_seconds()  # read before the last write, like the last history entry
    if checkpoint_path is not None and (completed > start_step or not checkpoint_path.exists()):
        write_checkpoint(completed)
    return TrainResult(unwrap_distributed(model), ema.model, completed, history, seconds=total_seconds,
                       session_seconds=total_seconds - resumed_seconds, snapshots=snapshots)
