"""Latent diffusion end to end: train the VAE, encode, train the DiT, sample, decode.

    vae = train_vae(VAERunConfig(), out_dir="runs/vae")                      # pixels <-> latents
    run = train_image_diffusion(DiffusionRunConfig(vae_checkpoint="runs/vae/checkpoint.pt"),
                                out_dir="runs/latent")                        # a DiT on latents
    images = run.sample(labels=[3] * 16, guidance_scale=3.0)                  # (16, 3, 32, 32) in [-1, 1]
    run = load_image_diffusion("runs/latent/checkpoint.pt")                   # the same model again

The same DiT can also denoise pixels directly (``space="pixel"``): that is the comparison that shows
what the latent space buys. Nothing here is new diffusion math: the schedule, the objective, the
samplers, guidance and the training loop are toydiff's, called on tensors of shape (B, C, H, W)
instead of (B, 2). This module only decides *what* is diffused (pixels or scaled latents) and turns
a sample back into an image.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from imagediff.data import DataError, ImageDataset, make_dataset
from imagediff.data.shapes import turn_images
from imagediff.dit import DiT, DiTConfig, dit_config, factored_label_parts, stored_dit_fields
from imagediff.vae import VAE, VAEConfig, VAELoss, vae_config
from toydiff.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from toydiff.distributed import barrier, process_device, setup_process
from toydiff.guidance import guided_denoiser, with_inputs
from toydiff.losses import DiffusionObjective
from toydiff.samplers import SAMPLERS, SelfConditioned, sample
from toydiff.schedules import make_schedule
from toydiff.training import GuidedRunConfig, RunConfig, TensorBatches, TrainConfig, train

# Autoguidance (toydiff.guidance.autoguidance_term): the scale w a sampler uses by default with a run that
# has a guide, the EMA weights its own training kept early on (DiffusionRunConfig.guide_fraction);
# docs/image_levers.md measures it.
AUTOGUIDANCE_SCALE = 2.0
# Guidance rescale φ (toydiff.guidance.rescale_guidance) that a sampler applies when none is asked for and
# classifier-free guidance extrapolates past the conditional model (s > 1); docs/image_levers.md, "Guidance
# rescale by default", measures it.
GUIDANCE_RESCALE = 1.0
# An angle-conditioned run whose data hold at most this many distinct angles (make_shapes(num_angles=n))
# keeps them, and a sampler draws among them rather than over the whole range.
MAX_STORED_ANGLES = 64
# The generated data sets that can draw every image upright with the same seed (make_shapes(rotate=False)):
# those a run can learn in the canonical frame (DiffusionRunConfig.canonical_frame).
UPRIGHT_DATASETS = ("shapes",)
VAE_KIND = "imagediff.vae"
DIFFUSION_KIND = "imagediff.diffusion"
SPACES = ("latent", "pixel")


def default_rescale(guidance_scale: float, classifier=None) -> float:
    """The guidance rescale φ of a sampling run that asks for none: GUIDANCE_RESCALE where classifier-free
    guidance extrapolates (s > 1), which inflates the spread of the prediction more the larger s is; 0 for
    s <= 1, so that s = 0 stays the unconditional model and s = 1 the conditional one, and 0 under classifier
    guidance, which rescale does not apply to. Continuous in s: at s = 1 the guided prediction is the
    conditional one, which rescale leaves as it is."""
    return GUIDANCE_RESCALE if classifier is None and guidance_scale > 1 else 0.0


def _training_data(config) -> ImageDataset:
    if config.num_train_images < 2:
        raise DataError(f"num_train_images must be at least 2, got {config.num_train_images}")
    return make_dataset(config.dataset, config.num_train_images, seed=config.data_seed, image_size=config.image_size,
                        **config.dataset_options)


def _upright_training_data(config, data: ImageDataset) -> ImageDataset:
    """The training images of ``data`` drawn in their own frame (DiffusionRunConfig.canonical_frame):
    the same draws with every angle 0, labelled with the angles ``data`` drew them at."""
    if data.angles is None or config.dataset not in UPRIGHT_DATASETS:
        raise DataError(f"canonical_frame needs a data set that records each image's angle and can draw it "
                        f"upright ({', '.join(UPRIGHT_DATASETS)}); the {config.dataset} data set cannot: train with "
                        f"canonical_frame=False (--no-canonical-frame)")
    upright = make_dataset(config.dataset, config.num_train_images, seed=config.data_seed,
                           image_size=config.image_size, **{**config.dataset_options, "rotate": False})
    return ImageDataset(upright.images, upright.labels, upright.class_names, angles=data.angles)


# ---------------------------------------------------------------------------------------------
#                                          The VAE run
# ---------------------------------------------------------------------------------------------


@dataclass
class VAERunConfig(RunConfig):
    dataset: str = "shapes"
    num_train_images: int = 20_000
    data_seed: int = 0
    image_size: int = 32
    dataset_options: dict = field(default_factory=dict)  # e.g. {"colours": ["red", "blue"]} for shapes
    vae: VAEConfig = field(default_factory=lambda: vae_config("tiny"))
    # Its training time and PSNR on 2 cores are measured by `make bench` (imagediff.bench; README).
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, batch_size=32, learning_rate=2e-3, warmup_steps=50, ema_decay=0.995, log_every=100,
        checkpoint_every=200))

    @classmethod
    def from_dict(cls, description: dict, train: Optional[TrainConfig] = None) -> "VAERunConfig":
        return cls.from_plain(description, train, vae=VAEConfig(**description["vae"]))


@dataclass
class TrainedVAE:
    config: VAERunConfig
    vae: VAE                        # the EMA weights, eval mode, with latent_scale measured
    history: list = field(default_factory=list)
    seconds: float = 0.0


def train_vae(config: VAERunConfig, out_dir=None, resume: bool = True, on_log=None,
              images: Optional[torch.Tensor] = None) -> TrainedVAE:
    """Train the VAE with toydiff's loop, then measure its latent scale and store it in the checkpoint.

    images: (N, C, H, W) in [-1, 1] to train on instead of generating ``config.dataset`` — how the
    video layer trains this VAE on video frames (frames as a batch); ``config`` then only describes
    them (its dataset name and options go into the checkpoint, and a resume must describe the same).
    """
    torch.manual_seed(config.train.seed)
    if images is None:
        images = _training_data(config).images
    if images.ndim != 4 or images.shape[1] != config.vae.image_channels:
        raise DataError(f"the {config.dataset} images have shape {tuple(images.shape)} but the VAE expects "
                        f"(N, {config.vae.image_channels}, H, W) (image_channels={config.vae.image_channels})")
    vae = VAE(config.vae)
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    result = train(vae, VAELoss(config.vae.kl_weight), TensorBatches(images), config.train,
                   checkpoint_path=checkpoint, run_config=config.to_dict(), resume=resume,
                   checkpoint_kind=VAE_KIND, on_log=on_log)
    trained = result.ema_model.eval()
    # Pitfall 11 (docs/pitfalls.md): the scale is measured on the first few thousand training images.
    scale = trained.measure_latent_scale(images[:4096])
    # Under torchrun every process gets here with the same EMA weights, hence the same scale; one
    # of them writes it (two writers would race on the file), and the others wait until it is on disk.
    context = setup_process(config.train.device)
    if checkpoint is not None and context.is_main:
        state = load_checkpoint(checkpoint, kind=VAE_KIND)
        for weights in (state["model"], state["ema"]["model"]):
            weights["latent_scale"] = torch.tensor(scale, dtype=weights["latent_scale"].dtype)
        state["latent_scale_measured_on"] = min(4096, len(images))
        save_checkpoint(checkpoint, state)
    barrier(context)
    return TrainedVAE(config, trained, result.history, result.seconds)


def load_vae(path, device: str = "cpu") -> TrainedVAE:
    """The trained VAE (EMA weights, with its measured latent scale) from a checkpoint of train_vae."""
    state = load_checkpoint(path, kind=VAE_KIND)
    try:
        config = VAERunConfig.from_dict(state["config"], TrainConfig(**state.get("train_config", {})))
        vae = VAE(config.vae)
        vae.load_state_dict(state["ema"]["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"{path} does not match this version's VAE: {error}") from None
    if "latent_scale_measured_on" not in state:
        raise CheckpointError(f"{path} holds a VAE whose latent scale was never measured (training was "
                              "interrupted before the end?): resume its training to finish it")
    return TrainedVAE(config, vae.to(device).eval(), state.get("history", []))


def vae_on(vae: VAE, device) -> VAE:
    """``vae`` on ``device``: the VAE itself where it is already there, else a copy moved there, so that
    the caller's VAE stays where the caller put it."""
    device = torch.device(device)
    here = vae.latent_scale.device
    if here.type == device.type and (device.index is None or here.index == device.index):
        return vae
    return copy.deepcopy(vae).to(device)


