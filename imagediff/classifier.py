"""Two classifiers with two different jobs; never swap them.

    EvaluationClassifier    a small CNN on clean *pixels*, trained on real images only. It grades
                            samples: accuracy against the requested class, and the features in which
                            the Fréchet distance is measured (imagediff.metrics).
    NoisyLatentClassifier   p(y | z_t, t) on *noisy latents* at every noise level, for classifier
                            guidance (Dhariwal & Nichol 2021): its gradient ∇ log p(y | z_t) steers
                            the sampler. It holds a DiT trunk (imagediff.dit.DiTTrunk: patches,
                            positions, the timestep embedding and adaLN-Zero blocks) and pools its
                            tokens into a linear head.

A sampler guided by the network that also grades it would be rewarded for fooling that network, not
for drawing the right thing, which is why grading uses a separately trained classifier on pixels.

Both are trained by toydiff's training loop (EMA, checkpoints, resume) with the objectives below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from imagediff.data import make_dataset
from imagediff.dit import DiTConfig, DiTTrunk, stored_dit_fields
from toydiff.checkpoints import CheckpointError, load_checkpoint
from toydiff.distributed import process_device
from toydiff.losses import ClassifierObjective
from toydiff.training import RunConfig, TensorBatches, TrainConfig, train

# ---------------------------------------------------------------------------------------------
#                                The evaluation classifier
# ---------------------------------------------------------------------------------------------


@dataclass
class EvaluationClassifierConfig:
    image_channels: int = 3
    image_size: int = 32
    num_classes: int = 42
    width: int = 32                 # channels of the first stage; doubled at each of the next two
    feature_dim: int = 128          # the penultimate layer: the features of the Fréchet distance

    def __post_init__(self) -> None:
        if self.image_size % 8:
            raise ValueError(f"EvaluationClassifierConfig.image_size must be divisible by 8 (three "
                             f"halvings), got {self.image_size}")
        if self.num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got num_classes={self.num_classes}")


def _conv_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm and SiLU, then halve the resolution."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.GroupNorm(8, out_channels), nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.GroupNorm(8, out_channels), nn.SiLU(),
        nn.AvgPool2d(2),
    )


class EvaluationClassifier(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> logits (B, num_classes); ``features`` gives (B, feature_dim)."""

    def __init__(self, config: Optional[EvaluationClassifierConfig] = None) -> None:
        super().__init__()
        self.config = config or EvaluationClassifierConfig()
        c = self.config
        self.stages = nn.Sequential(
            _conv_stage(c.image_channels, c.width),      # (B, w, H/2, W/2)
            _conv_stage(c.width, 2 * c.width),           # (B, 2w, H/4, W/4)
            _conv_stage(2 * c.width, 4 * c.width),       # (B, 4w, H/8, W/8)
        )
        flat = 4 * c.width * (c.image_size // 8) ** 2
        # Flatten rather than pool: where the shape sits is not the class, but its outline is, and
        # a flatten keeps the layout the last convolutions saw.
        self.to_features = nn.Sequential(nn.Flatten(), nn.Linear(flat, c.feature_dim), nn.SiLU())
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def check_images(self, images: torch.Tensor) -> None:
        c = self.config
        expected = (c.image_channels, c.image_size, c.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"EvaluationClassifier expected images (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, feature_dim): the space of the Fréchet distance."""
        self.check_images(images)
        return self.to_features(self.stages(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # (B, num_classes)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (N, K) and features (N, feature_dim) of many images, in batches, in eval mode."""
        was_training = self.training
        self.eval()
        device = self.head.weight.device
        logits, features = [], []
        for start in range(0, images.shape[0], batch_size):
            batch_features = self.features(images[start:start + batch_size].to(device))
            features.append(batch_features)
            logits.append(self.head(batch_features))
        self.train(was_training)
        return torch.cat(logits), torch.cat(features)


class CrossEntropyObjective:
    """Plain supervised classification of clean images, in the shape toydiff's training loop expects."""

    def __call__(self, model, batch, generator=None):
        images, labels = batch
        loss = F.cross_entropy(model(images), labels)
        return loss, {}


# ---------------------------------------------------------------------------------------------
#                               The noisy classifier for guidance
# ---------------------------------------------------------------------------------------------


class NoisyLatentClassifier(nn.Module):
    """p(y | z_t, t): a DiT trunk whose tokens are averaged and mapped to class logits.

    The trunk is conditioned on t only (it has no label input: the label is what it predicts), so
    it is built with num_classes = 0; ``num_labels`` is the number of classes it outputs.
    Called as ``classifier(z_t, t) -> (B, num_labels)``, the signature toydiff's classifier_guidance uses.
    """

    def __init__(self, config: DiTConfig, num_labels: int) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got num_labels={num_labels}")
        self.config = replace(config, num_classes=0)
        self.num_labels = num_labels
        self.trunk = DiTTrunk(self.config)
        hidden = self.config.hidden_dim
        self.head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, num_labels))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t: (B, C, H, W) noisy latents; t: (B,) int64. Returns logits (B, num_labels)."""
        x, _ = self.trunk(x_t, t)  # (B, N, D)
        return self.head(x.mean(dim=1))  # (B, num_labels)

    def config_dict(self) -> dict:
        return {"dit": asdict(self.config), "num_labels": self.num_labels}


# ---------------------------------------------------------------------------------------------
#                                     Training and loading
# ---------------------------------------------------------------------------------------------

EVALUATION_KIND = "imagediff.evaluation_classifier"
NOISY_KIND = "imagediff.noisy_classifier"


@dataclass
class EvaluationRunConfig(RunConfig):
    dataset: str = "shapes"
    num_train_images: int = 20_000
    # Not the diffusion model's seed: the grader learns from other images than the generator did.
    data_seed: int = 100
    image_size: int = 32
    dataset_options: dict = field(default_factory=dict)
    classifier: EvaluationClassifierConfig = field(default_factory=EvaluationClassifierConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, batch_size=64, learning_rate=2e-3, warmup_steps=50, ema_decay=0.995, log_every=100,
        checkpoint_every=500))  # held-out real images: 100% after 1500 steps, only 91% after 600


def train_evaluation_classifier(config: EvaluationRunConfig, out_dir=None, resume: bool = True,
                                on_log=None) -> EvaluationClassifier:
    """Train the grader on real images only; returns its EMA weights in eval mode."""
    data = make_dataset(config.dataset, config.num_train_images, seed=config.data_seed, image_size=config.image_size,
                        **config.dataset_options)
    config.classifier = replace(config.classifier, image_channels=data.images.shape[1], image_size=config.image_size,
                                num_classes=data.num_classes)
    torch.manual_seed(config.train.seed)
    classifier = EvaluationClassifier(config.classifier)
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    result = train(classifier, CrossEntropyObjective(), TensorBatches(data.images, data.labels), config.train,
                   checkpoint_path=checkpoint, run_config=config.to_dict(), resume=resume,
                   checkpoint_kind=EVALUATION_KIND, on_log=on_log)
    return result.ema_model.eval()


def load_evaluation_classifier(path, device: str = "cpu") -> EvaluationClassifier:
    state = load_checkpoint(path, kind=EVALUATION_KIND)
    try:
        classifier = EvaluationClassifier(EvaluationClassifierConfig(**state["config"]["classifier"]))
        classifier.load_state_dict(state["ema"]["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path} does not match this version's evaluation classifier: {error}") from None
    return classifier.to(device).eval()


def evaluation_classifier(path, config: Optional[EvaluationRunConfig] = None, device: str = "cpu",
                          on_log=None) -> EvaluationClassifier:
    """The grader in ``path`` (a checkpoint file), trained first if it is missing or unfinished."""
    path = Path(path)
    config = config or EvaluationRunConfig()
    if path.exists():
        state = load_checkpoint(path, kind=EVALUATION_KIND)
        stored = state["config"]
        for key in ("dataset", "image_size", "dataset_options", "data_seed", "num_train_images"):
            if stored.get(key, {} if key == "dataset_options" else None) != getattr(config, key):
                raise CheckpointError(f"{path} grades other data ({key} = {stored.get(key)!r}, asked for "
                                      f"{getattr(config, key)!r}): use another path or delete it")
        if state["step"] >= config.train.steps:
            return load_evaluation_classifier(path, device)
    return train_evaluation_classifier(config, out_dir=path.parent, on_log=on_log).to(device)


@dataclass
class NoisyClassifierRunConfig:
    dit: DiTConfig = field(default_factory=lambda: DiTConfig(hidden_dim=128, depth=2, num_heads=4))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, batch_size=128, learning_rate=1e-3, warmup_steps=50, ema_decay=0.995, log_every=100,
        checkpoint_every=500))


def train_noisy_classifier(run, config: Optional[NoisyClassifierRunConfig] = None, out_dir=None,
                           resume: bool = True, on_log=None) -> NoisyLatentClassifier:
    """Train p(y | x_t, t) on what the diffusion ``run`` (an ImageDiffusionModel) diffuses: its scaled
    latents (or pixels), with its schedule, so the gradient is taken in the sampler's own space."""
    from imagediff.pipeline import diffusion_training_set, vae_on  # here, to keep the two modules' imports one-way

    config = config or NoisyClassifierRunConfig()
    # Encoded where the classifier trains (toydiff.distributed.process_device), as the DiT's own training set is.
    vae = vae_on(run.vae, process_device(config.train.device)) if run.vae is not None else None
    samples, data = diffusion_training_set(run.config, vae)
    dit = replace(config.dit, in_channels=samples.shape[1], input_size=tuple(samples.shape[2:]),
                  patch_size=run.config.dit.patch_size)
    torch.manual_seed(config.train.seed + 1)
    classifier = NoisyLatentClassifier(dit, data.num_classes)
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    # The class names, in label order, so that loading can check them against the run it steers.
    description = {**classifier.config_dict(), "class_names": list(data.class_names),
                   "diffusion": run.config.to_dict()}
    if run.vae is not None:  # the latents of another VAE are another space: never resume across them
        description["vae_latent_scale"] = float(run.vae.latent_scale)
    result = train(classifier, ClassifierObjective(run.schedule), TensorBatches(samples, data.labels), config.train,
                   checkpoint_path=checkpoint, run_config=description, resume=resume, checkpoint_kind=NOISY_KIND,
                   on_log=on_log)
    return result.ema_model.eval()


def load_noisy_classifier(path, device: str = "cpu", run=None) -> NoisyLatentClassifier:
    """The noisy classifier in ``path``; with ``run`` (an ImageDiffusionModel), check it was trained on that
    run's space: the same classes, sample shape and (for latents) the same VAE."""
    state = load_checkpoint(path, kind=NOISY_KIND)
    try:
        config = state["config"]
        classifier = NoisyLatentClassifier(DiTConfig(**stored_dit_fields(config["dit"])), config["num_labels"])
        weights = state["ema"]["model"]
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} does not match this version's noisy classifier: {error}") from None
    layout = classifier.state_dict().keys()
    missing, unexpected = sorted(layout - weights.keys()), sorted(weights.keys() - layout)
    if missing or unexpected:  # e.g. the trunk's weights stored without the "trunk." of this layout
        raise CheckpointError(
            f"{path} holds a noisy classifier of another layout than this version's (missing {len(missing)} "
            f"weights such as {(missing or ['-'])[0]!r}, unexpected {len(unexpected)} such as "
            f"{(unexpected or ['-'])[0]!r}): train it again with python -m imagediff train-classifier --kind noisy")
    try:
        classifier.load_state_dict(weights)
    except RuntimeError as error:  # the right names, the wrong shapes
        reason = str(error).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path} does not match this version's noisy classifier: {reason}") from None
    if run is not None:
        expected = (run.model.config.in_channels, *run.model.config.input_size)
        got = (classifier.config.in_channels, *classifier.config.input_size)
        if classifier.num_labels != len(run.class_names) or got != expected:
            raise CheckpointError(f"{path} classifies {classifier.num_labels} classes of samples {got}, but the "
                                  f"diffusion model draws {len(run.class_names)} classes of samples {expected}")
        names = config.get("class_names")
        if names is not None and list(names) != list(run.class_names):
            raise CheckpointError(f"{path} classifies the classes {', '.join(names)}, but the diffusion model "
                                  f"draws {', '.join(run.class_names)} (in this label order)")
        stored = config.get("vae_latent_scale")
        if run.vae is not None and stored is not None and abs(stored - float(run.vae.latent_scale)) > 1e-6 * stored:
            raise CheckpointError(f"{path} was trained on the latents of a different VAE than this diffusion model's")
    return classifier.to(device).eval()
