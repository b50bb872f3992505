"""A toy diffusion run end to end: data set + schedule + MLP + objective + training loop + sampling.

This is the glue the command line, the lessons and the benchmarks share:

    run = train_toy_model(ToyRunConfig(dataset="spiral"), out_dir="runs/spiral")
    points = run.sample(4000, sampler="ddim", num_steps=50)           # (4000, 2)
    run = load_toy_model("runs/spiral/checkpoint.pt")                  # the same model again
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Optional

import torch

from toydiff.checkpoints import CheckpointError, load_checkpoint
from toydiff.data import get_dataset, make_dataset
from toydiff.guidance import guided_denoiser
from toydiff.losses import ClassifierObjective, DiffusionObjective
from toydiff.models import MLPConfig, MLPDenoiser, NoisyClassifier
from toydiff.samplers import SAMPLERS, sample
from toydiff.schedules import make_schedule
from toydiff.training import RunConfig, TensorBatches, TrainConfig, train

DENOISER_KIND = "toydiff.denoiser"
CLASSIFIER_KIND = "toydiff.noisy_classifier"


@dataclass
class ToyRunConfig(RunConfig):
    dataset: str = "spiral"
    num_train_points: int = 20_000
    data_seed: int = 0
    # linear, not cosine: cosine's last step drops ᾱ from 2.4e-6 to 2.4e-9 (β clipped at 0.999), and
    # the first trailing DDIM step multiplies any error in ε̂ - including a classifier-guidance shift -
    # by sqrt(ᾱ_prev / ᾱ_T) ≈ 600. Linear's last steps change ᾱ gently (4.0e-5 -> 6.0e-5).
    schedule: str = "linear"
    num_timesteps: int = 1000
    zero_terminal_snr: bool = False
    # v, not ε: with ε-prediction x̂_0 = (x_t - sqrt(1-ᾱ) ε̂) / sqrt(ᾱ) amplifies small errors at high
    # noise, and on the spiral a few DDIM samples in a thousand (those starting in the tail of x_T) ran
    # away to |x| > 4 (lesson 02 gives the measurement). v-prediction bounds x̂_0 and reached the
    # metric's floor.
    prediction_type: str = "v"
    weighting: str = "uniform"
    conditional: bool = True          # learn p(x | arm) and p(x) together (label dropout below)
    label_dropout: float = 0.2       # the unconditional model p(x) gets a fifth of the updates
    model: MLPConfig = field(default_factory=lambda: MLPConfig(hidden_dim=128, num_blocks=2,
                                                               fourier_frequencies=16, fourier_scale=0.3))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=2000, batch_size=512, learning_rate=3e-3))

    @classmethod
    def from_dict(cls, description: dict, train: Optional[TrainConfig] = None) -> "ToyRunConfig":
        return cls.from_plain(description, train, model=MLPConfig(**description["model"]))


@dataclass
class ToyModel:
    """A trained toy denoiser (the EMA weights) with everything needed to sample from it."""

    config: ToyRunConfig
    model: MLPDenoiser
    schedule: object
    history: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def class_names(self) -> tuple:
        return get_dataset(self.config.dataset).class_names

    @cached_property
    def class_prior(self) -> torch.Tensor:
        """p(y): the share of each class in the training data, (num_classes,) float64."""
        _, labels = make_dataset(self.config.dataset, self.config.num_train_points, self.config.data_seed)
        counts = torch.bincount(labels, minlength=len(self.class_names)).double()
        return counts / counts.sum()

    def denoiser(self, label=None, guidance_scale: float = 1.0, classifier=None, batch_size: int = 1):
        """The ``model(x, t)`` a sampler calls, conditioned and guided as asked.

        label: None for the null-label (unconditional) pass, a class index, or a (B,) tensor of them.
        """
        labels = None
        if label is not None:
            if self.model.null_label is None and classifier is None:
                raise ValueError("this model was trained without labels (unconditional): it cannot be guided to a "
                                 "class; retrain with conditional=True or use a classifier")
            num_classes = len(self.class_names)
            device = next(self.model.parameters()).device
            labels = torch.as_tensor(label, dtype=torch.int64, device=device)
            if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
                raise ValueError(f"label {label if labels.ndim == 0 else labels.tolist()} is out of range: this "
                                 f"data set has classes 0..{num_classes - 1} ({', '.join(self.class_names)})")
            if labels.ndim == 0:
                labels = labels.expand(batch_size)
        return guided_denoiser(self.model, labels, null_label=self.model.null_label, guidance_scale=guidance_scale,
                               classifier=classifier, schedule=self.schedule,
                               prediction_type=self.config.prediction_type)

    @torch.no_grad()
    def sample(self, num_samples: int, sampler: str = "ddim", num_steps: int = 50, eta: float = 0.0,
               spacing: str = "trailing", label: Optional[int] = None, guidance_scale: float = 1.0,
               classifier=None, seed: int = 0, callback=None, null_label: bool = False) -> torch.Tensor:
        """Draw ``num_samples`` points (N, 2) in data coordinates.

        label: the class to draw from. None draws from p(x): a conditional model does it ancestrally,
        y ~ p(y) then x ~ p(x | y) — exact, and sharper than the null-label pass, which only learns from
        the label-dropout share of the training batches. ``null_label=True`` samples that pass instead.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        x_T = torch.randn(num_samples, self.config.model.data_dim, generator=generator, device=device)
        if label is None and classifier is None and self.model.null_label is not None and not null_label:
            label_generator = torch.Generator().manual_seed(seed + 1)
            label = torch.multinomial(self.class_prior, num_samples, replacement=True, generator=label_generator)
        model = self.denoiser(label, guidance_scale, classifier, num_samples)
        return sample(model, x_T, self.schedule, sampler=sampler, num_steps=num_steps, eta=eta, spacing=spacing,
                      prediction_type=self.config.prediction_type, generator=generator, callback=callback)