@torch.no_grad()
def encode_images(vae: VAE, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] -> scaled latents (N, c, H/f, W/f), in batches, never clipped."""
    device = vae.latent_scale.device
    return torch.cat([vae.encode_to_latents(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, images.shape[0], batch_size)])


@torch.no_grad()
def decode_latents(vae: VAE, latents: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Scaled latents (N, c, h, w) -> images (N, C, h·f, w·f), not clamped (clamp only to display)."""
    device = vae.latent_scale.device
    return torch.cat([vae.decode_from_latents(latents[i:i + batch_size].to(device)).cpu()
                      for i in range(0, latents.shape[0], batch_size)])


# ---------------------------------------------------------------------------------------------
#                                        The diffusion run
# ---------------------------------------------------------------------------------------------


@dataclass
class DiffusionRunConfig(GuidedRunConfig):
    dataset: str = "shapes"
    num_train_images: int = 20_000
    data_seed: int = 0
    image_size: int = 32
    dataset_options: dict = field(default_factory=dict)  # e.g. {"shapes": ["circle", "square"]}
    space: str = "latent"                        # "latent": diffuse VAE latents; "pixel": the images
    vae_checkpoint: str = "runs/vae/checkpoint.pt"  # used when space == "latent"
    # The toy recipe carries over: linear β (gentle last steps, see toydiff.experiment) and
    # v-prediction (bounded x̂_0 at high noise).
    schedule: str = "linear"
    num_timesteps: int = 1000
    prediction_type: str = "v"
    # min-SNR (Hang et al. 2023, toydiff.losses): the lever table (python -m imagediff levers; docs/image_levers.md)
    # measured 0.56 against 0.49 accuracy at CFG s = 3 for the same 6 minutes of training.
    weighting: str = "min_snr"
    # How training draws its timesteps (toydiff.losses.sample_levels): "uniform", or "logit_normal"
    # with logit_mean / logit_std (logit_mean > 0 trains high noise levels more).
    timestep_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    label_dropout: float = 0.1                   # the null label's share of training batches (CFG)
    # Self-conditioning: the share of training batches in which the DiT also reads its own first
    # estimate of x_0 (toydiff.losses.DiffusionObjective); 0 builds a DiT without it.
    self_condition: float = 0.0
    # Factored labels (DiTConfig.label_parts): emb(label) as the sum of one vector per word of the class
    # name ("red" + "square"), so that every colour of a shape trains the same shape vector.
    factor_labels: bool = False
    # Draw in the shapes' own frame: the DiT learns every shape upright (the same draws at angle 0) and a
    # sampler turns each sample to an angle drawn from the training angles (imagediff.data.shapes.turn_images).
    # Needs a data set that records its angles and can draw upright (the shapes). None (the default) becomes
    # True for the shapes unless the DiT is told the angle (dit.angle_conditioning), False otherwise, when
    # the config is made. At equal training time it lifts CFG accuracy from about 0.5 to 0.98
    # (docs/image_levers.md).
    canonical_frame: Optional[bool] = None
    # Autoguidance's guide: the EMA weights after this share of the training steps, kept in the checkpoint
    # (0: none; toydiff.training.GuidedRunConfig, docs/image_levers.md).
    guide_fraction: float = 0.15
    # in_channels and input_size are filled in from the data (latents or pixels) when the run starts.
    dit: DiTConfig = field(default_factory=lambda: dit_config("tiny"))
    # Sized so that the VAE and this DiT together meet the bench's time target on a slow day (3500 steps
    # took 507 s of DiT training at an fp32 matmul rate of 106 GFLOP/s, a chain of 642 s; learning the
    # shapes upright, the accuracy curve is flat from about step 2500: docs/image_levers.md).
    # A short run, so a high learning rate and a short EMA. At equal time the
    # lever table measured lr 4e-3 above 2e-3 (0.62 against 0.56 with min-SNR), EMA 0.999 no better
    # than 0.995, batch 64 no better than 128, depth 6 and 64 tokens (patch 1) worse: slower steps.
    # Compiled (toydiff.compilation; eager where the machine cannot compile), with the exact GELU and, on a
    # CPU, SDPA's math kernel that compiling fuses (docs/image_levers.md, "Where the step's time goes"):
    # the bench's DiT trained its 3000 steps in 345 s, against 455 s eager.
    # Mixed precision "auto": bf16 autocast where the machine's bf16 products are native (toydiff.training.
    # fast_bf16: a GPU, or a CPU with AMX or AVX-512 BF16), fp32 elsewhere. On a 2-core CPU with AMX the
    # compiled step took 27.6 ms against 51.5 ms in fp32 (docs/image_levers.md, "bf16 products on a CPU").
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=3000, batch_size=128, learning_rate=4e-3, warmup_steps=100, ema_decay=0.995, log_every=100,
        checkpoint_every=500, compile=True, mixed_precision="auto"))

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"unknown space {self.space!r}: expected one of {', '.join(SPACES)}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")
        self.check_guide_fraction()
        self.check_angle_options()
        if not 0.0 <= self.self_condition <= 1.0:
            raise ValueError(f"self_condition is the share of self-conditioned training batches, in [0, 1]; "
                             f"got {self.self_condition}")

    def check_angle_options(self) -> None:
        """Settle canonical_frame=None (True for the shapes unless the DiT is told the angle), and refuse one
        that is not a bool or one asked for beside angle conditioning (also checked when training starts:
        ``dit`` may be replaced after the config is made)."""
        if self.canonical_frame is None:
            self.canonical_frame = self.dataset in UPRIGHT_DATASETS and not self.dit.angle_conditioning
        if not isinstance(self.canonical_frame, bool):
            raise ValueError(f"canonical_frame is True, False or None (on for the shapes), got {self.canonical_frame!r}")
        if self.canonical_frame and self.dit.angle_conditioning:
            raise ValueError("canonical_frame and dit.angle_conditioning exclude each other: a model that draws "
                             "every shape upright has no angle to be told")

    @classmethod
    def from_dict(cls, description: dict, train: Optional[TrainConfig] = None) -> "DiffusionRunConfig":
        # A run stored before guides existed kept none; one stored before canonical_frame drew every angle.
        description = {"guide_fraction": 0.0, "canonical_frame": False, **description}
        return cls.from_plain(description, train, dit=DiTConfig(**stored_dit_fields(description["dit"])))