def build_denoiser(config: ToyRunConfig) -> MLPDenoiser:
    num_classes = get_dataset(config.dataset).num_classes if config.conditional else 0
    config.model = MLPConfig(**{**asdict(config.model), "num_classes": num_classes})
    return MLPDenoiser(config.model)


def train_toy_model(config: ToyRunConfig, out_dir=None, resume: bool = True, on_log=None) -> ToyModel:
    """Train the denoiser of ``config``; with ``out_dir``, write out_dir/checkpoint.pt (and resume from it)."""
    torch.manual_seed(config.train.seed)  # the initial weights
    model = build_denoiser(config)
    schedule = make_schedule(config.schedule, config.num_timesteps, zero_terminal_snr=config.zero_terminal_snr)
    points, labels = make_dataset(config.dataset, config.num_train_points, config.data_seed)
    objective = DiffusionObjective(schedule, config.prediction_type, config.weighting,
                                   label_dropout=config.label_dropout if config.conditional else 0.0,
                                   null_label=model.null_label)
    data = TensorBatches(points, labels) if config.conditional else TensorBatches(points)
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    result = train(model, objective, data, config.train, checkpoint_path=checkpoint,
                   run_config=config.to_dict(), resume=resume, checkpoint_kind=DENOISER_KIND, on_log=on_log)
    return ToyModel(config, result.ema_model.eval(), schedule, result.history, result.seconds)


def load_toy_model(path, device: str = "cpu") -> ToyModel:
    """Rebuild a trained toy model from its checkpoint (the EMA weights)."""
    state = load_checkpoint(path, kind=DENOISER_KIND)
    try:
        config = ToyRunConfig.from_dict(state["config"], TrainConfig(**state.get("train_config", {})))
        model = MLPDenoiser(config.model)
        model.load_state_dict(state["ema"]["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path} does not match this version's toy model: {error}") from None
    schedule = make_schedule(config.schedule, config.num_timesteps, zero_terminal_snr=config.zero_terminal_snr)
    return ToyModel(config, model.to(device).eval(), schedule, state.get("history", []))


# ----------------------------------------------------------------------------------------------
# The noisy classifier for classifier guidance
# ----------------------------------------------------------------------------------------------

def train_noisy_classifier(config: ToyRunConfig, train_config: Optional[TrainConfig] = None, out_dir=None):
    """Train p(y | x_t, t) on the run's data set and schedule.  Returns the (EMA) classifier."""
    num_classes = get_dataset(config.dataset).num_classes
    classifier_config = MLPConfig(**{**asdict(config.model), "num_classes": num_classes})
    torch.manual_seed(config.train.seed + 1)
    classifier = NoisyClassifier(classifier_config)
    schedule = make_schedule(config.schedule, config.num_timesteps, zero_terminal_snr=config.zero_terminal_snr)
    points, labels = make_dataset(config.dataset, config.num_train_points, config.data_seed)
    checkpoint = Path(out_dir) / "classifier.pt" if out_dir is not None else None
    run_config = {"dataset": config.dataset, "classifier": asdict(classifier_config),
                  "schedule": config.schedule, "num_timesteps": config.num_timesteps}
    result = train(classifier, ClassifierObjective(schedule), TensorBatches(points, labels),
                   train_config or TrainConfig(steps=1500), checkpoint_path=checkpoint, run_config=run_config,
                   checkpoint_kind=CLASSIFIER_KIND)
    return result.ema_model.eval()


def load_noisy_classifier(path, device: str = "cpu") -> NoisyClassifier:
    state = load_checkpoint(path, kind=CLASSIFIER_KIND)
    classifier = NoisyClassifier(MLPConfig(**state["config"]["classifier"]))
    classifier.load_state_dict(state["ema"]["model"])
    return classifier.to(device).eval()