@dataclass
class ImageDiffusionModel:
    """A trained image denoiser (EMA weights) with what it needs to turn noise into images."""

    config: DiffusionRunConfig
    model: DiT
    schedule: object
    class_names: list
    vae: Optional[VAE] = None                    # None for a pixel-space model
    history: list = field(default_factory=list)
    seconds: float = 0.0
    guide: Optional[DiT] = None                  # the EMA weights at config.guide_step(): autoguidance's guide
    # (low, high) radians of the training images' angles, for an angle-conditioned model: where a
    # sampler draws an angle for each sample it is not given one for; angle_values, the training angles
    # themselves when there were few of them (data of n orientations), drawn from instead.
    angle_range: Optional[tuple] = None
    angle_values: Optional[tuple] = None

    @property
    def default_guide_scale(self) -> float:
        """AUTOGUIDANCE_SCALE for a run that kept a guide, 1 (off) for one that did not."""
        return AUTOGUIDANCE_SCALE if self.guide is not None else 1.0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def class_index(self, prompt: str) -> int:
        """The label of a class name such as "red circle"; an unknown name lists the known ones."""
        if prompt not in self.class_names:
            raise DataError(f"unknown prompt {prompt!r}: known class names are {', '.join(self.class_names)}")
        return self.class_names.index(prompt)

    def labels_tensor(self, labels) -> torch.Tensor:
        """Class indices or class names, one per sample -> (N,) int64, checked against the classes."""
        if isinstance(labels, str):
            labels = [labels]
        if isinstance(labels, Sequence) and labels and isinstance(labels[0], str):
            labels = [self.class_index(name) for name in labels]
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if labels.numel() == 0:
            raise ValueError("no labels given: pass one class index or name per image to draw")
        if int(labels.min()) < 0 or int(labels.max()) >= len(self.class_names):
            raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1}, got {labels.tolist()}")
        return labels.to(self.device)

    def to_images(self, samples: torch.Tensor) -> torch.Tensor:
        """What the sampler drew (latents or pixels) -> images (N, C, H, W), not clamped."""
        return decode_latents(self.vae, samples) if self.vae is not None else samples.cpu()

    def angles_tensor(self, angles, count: int, generator: torch.Generator) -> Optional[torch.Tensor]:
        """(count,) float32 radians for an angle-conditioned model or one that draws in the shapes' own
        frame: ``angles`` (one number for all, or one per sample), or None to draw each from the training
        angles (uniformly over their range, or among ``angle_values`` when the run kept them). None for
        other models."""
        if self.angle_range is None:
            if angles is not None:
                raise ValueError("this model was trained without angle conditioning: it cannot be given angles "
                                 "(train with DiTConfig.angle_conditioning=True, or canonical_frame=True, on a "
                                 "data set that records them)")
            return None
        if angles is None:
            if self.angle_values is not None:
                values = torch.tensor(self.angle_values, dtype=torch.float32, device=self.device)
                return values[torch.randint(len(values), (count,), generator=generator, device=self.device)]
            low, high = self.angle_range
            return (torch.rand(count, generator=generator, device=self.device) * (high - low) + low).float()
        angles = torch.as_tensor(angles, dtype=torch.float32, device=self.device).reshape(-1)
        if len(angles) == 1:
            angles = angles.expand(count)
        if len(angles) != count:
            raise ValueError(f"angles must be one number (radians) or one per sample ({count}), got {len(angles)} values")
        if not torch.isfinite(angles).all():
            raise ValueError(f"angles must be finite numbers of radians, got {angles.tolist()}")
        self.check_trained_angles(angles)
        return angles.contiguous()

    def check_trained_angles(self, angles: torch.Tensor) -> None:
        """Refuse an angle the model never saw in training: one outside the training range (taken modulo a
        full turn), or not among the few training angles of a data set with n orientations."""
        turned = torch.remainder(angles, 2 * math.pi)  # (N,) in [0, 2π)
        if self.angle_values is not None:
            values = torch.tensor(self.angle_values, dtype=torch.float32, device=angles.device)
            gap = torch.remainder(turned[:, None] - values[None, :] + math.pi, 2 * math.pi) - math.pi  # (N, V)
            untrained = bool((gap.abs().min(dim=1).values > 1e-3).any())
            trained = f"the angles {[round(math.degrees(v), 2) for v in self.angle_values]} degrees"
        else:
            low, high = self.angle_range
            untrained = high - low < 2 * math.pi - 0.1 and bool(((turned < low - 1e-3) | (turned > high + 1e-3)).any())
            trained = f"angles from {math.degrees(low):.1f} to {math.degrees(high):.1f} degrees"
        if untrained:
            asked = sorted({round(math.degrees(a), 2) for a in angles.tolist()})
            raise ValueError(f"this model was trained on {trained} only; asked for {asked}")

    def denoiser(self, labels: Optional[torch.Tensor], guidance_scale: float = 1.0, classifier=None,
                 rescale: Optional[float] = None, guide_scale: float = 1.0, angles: Optional[torch.Tensor] = None):
        """The ``model(x, t)`` a toydiff sampler calls (see toydiff.guidance.guided_denoiser); a fresh one
        for every sampling run, since a self-conditioned model remembers its last estimate.
        rescale: guidance rescale φ; None takes `default_rescale` (φ = GUIDANCE_RESCALE for CFG at s > 1).
        guide_scale: autoguidance by ``self.guide`` (1: off; a run without a guide refuses other values).
        angles: (B,) radians, required by an angle-conditioned model (see `angles_tensor`)."""

        def network(model):
            if model is None:
                return None
            if angles is not None:
                model = with_inputs(model, angles=angles)  # the guide sees the same angles
            if self.model.config.self_condition:
                return SelfConditioned(model, self.schedule, self.config.prediction_type)
            return model

        if guide_scale != 1.0 and self.guide is None:
            raise ValueError(f"autoguidance scale {guide_scale:g} asked for, but this run kept no guide (it was "
                             "trained with guide_fraction=0, or before guides existed): use guide_scale=1")
        if rescale is None:
            rescale = default_rescale(guidance_scale, classifier)
        return guided_denoiser(network(self.model), labels, null_label=self.model.null_label,
                               guidance_scale=guidance_scale, classifier=classifier, schedule=self.schedule,
                               prediction_type=self.config.prediction_type, rescale=rescale,
                               guide=network(self.guide), guide_scale=guide_scale)

    @torch.no_grad()
    def sample(self, labels=None, num_samples: Optional[int] = None, guidance_scale: float = 1.0,
               classifier=None, rescale: Optional[float] = None, guide_scale: float = 1.0, sampler: str = "ddim",
               num_steps: int = 50,
               eta: float = 0.0, spacing: str = "trailing", seed: int = 0, callback=None,
               return_samples: bool = False,
               batch_size: int = 500, angles=None):
        """Draw images (N, C, H, W) in [-1, 1] (not clamped).

        labels: one class index or name per image, or None with ``num_samples`` for the unconditional
            (null-label) pass. guidance_scale: CFG scale s (s = 1 the conditional model), or the
            classifier-guidance scale when ``classifier`` (a NoisyLatentClassifier) is given.
        rescale: guidance rescale φ in [0, 1]; None (the default) applies GUIDANCE_RESCALE where classifier-free
            guidance extrapolates, s > 1, and none elsewhere (`default_rescale`); 0 is plain guidance.
        guide_scale: autoguidance scale w by the run's guide (1: off; ``default_guide_scale`` is the
            measured default for a run that has a guide).
        return_samples: also return what the sampler drew (scaled latents or pixels).
        angles: for an angle-conditioned model or one that draws in the shapes' own frame (whose images
            are turned after decoding; the samples ``return_samples`` gives stay upright), the orientation
            in radians (counter-clockwise) of every sample or one per sample; None draws each from the
            training angles (see `angles_tensor`), so that the samples follow the data's distribution of
            angles. Refused by other models.
        The same seed gives the same images; they are drawn in batches of ``batch_size``.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        if labels is None:
            if num_samples is None or num_samples < 1:
                raise ValueError("pass labels, or num_samples >= 1 for unconditional samples")
            label_tensor = None
            count = num_samples
        else:
            label_tensor = self.labels_tensor(labels)
            count = label_tensor.shape[0]
        config = self.model.config
        generator = torch.Generator(device=self.device).manual_seed(seed)
        angle_tensor = self.angles_tensor(angles, count, generator)  # None unless angle-conditioned
        drawn = []
        for start in range(0, count, batch_size):
            size = min(batch_size, count - start)
            x_T = torch.randn(size, config.in_channels, config.height, config.width, generator=generator,
                              device=self.device)  # (b, c, h, w)
            batch_labels = label_tensor[start:start + size] if label_tensor is not None else None
            batch_angles = None
            if angle_tensor is not None and self.config.dit.angle_conditioning:
                batch_angles = angle_tensor[start:start + size]
            model = self.denoiser(batch_labels, guidance_scale, classifier, rescale, guide_scale, batch_angles)
            drawn.append(sample(model, x_T, self.schedule, sampler=sampler, num_steps=num_steps, eta=eta,
                                spacing=spacing, prediction_type=self.config.prediction_type, generator=generator,
                                callback=callback))
        samples = torch.cat(drawn)  # (N, c, h, w); latents are never clipped (docs/pitfalls.md, pitfall 11)
        images = self.to_images(samples)
        if self.config.canonical_frame:  # drawn upright: each turned to its angle (the images are on the CPU)
            images = turn_images(images, angle_tensor.to(images.device))
        return (images, samples) if return_samples else images


def build_dit(config: DiffusionRunConfig, sample_shape: Sequence[int], num_classes: int,
              class_names: Optional[Sequence[str]] = None) -> DiT:
    """The run's DiT, sized for samples of shape (C, H, W) and ``num_classes`` labels (named
    ``class_names``, which a run with ``factor_labels`` needs)."""
    channels, height, width = sample_shape
    parts = None
    if config.factor_labels:
        if class_names is None or len(class_names) != num_classes:
            raise ValueError("factor_labels needs the names of the classes, to split them into parts")
        try:
            parts = factored_label_parts(class_names)
        except ValueError as error:
            raise DataError(f"{error}: train with factor_labels=False") from None
    config.dit = DiTConfig(**{**asdict(config.dit), "in_channels": channels, "input_size": (height, width),
                              "num_classes": num_classes, "self_condition": config.self_condition > 0,
                              "label_parts": parts})
    return DiT(config.dit)


def diffusion_training_set(config: DiffusionRunConfig, vae: Optional[VAE]) -> tuple[torch.Tensor, ImageDataset]:
    """What the DiT learns to generate: scaled latents of the images, or the images themselves (drawn
    upright for a run with ``canonical_frame``; ``data.angles`` are then the angles the data drew)."""
    data = _training_data(config)
    if config.canonical_frame:
        data = _upright_training_data(config, data)
    if vae is None:
        return data.images, data
    if data.images.shape[1] != vae.config.image_channels:
        raise DataError(f"the {config.dataset} images have {data.images.shape[1]} channels but the VAE in "
                        f"{config.vae_checkpoint} expects {vae.config.image_channels}")
    return encode_images(vae, data.images), data


def _vae_for(config: DiffusionRunConfig, device: str = "cpu") -> Optional[VAE]:
    if config.space != "latent":
        return None
    path = Path(config.vae_checkpoint)
    if not path.exists():
        raise CheckpointError(f"the VAE checkpoint {path} does not exist: train one first "
                              f"(python -m imagediff train-vae --out {path.parent}) or pass its path")
    return load_vae(path, device).vae


def train_image_diffusion(config: DiffusionRunConfig, out_dir=None, resume: bool = True, on_log=None,
                          vae: Optional[VAE] = None, evaluate=None, evaluate_every: int = 0) -> ImageDiffusionModel:
    """Train the DiT of ``config`` on latents (with the VAE of ``config.vae_checkpoint``, or ``vae``)
    or on pixels; with ``out_dir``, write out_dir/checkpoint.pt and resume from it.

    evaluate(model: ImageDiffusionModel, step) -> dict is called every ``evaluate_every`` steps with
    the EMA weights; its time is not counted as training time (see toydiff.training.train).
    """
    config.check_angle_options()
    # The data set is encoded where the DiT trains: on a GPU, encoding it on the CPU first took minutes.
    device = process_device(config.train.device)
    if config.space == "latent" and vae is None:
        vae = _vae_for(config, device)
    vae = vae_on(vae, device).eval() if config.space == "latent" else None
    samples, data = diffusion_training_set(config, vae)
    tensors, angle_range, angle_values = (samples, data.labels), None, None
    # Angle conditioning (DiTConfig.angle_conditioning): the DiT is told each training image's angle, and a
    # sampler draws one per sample from the training range (or takes the one asked for). A run in the
    # shapes' own frame (canonical_frame) is told nothing; its sampler turns each sample to such an angle.
    if config.dit.angle_conditioning or config.canonical_frame:
        if data.angles is None:
            raise DataError(f"angle conditioning needs a data set that records the angle of each image; the "
                            f"{config.dataset} data set does not (the shapes do): train without it "
                            "(DiTConfig.angle_conditioning=False; no --angle-conditioning)")
        if config.dit.angle_conditioning:
            tensors += (data.angles,)
        angle_range = (float(data.angles.min()), float(data.angles.max()))
        distinct = torch.unique(data.angles)
        angle_values = tuple(distinct.tolist()) if len(distinct) <= MAX_STORED_ANGLES else None
    torch.manual_seed(config.train.seed)  # the initial weights
    model = build_dit(config, samples.shape[1:], data.num_classes, data.class_names)
    schedule = make_schedule(config.schedule, config.num_timesteps)
    objective = DiffusionObjective(schedule, config.prediction_type, config.weighting, label_dropout=config.label_dropout,
                                   null_label=model.null_label, timestep_sampling=config.timestep_sampling,
                                   logit_mean=config.logit_mean, logit_std=config.logit_std,
                                   self_condition=config.self_condition,
                                   extra_inputs=("angles",) if config.dit.angle_conditioning else ())
    # The class names, in label order, go into the checkpoint with the rest of the description, so
    # that loading it gives the names without regenerating the data.
    run_config = {**config.to_dict(), "class_names": list(data.class_names)}
    if angle_range is not None:
        run_config["angle_range"] = list(angle_range)
    if angle_values is not None:
        run_config["angle_values"] = list(angle_values)
    if vae is not None:  # a retrained VAE means different latents: refuse to resume on top of them
        run_config["vae_latent_scale"] = float(vae.latent_scale)
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None

    def wrap(ema_model, guide=None):
        return ImageDiffusionModel(config, ema_model, schedule, data.class_names, vae, guide=guide,
                                   angle_range=angle_range, angle_values=angle_values)

    hook = None
    if evaluate is not None:
        def hook(ema_model, step):
            return evaluate(wrap(ema_model), step)

    result = train(model, objective, TensorBatches(*tensors), config.train_config_with_guide(),
                   checkpoint_path=checkpoint, run_config=run_config, resume=resume, checkpoint_kind=DIFFUSION_KIND,
                   on_log=on_log, evaluate=hook, evaluate_every=evaluate_every)
    device = next(result.ema_model.parameters()).device
    run = wrap(result.ema_model.eval(), config.guide_from(result.snapshots, lambda: DiT(config.dit), device))
    run.history, run.seconds = result.history, result.seconds
    return run


def load_image_diffusion(path, device: str = "cpu", vae_checkpoint: Optional[str] = None) -> ImageDiffusionModel:
    """Rebuild a trained image diffusion model (EMA weights) and, for a latent model, its VAE.

    vae_checkpoint: where the VAE is, if it moved since training (default: the path stored in the run).
    """
    state = load_checkpoint(path, kind=DIFFUSION_KIND)
    try:
        config = DiffusionRunConfig.from_dict(state["config"], TrainConfig(**state.get("train_config", {})))
        model = DiT(config.dit)
        model.load_state_dict(state["ema"]["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path} does not match this version's image diffusion model: {error}") from None
    if vae_checkpoint is not None:
        config.vae_checkpoint = str(vae_checkpoint)
    vae = _vae_for(config, device)
    if vae is not None:
        stored = state["config"].get("vae_latent_scale")
        if stored is not None and abs(float(vae.latent_scale) - stored) > 1e-6 * abs(stored):
            raise CheckpointError(f"{path} was trained on the latents of a different VAE (latent scale {stored:.6g}) "
                                  f"than the one in {config.vae_checkpoint} ({float(vae.latent_scale):.6g})")
    class_names, source = state["config"].get("class_names"), "the checkpoint names"
    if class_names is None:  # a checkpoint that does not store them: the names of a one-image data set
        class_names = make_dataset(config.dataset, 1, seed=0, image_size=config.image_size,
                                   **config.dataset_options).class_names
        source = f"the {config.dataset} data set has"
    if len(class_names) != config.dit.num_classes:
        raise CheckpointError(f"{path}: the model has {config.dit.num_classes} classes but {source} "
                              f"{len(class_names)}")
    try:
        guide = config.guide_from(state.get("snapshots", {}), lambda: DiT(config.dit), device)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: its autoguidance guide does not match its model: {error}") from None
    angle_range, angle_values = state["config"].get("angle_range"), state["config"].get("angle_values")
    if (config.dit.angle_conditioning or config.canonical_frame) and angle_range is None:
        raise CheckpointError(f"{path}: a model that draws at angles (angle conditioning or canonical_frame) "
                              "without the range of its training angles")
    return ImageDiffusionModel(config, model.to(device).eval(), make_schedule(config.schedule, config.num_timesteps),
                               list(class_names), vae, state.get("history", []), guide=guide,
                               angle_range=tuple(angle_range) if angle_range is not None else None,
                               angle_values=tuple(angle_values) if angle_values is not None else None)
