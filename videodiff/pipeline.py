"""Video diffusion end to end: physics videos, the per-frame VAE, the video DiT, rollouts.

    vae = train_video_vae(video_vae_run_config(), out_dir="runs/video/vae")         # frames <-> latents
    run = train_video_diffusion(VideoDiffusionRunConfig(vae_checkpoint="runs/video/vae/checkpoint.pt"),
                                out_dir="runs/video/dit")                              # diffusion forcing
    frames = run.rollout(context, length=64, guidance=HistoryGuidance("vanilla", 2.0),
                         labels=run.labels_for(videos))                                 # uint8 videos
    run = load_video_diffusion("runs/video/dit/checkpoint.pt")                          # the same model again

Nothing here is new: the VAE and its training are imagediff's (a video is a batch of frames to it),
the schedule, objective, DDIM step and training loop are toydiff's; `videodiff.training` only says
how noise levels are drawn per frame and `videodiff.sampling` in which order frames are denoised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from einops import rearrange

from imagediff.dit import stored_dit_fields
from imagediff.pipeline import TrainedVAE, VAERunConfig, decode_latents, encode_images, load_vae, train_vae, vae_on
from imagediff.vae import VAE
from toydiff.checkpoints import CheckpointError, load_checkpoint
from toydiff.distributed import process_device
from toydiff.schedules import make_schedule
from toydiff.guidance import autoguided, guided_denoiser
from toydiff.training import GuidedRunConfig, TrainConfig, train
from videodiff.data import PhysicsConfig, PhysicsVideos, corrupted_copies, make_videos, scene_labels, scene_sets
from videodiff.dit import VideoDiT, VideoDiTConfig, video_dit_config, widened
from videodiff.sampling import CLEAN_LEVEL, HistoryGuidance, labelled, rollout
from videodiff.training import VideoClips, VideoDiffusionObjective

VIDEO_DIFFUSION_KIND = "videodiff.diffusion"
# How a rollout denoises each window unless told otherwise: every new frame at one shared level (the
# full-sequence matrix after a clean history, the task the recipe trains; at 2 steps 1.33 px over the first 8
# generated frames of 32 held-out videos against 1.92 px for the autoregressive matrix at 10, docs/video_rollouts.md,
# "A history of exactly four frames, and two sampling steps"), in 10 DDPM steps: DDIM steps with η = 1, fresh
# noise at every step. On the labelled bench model they kept 0.43 of 64 generated frames intact against 0.25-0.29
# for the 2 deterministic steps that were the default until 2026-12-05, lone balls 0.78 against 0.50, at about
# the same position error over the first 8 frames of 96 held-out videos (1.57 px against 1.55; over 32, 1.44
# against 1.13) (docs/video_rollouts.md, "Fresh noise at every step"). They cost five times the calls; the
# cheaper 2-step sampler stays one option away (num_steps=2, eta=0).
ROLLOUT_SCHEDULING = "full_sequence"
ROLLOUT_STEPS = 10
ROLLOUT_ETA = 1.0
# The timesteps those steps visit (toydiff.samplers.sampling_timesteps): "trailing" starts every window's new frames
# at pure noise (999, 899, ... 99 for 10 steps). On the bench's model "linspace" (999 ... 0) held as many frames of a
# 64-frame rollout intact and "leading" (900 ... 0) fewer (docs/video_rollouts.md, "Other samplers under fresh
# noise: the default is the best measured").
ROLLOUT_SPACING = "trailing"
# Autoguidance's default scale w for a run that kept a guide (its EMA weights after 15% of the training:
# VideoDiffusionRunConfig.guide_fraction). On the bench's model (32 held-out videos, 4 real frames, 64
# generated, no history guidance), error over the first 8 frames / balls found / well-formed frames /
# motion ratio: w = 1 (off) 1.33 px / 0.46 / 0.15 / 0.79; w = 1.25: 1.30 / 0.56 / 0.16 / 1.02; w = 1.5:
# 1.21 / 0.64 / 0.16 / 1.34; w = 2: 1.67 / 0.72 / 0.10 / 1.98 (docs/video_rollouts.md, "Autoguidance by the
# run's early EMA"; all at the 2-step deterministic sampler of the day). Stronger scales find more balls but
# deform them and move them too far. Under the 10-step sampler with η = 1 on the labelled bench model, w = 1.5
# against 1: 1.44 / 1.50 px, 0.43 / 0.43 of 64 frames intact, motion 1.05 / 0.82 ("Fresh noise at every step").
AUTOGUIDANCE_SCALE = 1.5
# A run with scene labels shows a tenth of its clips the null label, as imagediff's recipe does for its
# classes, so that the same weights are also an unlabelled model.
SCENE_LABEL_DROPOUT = 0.1
# The training physics of a run without scene labels: two or three balls in every training video (its
# rollouts are scored on one to three), so that the crowded scenes the rollouts fail on are seen more often.
# At 7000 steps, two training seeds each, over the first 8 generated frames of 96 held-out videos: position
# error 1.38 / 1.46 px against 1.60 / 1.49 for one to three balls, intact frames 0.648 / 0.620 against 0.617 /
# 0.569 (docs/video_rollouts.md, "Training on scenes with two or three balls").
UNLABELLED_TRAINING_PHYSICS = {"min_balls": 2}
# clean_history_frames="half": a clean history of half the window (4 of 8 frames), the history a rollout
# keeps when it makes the other half of each window.
HALF_WINDOW = "half"
# Held-out videos are drawn from seeds far from the training ones (training videos use data_seed).
HELD_OUT_SEED_OFFSET = 1_000_000
CORRUPTION_SEED_OFFSET = 2_000_000  # the corrupted copies' draws (corrupt_history_probability)


def physics_config(options: dict) -> PhysicsConfig:
    """A PhysicsConfig from the plain dict stored in a run's description."""
    try:
        return PhysicsConfig(**options)
    except TypeError as error:
        raise ValueError(f"unknown physics option in {sorted(options)}: {error}") from None


# ---------------------------------------------------------------------------------------------
#                                     The per-frame VAE
# ---------------------------------------------------------------------------------------------


def video_vae_run_config(num_videos: int = 600, seed: int = 0, physics: Optional[dict] = None,
                         train: Optional[TrainConfig] = None) -> VAERunConfig:
    """imagediff's VAE run, described as trained on the frames of ``num_videos`` physics videos."""
    physics = dict(physics or {})
    frames = physics_config(physics).num_frames
    config = VAERunConfig(dataset="physics_frames", num_train_images=num_videos * frames, data_seed=seed,
                          dataset_options={"num_videos": num_videos, "physics": physics})
    # 2500 steps, not the image recipe's 1500: a rollout is judged by tracking its decoded balls, so the
    # VAE's own reconstructions of the true videos must pass that judgement. Scored like a rollout
    # (32 held-out videos, 64 frames after 4; docs/video_rollouts.md), the share of well-formed
    # frames in the reconstructions was 0.938 after 1500 steps (110 s on 2 cores, PSNR 28.2 dB), below
    # the 0.95 the rollouts are asked for; 0.964 after 2500 (161 s, 30.6 dB), 0.970 after 3000 (185 s),
    # 0.976 after 4000 (252 s); the "small" VAE after 1500 steps 0.956 (178 s).
    # The KL weight stays imagediff's 1e-4: 1e-3 and 1e-2 reconstruct the balls as well and make the decoder far
    # more tolerant of noisy latents, but the DiT trained on them misses the first window by 1.55-1.67 px at 1e-2 (two
    # seeds) and 1.45 at 1e-3 against 1.27-1.33, with no more frames intact over 64 (docs/video_rollouts.md, "The VAE's KL
    # weight": the stronger weight leaves more of each frame's latent to predict). `train-vae --kl-weight` sets it.
    config.train = train if train is not None else replace(config.train, steps=2500)
    return config


def vae_training_frames(config: VAERunConfig) -> torch.Tensor:
    """The frames a video VAE run trains on, as a batch of images (N·F, 3, H, W) in [-1, 1]."""
    options = config.dataset_options
    if config.dataset != "physics_frames" or "num_videos" not in options:
        raise ValueError(f"not a video VAE run: dataset {config.dataset!r} with options {options}")
    videos = make_videos(options["num_videos"], seed=config.data_seed,
                         config=physics_config(options.get("physics", {})))
    return rearrange(videos.to_model_range(), "n f c h w -> (n f) c h w")


def train_video_vae(config: Optional[VAERunConfig] = None, out_dir=None, resume: bool = True,
                    on_log=None) -> TrainedVAE:
    """imagediff's `train_vae` on video frames; writes out_dir/checkpoint.pt (an imagediff VAE)."""
    config = config or video_vae_run_config()
    return train_vae(config, out_dir, resume=resume, on_log=on_log, images=vae_training_frames(config))


@torch.no_grad()
def encode_videos(vae: VAE, videos: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """(N, F, 3, H, W) in [-1, 1] -> scaled latents (N, F, C, h, w): every frame on its own."""
    frames = videos.shape[1]
    latents = encode_images(vae, rearrange(videos, "n f c h w -> (n f) c h w"), batch_size)
    return rearrange(latents, "(n f) c h w -> n f c h w", f=frames)


@torch.no_grad()
def decode_videos(vae: VAE, latents: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Scaled latents (N, F, C, h, w) -> uint8 frames (N, F, H, W, 3), as the data stores them."""
    frames = latents.shape[1]
    images = decode_latents(vae, rearrange(latents, "n f c h w -> (n f) c h w"), batch_size)  # [-1, 1]
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(pixels, "(n f) c h w -> n f h w c", f=frames)


# ---------------------------------------------------------------------------------------------
#                                     The video DiT run
# ---------------------------------------------------------------------------------------------


# The recipe's DiT: the registry's size VIDEO_RECIPE_SIZE made VIDEO_RECIPE_WIDTH wide (videodiff.dit.widened).
VIDEO_RECIPE_SIZE, VIDEO_RECIPE_WIDTH = "tiny", 192


@dataclass
class VideoDiffusionRunConfig(GuidedRunConfig):
    num_train_videos: int = 2000
    data_seed: int = 0
    physics: dict = field(default_factory=dict)  # PhysicsConfig fields that differ from the defaults
    # PhysicsConfig fields that differ for the training videos only, on top of ``physics``; held-out videos,
    # rollouts and probes keep ``physics`` (one to three balls). None: the recipe's, which depends on
    # scene_labels (training_physics_fields). A scene-labelled run trains on every ball count its videos hold
    # (else the labels of the missing counts are never trained); an unlabelled one on UNLABELLED_TRAINING_PHYSICS.
    training_physics: Optional[dict] = None
    vae_checkpoint: str = "runs/video/vae/checkpoint.pt"
    # imagediff's recipe: linear β, v-prediction.
    schedule: str = "linear"
    num_timesteps: int = 1000
    prediction_type: str = "v"
    weighting: str = "uniform"
    # How training draws each frame's level (toydiff.losses.sample_levels): "uniform" over 0..T-1, or
    # "logit_normal" with logit_mean / logit_std (logit_mean > 0 trains high noise levels more).
    timestep_sampling: str = "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    noise_mode: str = "diffusion_forcing"        # or "full_sequence", "clean_context" (videodiff.training)
    # diffusion_forcing: share of clips given a clean history (its length: clean_history_frames), whether
    # the frames after it share one level (the task a rollout window poses), and whether clean frames get a
    # loss (their v-target is unlearnable noise; VideoDiffusionObjective). Together, 0.9 / shared / no loss
    # measured 1.97 px over the first 8 generated frames of 32 held-out videos (2.15 through the bench, VAE
    # retrained), against 3.44 for 0.5 / independent / loss, at the same 7000 steps (docs/video_rollouts.md,
    # "What the prediction task costs diffusion forcing"); 10% of clips keep independent levels, which
    # history guidance needs. That history is half the window long, always (clean_history_frames), the
    # history the default rollout keeps: 1.43 px against 2.13 at 2 autoregressive steps, same VAE and steps
    # ("A history of exactly four frames, and two sampling steps" there).
    clean_history_probability: float = 0.9
    shared_future_level: bool = True
    clean_frame_loss: bool = False
    # L > 0: those frames staggered instead, each L timesteps noisier than the one before, the pattern the pyramid
    # scheduling matrix samples at T / L steps (VideoDiffusionObjective): roll such a model out with
    # scheduling="pyramid", num_steps=T // L. 0: one shared level, the full-sequence matrix's question.
    future_level_lag: int = 0
    # that history's length: "half" (HALF_WINDOW) = window // 2, a number of frames, or None = random 1..window-1
    clean_history_frames: Optional[int | str] = HALF_WINDOW
    # K > 0: that history shown at a level drawn from 0..K instead of clean (VideoDiffusionObjective), so that
    # a rollout's stabilised history (generated frames re-noised to k_s <= K) is a pattern training showed.
    history_noise_max: int = 0
    # p > 0: with probability p a batch's history is the model's own continuation of real frames, made by
    # model_history_steps sampling steps as a rollout makes it (VideoDiffusionObjective); the targets stay real.
    model_history_probability: float = 0.0
    model_history_steps: int = 2
    # p > 0: the share of clean-history clips whose history comes from a copy of the video with one ball left out
    # or repainted (videodiff.data.corrupted_copies, drawn from data_seed), the frames to learn staying the
    # video's own (VideoDiffusionObjective): the model is asked to bring back what its history lost. The whole
    # history (needs dit.anchor_frame or dit.memory_frames, the only frames left that show the ball), or with
    # corrupt_history_end only its last 1..H-1 frames. Off by default: both learn their repair (the last-frames form, given a history
    # whose last two frames lost a ball: the ball missing from 0.17 and 0.11 of the next frames on two training
    # seeds, against 0.80 and 0.76 for the recipe), yet over 64 frames they hold 0.134 (whole, with the anchor,
    # seed 2) and 0.129 / 0.157 (last frames, seeds 2 / 1) intact against the recipe's 0.116 / 0.152, with 2.06,
    # 1.76 / 1.48 px over the first window against 1.58 / 1.46 (docs/video_rollouts.md, "Histories that lost a
    # ball": a ball gone for longer than the history is beyond its repair).
    corrupt_history_probability: float = 0.0
    corrupt_history_end: bool = False
    # q > 0: the share of all clips given one noise level over the whole window, taken from the clips without a
    # clean history (VideoDiffusionObjective): the first window of a video from nothing (VideoDiffusionModel.generate)
    # asks exactly that, which independent levels almost never show. Off by default: at q = 0.1, on two training
    # seeds, 0.27 and 0.25 of the frames from nothing drawn as asked against the recipe's 0.11 and 0.23, but 1.73 and
    # 1.45 px over the first window against 1.27 and 1.33 (docs/video_rollouts.md, "Videos from nothing").
    whole_window_probability: float = 0.0
    # A video run's checkpoint whose EMA weights the model starts from (fine-tuning) instead of a fresh
    # initialisation; None: fresh. Its DiT must have this run's shape.
    init_checkpoint: Optional[str] = None
    context_frames: int = 4                      # used by noise_mode "clean_context" only
    # Autoguidance's guide: the EMA weights after this share of the training steps, kept in the checkpoint
    # (0: none; toydiff.training.GuidedRunConfig). Rollouts use it at AUTOGUIDANCE_SCALE by default.
    guide_fraction: float = 0.15
    # Scene labels: the DiT is also told which palette colours the video's balls have (one class per set of
    # colours, videodiff.data.scene_labels; 41 for up to 3 balls), embedded and added to every frame's
    # condition as the image DiT adds its class. Over a long rollout the model otherwise forgets what its
    # scene holds: balls vanish, change colour or appear (docs/video_rollouts.md, "Scene labels: telling the
    # model what its scene holds"). With probability label_dropout a clip is shown the null label instead, so
    # the run is also an unlabelled model (the probe and a rollout without labels use that). The training
    # videos must hold every ball count of the held-out ones, or the labels of the missing counts would never
    # be trained. label_dropout None: SCENE_LABEL_DROPOUT (None, not the number, so that a run stored before
    # the option reads as the same recipe). On by default since 2026-12-04: on the 192-wide recipe, two
    # training seeds, 0.298 of 64 frames intact against 0.249, 1.34 px against 1.27 over the first window of
    # 96 held-out videos (docs/video_rollouts.md, "Scene labels on the 192-wide recipe"); through the bench,
    # 0.30 of 64 frames intact against 0.21 and 1.18 px over the first window, every other target kept.
    scene_labels: bool = True
    label_dropout: Optional[float] = None
    # in_channels and input_size are filled in from the VAE's latents when the run starts.
    # The registry's tiny DiT widened to 192 (6 heads of 32): under bf16 products the wider model costs less
    # than its FLOPs say. Over three training seeds, the first 8 generated frames of 96 held-out videos: 1.27 /
    # 1.27 / 1.31 px against 1.53 / 1.39 / 1.60 at width 128, intact 0.665 / 0.690 / 0.686 against 0.637 / 0.641 /
    # 0.585, in 459 / 486 / 485 s of training against 272-330 (docs/video_rollouts.md, "A wider DiT").
    dit: VideoDiTConfig = field(default_factory=lambda: video_dit_config(
        VIDEO_RECIPE_SIZE, num_frames=8, **widened(VIDEO_RECIPE_SIZE, VIDEO_RECIPE_WIDTH)))
    # 7000 steps: chosen when they took about 15 minutes on 2 CPU cores, so that with the VAE (2500 steps) the chain
    # fits the bench's 20; at width 192 on a 2-core CPU with AMX they took 459 s under bf16 (467 s in the bench),
    # and 977 s in fp32 there (the chain 1101 s; docs/video_rollouts.md, "The bench in fp32"). lr 3e-3, not 1e-3:
    # over the first 8 generated frames of 32
    # held-out videos its position error was 4.16 px against 5.58 after 3000 steps, and 3.44 against 4.12 after
    # these 7000 (docs/video_rollouts.md, "Recipe levers at 3000 steps" and "The new default through the bench").
    # Compiled (toydiff.compilation; eager where the machine cannot compile): the training loop took 140 ms a
    # step against 171 eager, medians of three interleaved runs of 250 steps on 2 cores, for about 10 s of
    # compiling (docs/video_rollouts.md, "Compiling the training step").
    # Mixed precision "auto", as the image recipe: bf16 autocast where bf16 products are native, fp32
    # elsewhere. On a 2-core CPU with AMX the recipe at width 128 trained in 330 s against 580 s in fp32, and
    # over three training seeds its rollouts scored as in fp32 within the seeds' spread (first window 1.51 px
    # against 1.47; docs/video_rollouts.md, "bf16 products on a CPU").
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=7000, batch_size=16, learning_rate=3e-3, warmup_steps=200, ema_decay=0.999, log_every=100,
        checkpoint_every=500, compile=True, mixed_precision="auto"))

    def __post_init__(self) -> None:
        self.check_guide_fraction()
        if self.label_dropout is not None and not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {self.label_dropout}")

    def scene_label_dropout(self) -> float:
        """The share of clips trained with the null label: label_dropout, SCENE_LABEL_DROPOUT by default;
        0 without scene labels."""
        if not self.scene_labels:
            return 0.0
        return SCENE_LABEL_DROPOUT if self.label_dropout is None else self.label_dropout

    def check_scene_labels(self) -> None:
        """With scene labels, the training videos must hold every ball count the run's videos do."""
        trained, held_out = self.training_physics_config(), physics_config(self.physics)
        if self.scene_labels and (trained.min_balls > held_out.min_balls or trained.max_balls != held_out.max_balls):
            raise ValueError(f"scene labels need training videos of {held_out.min_balls} to {held_out.max_balls} "
                             f"balls, as the run's videos hold, but training_physics gives {trained.min_balls} to "
                             f"{trained.max_balls}: the labels of the other counts would never be trained "
                             f"(set training_physics=None or {{}}, or scene_labels=False; on the command line, "
                             f"--min-balls {held_out.min_balls}, or --no-scene-labels)")

    def num_scene_labels(self) -> int:
        """How many scene labels the run's videos can have (0 without scene labels)."""
        return len(scene_sets(physics_config(self.physics).max_balls)) if self.scene_labels else 0

    @classmethod
    def from_dict(cls, description: dict, train: Optional[TrainConfig] = None) -> "VideoDiffusionRunConfig":
        # A run stored before clean_history_frames existed drew its histories' lengths at random; one stored
        # before guides existed kept none; one stored before training_physics existed trained on its physics alone;
        # one stored before scene labels existed had none.
        description = {"clean_history_frames": None, "guide_fraction": 0.0, "training_physics": {},
                       "scene_labels": False, **description}
        return cls.from_plain(description, train, dit=VideoDiTConfig(**stored_dit_fields(description["dit"])))

    def training_physics_fields(self) -> dict:
        """training_physics, or where it is None the recipe's: none with scene labels (every ball count of
        the run's videos), UNLABELLED_TRAINING_PHYSICS without."""
        if self.training_physics is not None:
            return self.training_physics
        return {} if self.scene_labels else dict(UNLABELLED_TRAINING_PHYSICS)

    def training_physics_config(self) -> PhysicsConfig:
        """The physics of the run's training videos: ``physics`` with training_physics_fields() on top."""
        return physics_config({**self.physics, **self.training_physics_fields()})

    def history_frames(self) -> Optional[int]:
        """The fixed length of the clean history that training gives its clips (clean_history_frames
        resolved against the window), or None when there is none: random lengths, or no clean histories."""
        frames = self.clean_history_frames
        if self.noise_mode != "diffusion_forcing" or not self.clean_history_probability > 0 or frames is None:
            return None
        if frames == HALF_WINDOW:
            return self.dit.num_frames // 2
        if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames < self.dit.num_frames:
            raise ValueError(f"clean_history_frames must be {HALF_WINDOW!r}, None or a number of frames in "
                             f"1..{self.dit.num_frames - 1} (the window holds {self.dit.num_frames}), got {frames!r}")
        return frames


@dataclass
class VideoDiffusionModel:
    """A trained video denoiser (EMA weights) with its VAE: encodes, rolls out and decodes videos."""

    config: VideoDiffusionRunConfig
    model: VideoDiT
    schedule: object
    vae: VAE
    history: list = field(default_factory=list)
    seconds: float = 0.0
    guide: Optional[VideoDiT] = None             # the EMA weights at config.guide_step(): autoguidance's guide

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def window(self) -> int:
        return self.model.config.num_frames

    @property
    def default_guide_scale(self) -> float:
        """AUTOGUIDANCE_SCALE for a run that kept a guide, 1 (off) for one that did not."""
        return AUTOGUIDANCE_SCALE if self.guide is not None else 1.0

    def denoiser(self, guide_scale: float = 1.0, labels: Optional[torch.Tensor] = None, label_scale: float = 1.0):
        """``denoiser(x_t (B, F, C, h, w), t (B, F)) -> prediction``, what videodiff.sampling calls;
        guide_scale: autoguidance by ``self.guide`` (1: the model alone; a run without a guide refuses others);
        labels: the videos' scene labels (B,) for a run trained with them (None: the null label), given to the
        model and its guide (history guidance stacks its branches along the batch: each gets the labels);
        label_scale: classifier-free guidance by those labels against the null label, toydiff's convention
        (1: the labelled model exactly, never calling the null branch; s > 1 pushes towards the label).
        Built by toydiff.guidance.guided_denoiser, as the image layer builds its own."""
        if guide_scale != 1.0 and self.guide is None:
            raise ValueError(f"autoguidance scale {guide_scale:g} asked for, but this run kept no guide (it was "
                             "trained with guide_fraction=0, or before guides existed): use guide_scale=1")
        if label_scale < 0:
            raise ValueError(f"the label guidance scale must be >= 0 (1 = the labelled model), got {label_scale:g}")
        if labels is None:
            if label_scale != 1.0:
                raise ValueError(f"label guidance scale {label_scale:g} asked for without scene labels: guidance "
                                 "by the label needs the labels (a run trained with scene labels)")
            return autoguided(self.model, self.guide, guide_scale)
        labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)  # (B,), from a list, array or tensor
        guide = None if self.guide is None else labelled(self.guide, len(labels))
        return guided_denoiser(labelled(self.model, len(labels)), labels, null_label=self.model.null_label,
                               guidance_scale=label_scale, guide=guide, guide_scale=guide_scale)

    def labels_for(self, videos: PhysicsVideos) -> Optional[torch.Tensor]:
        """The scene labels (N,) to roll ``videos`` out with: theirs (videodiff.data.scene_labels) for a run
        trained with scene labels, None (nothing to give) for one trained without."""
        return torch.from_numpy(scene_labels(videos)) if self.config.scene_labels else None

    def check_labels(self, labels, num_videos: int) -> Optional[torch.Tensor]:
        """Scene labels for ``num_videos`` videos as an int64 tensor on the model's device, or None."""
        if labels is None:
            return None
        if not self.config.scene_labels:
            raise ValueError("scene labels were given, but this run was trained without them (scene_labels=False)")
        # A tensor may already be on the model's device (a GPU's cannot pass through numpy): read it on the CPU.
        labels = labels.cpu() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
        labels = labels.to(torch.int64)
        count = self.config.num_scene_labels()
        if labels.shape != (num_videos,) or bool((labels < 0).any()) or bool((labels >= count).any()):
            values = f", values {int(labels.min())}..{int(labels.max())}" if labels.numel() else ""
            raise ValueError(f"expected one scene label in 0..{count - 1} per video, {num_videos} in all "
                             f"(videodiff.data.scene_labels), got shape {tuple(labels.shape)}{values}")
        return labels.to(self.device)

    def encode(self, frames) -> torch.Tensor:
        """uint8 frames (N, F, H, W, 3) (numpy or torch) -> scaled latents (N, F, C, h, w)."""
        pixels = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
        if pixels.dtype != torch.uint8 or pixels.ndim != 5 or pixels.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames of shape (N, F, H, W, 3), got {pixels.dtype} {tuple(pixels.shape)}")
        videos = rearrange(pixels.float() / 127.5 - 1.0, "n f h w c -> n f c h w")
        return encode_videos(self.vae, videos.to(self.device)).to(self.device)  # encode_videos returns CPU tensors

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Scaled latents (N, F, C, h, w) -> uint8 frames (N, F, H, W, 3), numpy."""
        return decode_videos(self.vae, latents).cpu().numpy()

    @torch.no_grad()
    def rollout(self, context_frames, length: int, guidance: Optional[HistoryGuidance] = None, *,
                num_steps: int = ROLLOUT_STEPS, scheduling: str = ROLLOUT_SCHEDULING, spacing: str = ROLLOUT_SPACING,
                new_frames: Optional[int] = None,
                stabilization_level: int = CLEAN_LEVEL, sampler: str = "ddim", eta: Optional[float] = None,
                guide_scale: Optional[float] = None, labels=None, label_scale: float = 1.0, anchor_frames=None,
                seed: int = 0, batch_size: int = 64) -> np.ndarray:
        """Continue real videos: uint8 context (N, K, H, W, 3) -> uint8 (N, K + length, H, W, 3).

        The context frames come back as the VAE reconstructs them, followed by ``length`` generated
        frames, made window by window (videodiff.sampling.rollout) with the given history guidance.
        new_frames: frames made per window. Default: the window less the history the model was trained
        with (config.history_frames(): 4 of 8 for the recipe; a longer real context then starts from its
        last 4 frames), or, for a model trained without a fixed history, the window less the K real frames.
        scheduling, num_steps, spacing: each window's scheduling matrix and the timesteps its steps visit
        (videodiff.sampling.rollout; defaults ROLLOUT_SCHEDULING, ROLLOUT_STEPS, ROLLOUT_SPACING).
        sampler, eta: toydiff's step for every denoising step: "ddim" with η = ``eta`` (default ROLLOUT_ETA, 1: the
        DDPM step, fresh noise at every step; 0 is the deterministic DDIM), or "ddpm" (η = 1).
        guide_scale: autoguidance by the run's early snapshot, applied to every call of the denoiser (history
        guidance's too); default ``default_guide_scale`` (AUTOGUIDANCE_SCALE for a run that kept a guide).
        labels: (N,) scene labels of the videos (videodiff.data.scene_labels) for a run trained with them;
        None rolls such a run out with the null label, as an unlabelled model.
        label_scale: classifier-free guidance by those labels (``denoiser``; 1, the default: the labelled model).
        A model with an anchor frame (VideoDiTConfig.anchor_frame) gets each video's last real context frame
        as the anchor of every window, or ``anchor_frames``, uint8 (N, H, W, 3), one frame per video in its place
        (to ask what the model reads from it: another scene's frame, say). A model with memory frames
        (VideoDiTConfig.memory_frames) gets them from the video so far in every window (videodiff.sampling.rollout).
        The videos are rolled out ``batch_size`` at a time from one generator: a shorter rollout of the same seed
        is the start of a longer one for the first ``batch_size`` videos, while the later ones draw other noise
        when the longer rollout has more windows.
        """
        labels, guide_scale = self._checked_guidance(labels, len(context_frames), guide_scale, label_scale)
        if anchor_frames is not None:
            if not self.model.config.anchor_frame:
                raise ValueError("anchor frames were given, but this model was built without an anchor frame "
                                 "(VideoDiTConfig.anchor_frame=False)")
            anchor_frames, expected = np.asarray(anchor_frames), (len(context_frames), *np.shape(context_frames)[2:])
            if anchor_frames.shape != expected or anchor_frames.dtype != np.uint8:
                raise ValueError(f"expected one anchor frame per video, uint8 of shape {expected} (N, H, W, 3), got "
                                 f"{anchor_frames.dtype} {anchor_frames.shape}")
        if np.shape(context_frames)[1:2] == (0,):
            raise ValueError("rollout continues real frames and got none: use generate() to make videos from nothing")
        context = self.encode(context_frames)  # (N, K, C, h, w)
        anchors = None  # (N, C, h, w): the last real frame's latent, or the given frames'
        if self.model.config.anchor_frame:
            anchors = context[:, -1] if anchor_frames is None else self.encode(anchor_frames[:, None])[:, 0]
        return self.decode(self._windows(
            context, length, guidance, anchors=anchors, labels=labels, label_scale=label_scale,
            guide_scale=guide_scale, new_frames=new_frames, scheduling=scheduling, num_steps=num_steps, spacing=spacing,
            sampler=sampler, eta=eta, stabilization_level=stabilization_level, seed=seed, batch_size=batch_size))

    @torch.no_grad()
    def generate(self, length: int, num_videos: Optional[int] = None, *, labels=None, label_scale: float = 1.0,
                 guide_scale: Optional[float] = None, num_steps: int = ROLLOUT_STEPS,
                 scheduling: str = ROLLOUT_SCHEDULING, spacing: str = ROLLOUT_SPACING, new_frames: Optional[int] = None,
                 sampler: str = "ddim", eta: Optional[float] = None, seed: int = 0, batch_size: int = 64) -> np.ndarray:
        """Videos from nothing: uint8 (N, length, H, W, 3), no real frame given. The first window is drawn whole
        from noise along ``scheduling`` (with the default full_sequence, every frame of it at one level), then the
        windows slide as a rollout's do, each conditioned on the last frames made (videodiff.sampling.rollout with
        K = 0).

        labels: (N,) scene labels (videodiff.data.scene_labels, scene_label) for a run trained with them: which
        balls each video holds; label_scale guides towards them (``denoiser``). Without labels, ``num_videos``
        videos of the null label: a labelled run's unconditional model, or an unlabelled run. The other options
        are ``rollout``'s, history guidance aside.
        A model with an anchor frame reads a real frame in every window, and one with memory frames earlier frames
        of the video: neither can start from nothing.
        """
        for needs, what in ((self.model.config.anchor_frame, "a real frame (its anchor)"),
                            (self.model.config.memory_frames, "earlier frames of the video (its memory frames)")):
            if needs:
                raise ValueError(f"this model reads {what} in every window, so it cannot make a video from nothing: "
                                 "roll it out from real frames instead")
        if labels is not None:
            if num_videos is not None and num_videos != len(labels):
                raise ValueError(f"num_videos={num_videos} but {len(labels)} labels were given: one video per label")
            num_videos = len(labels)
        if not isinstance(num_videos, (int, np.integer)) or isinstance(num_videos, bool) or num_videos < 1:
            raise ValueError(f"give the scene labels of the videos to make, or num_videos >= 1; got {num_videos!r}")
        labels, guide_scale = self._checked_guidance(labels, num_videos, guide_scale, label_scale)
        shape = self.model.config
        nothing = torch.zeros((num_videos, 0, shape.in_channels, *shape.input_size), device=self.device)
        return self.decode(self._windows(
            nothing, length, None, anchors=None, labels=labels, label_scale=label_scale, guide_scale=guide_scale,
            new_frames=new_frames, scheduling=scheduling, num_steps=num_steps, spacing=spacing, sampler=sampler,
            eta=eta, stabilization_level=CLEAN_LEVEL, seed=seed, batch_size=batch_size))

    def _checked_guidance(self, labels, num_videos: int, guide_scale: Optional[float], label_scale: float):
        """(labels as ``check_labels`` returns them, the autoguidance scale with the run's default filled in) for
        ``rollout`` and ``generate``, once a denoiser has been built from them: a bad scale or combination is
        refused before any encoding or window."""
        guide_scale = self.default_guide_scale if guide_scale is None else guide_scale
        labels = self.check_labels(labels, num_videos)
        self.denoiser(guide_scale, labels, label_scale)
        return labels, guide_scale

    def _windows(self, context: torch.Tensor, length: int, guidance: Optional[HistoryGuidance], *, anchors, labels,
                 label_scale: float, guide_scale: float, new_frames: Optional[int], scheduling: str,
                 num_steps: int, spacing: str, sampler: str, eta: Optional[float], stabilization_level: int, seed: int,
                 batch_size: int) -> torch.Tensor:
        """The latents (N, K + length, C, h, w) of ``rollout`` and ``generate``: ``batch_size`` videos at a time
        from one generator, each through videodiff.sampling.rollout. labels and guide_scale: as
        ``_checked_guidance`` returns them."""
        if eta is None and sampler == "ddim":
            eta = ROLLOUT_ETA
        trained_history = self.config.history_frames()
        if new_frames is None and trained_history is not None:
            new_frames = self.window - trained_history
        generator = torch.Generator(device=self.device).manual_seed(seed)
        pieces = []
        for start in range(0, context.shape[0], batch_size):
            piece_labels = None if labels is None else labels[start:start + batch_size]
            anchor = None if anchors is None else anchors[start:start + batch_size]
            pieces.append(rollout(
                self.denoiser(guide_scale, piece_labels, label_scale), context[start:start + batch_size], length,
                self.window, self.schedule, frames_per_window=new_frames, kind=scheduling, num_steps=num_steps,
                spacing=spacing, prediction_type=self.config.prediction_type, sampler=sampler, eta=eta,
                guidance=guidance, stabilization_level=stabilization_level, anchor=anchor,
                memory_frames=self.model.config.memory_frames, memory_stride=self.model.config.memory_stride,
                generator=generator))
        return torch.cat(pieces)


def quick_run_configs(vae_checkpoint: str) -> tuple[VAERunConfig, "VideoDiffusionRunConfig"]:
    """The smoke-test sizes of ``demo --quick`` and ``bench --quick``: 20 videos of 12 frames, a VAE and a
    one-block DiT (window 4) trained for 20 steps each. They prove the code runs, nothing more."""
    physics = {"num_frames": 12}
    vae_config = video_vae_run_config(num_videos=20, physics=physics)
    vae_config.train = replace(vae_config.train, steps=20, checkpoint_every=0, log_every=10)
    config = VideoDiffusionRunConfig(vae_checkpoint=vae_checkpoint, physics=physics, num_train_videos=20,
                                     dit=video_dit_config("tiny", hidden_dim=48, depth=1, num_heads=2, num_frames=4))
    # Eager: compiling (seconds) would take longer than the 20 steps.
    config.train = replace(config.train, steps=20, batch_size=4, checkpoint_every=0, log_every=10, compile=False)
    return vae_config, config


def build_video_dit(config: VideoDiffusionRunConfig, latent_shape) -> VideoDiT:
    """The run's video DiT, sized for frame latents of shape (C, h, w)."""
    channels, height, width = latent_shape
    # num_classes always from scene_labels (0 without): a config built before and toggled since keeps no stale table.
    config.dit = VideoDiTConfig(**{**asdict(config.dit), "in_channels": channels, "input_size": (height, width),
                                   "num_classes": config.num_scene_labels()})
    return VideoDiT(config.dit)


def _vae_at(path, device="cpu") -> VAE:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"the VAE checkpoint {path} does not exist: train one first "
                              f"(python -m videodiff train-vae --out {path.parent}) or pass its path")
    return load_vae(path, device).vae


def training_videos(config: VideoDiffusionRunConfig) -> PhysicsVideos:
    return make_videos(config.num_train_videos, seed=config.data_seed, config=config.training_physics_config())


def held_out_videos(config: VideoDiffusionRunConfig, num_videos: int, num_frames: Optional[int] = None,
                    seed: int = 0) -> PhysicsVideos:
    """Videos the model never saw, from the run's physics, ``num_frames`` long (default: the run's)."""
    physics = dict(config.physics)
    if num_frames is not None:
        physics["num_frames"] = num_frames
    return make_videos(num_videos, seed=config.data_seed + HELD_OUT_SEED_OFFSET + seed,
                       config=physics_config(physics))


def _start_from(model: VideoDiT, path) -> None:
    """Load the EMA weights of the video run at ``path`` into ``model`` (init_checkpoint)."""
    state = load_checkpoint(path, kind=VIDEO_DIFFUSION_KIND)
    stored_labels = bool(state.get("config", {}).get("scene_labels", False))
    if stored_labels != (model.config.num_classes > 0):
        trained, this_run, option = (("with", "is not", "--scene-labels") if stored_labels
                                     else ("without", "is", "--no-scene-labels"))
        raise CheckpointError(f"{path} was trained {trained} scene labels and this run {this_run}: train with "
                              f"{option} (scene_labels={stored_labels}) to start from it")
    try:
        model.load_state_dict(state["ema"]["model"])
    except (KeyError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} holds a video DiT of another shape than this run's "
                              f"({model.config.hidden_dim} wide, {model.config.depth} blocks, window "
                              f"{model.config.num_frames}): {first[:200]}") from None


def train_video_diffusion(config: VideoDiffusionRunConfig, out_dir=None, resume: bool = True, on_log=None,
                          vae: Optional[VAE] = None, evaluate=None, evaluate_every: int = 0) -> VideoDiffusionModel:
    """Train the video DiT of ``config`` on the latents of physics videos; with ``out_dir``, write
    out_dir/checkpoint.pt and resume from it. evaluate(model: VideoDiffusionModel, step) -> dict is
    called every ``evaluate_every`` steps with the EMA weights, outside the training time."""
    # A run that resumes from its own checkpoint takes its weights from there: the starting point is not needed.
    resuming = resume and out_dir is not None and (Path(out_dir) / "checkpoint.pt").exists()
    start_from = config.init_checkpoint if not resuming else None
    if start_from is not None and not Path(start_from).exists():
        raise CheckpointError(f"the checkpoint to start from, {config.init_checkpoint}, does not exist")
    config.check_scene_labels()
    # The videos are encoded where the DiT trains: on a GPU, encoding 10 000 videos on the CPU first took minutes.
    device = process_device(config.train.device)
    vae = vae_on(vae if vae is not None else _vae_at(config.vae_checkpoint, device), device).eval()
    videos = training_videos(config)
    latents = encode_videos(vae, videos.to_model_range())  # (N, L, C, h, w)
    if config.dit.num_frames > latents.shape[1]:
        raise ValueError(f"the training window ({config.dit.num_frames} frames) is longer than the videos "
                         f"({latents.shape[1]} frames)")
    torch.manual_seed(config.train.seed)  # the initial weights
    model = build_video_dit(config, latents.shape[2:])
    if start_from is not None:
        _start_from(model, start_from)
    schedule = make_schedule(config.schedule, config.num_timesteps)
    objective = VideoDiffusionObjective(schedule, config.prediction_type, config.weighting,
                                        noise_mode=config.noise_mode, context_frames=config.context_frames,
                                        clean_history_probability=config.clean_history_probability,
                                        shared_future_level=config.shared_future_level,
                                        future_level_lag=config.future_level_lag,
                                        clean_history_frames=config.history_frames(),
                                        clean_frame_loss=config.clean_frame_loss,
                                        history_noise_max=config.history_noise_max,
                                        model_history_probability=config.model_history_probability,
                                        model_history_steps=config.model_history_steps,
                                        anchor_frame=config.dit.anchor_frame, memory_frames=config.dit.memory_frames,
                                        corrupt_history_probability=config.corrupt_history_probability,
                                        corrupt_history_end=config.corrupt_history_end,
                                        whole_window_probability=config.whole_window_probability,
                                        timestep_sampling=config.timestep_sampling, logit_mean=config.logit_mean,
                                        logit_std=config.logit_std,
                                        label_dropout=config.scene_label_dropout(),
                                        null_label=model.null_label)
    # The training physics as trained, not None: what a stored run trained on never depends on today's recipe.
    run_config = {**config.to_dict(), "training_physics": config.training_physics_fields(),
                  "vae_latent_scale": float(vae.latent_scale)}
    checkpoint = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None

    def wrap(ema_model, guide=None):
        return VideoDiffusionModel(config, ema_model, schedule, vae, guide=guide)

    hook = None
    if evaluate is not None:
        def hook(ema_model, step):
            return evaluate(wrap(ema_model.eval()), step)

    labels = torch.from_numpy(scene_labels(videos)) if config.scene_labels else None  # (N,)
    anchor_reach = (config.history_frames() or 1) if config.dit.anchor_frame else None
    corrupted = None  # (N, L, C, h, w): the latents of the videos' corrupted copies
    if config.corrupt_history_probability > 0:
        copies, _ = corrupted_copies(videos, seed=config.data_seed + CORRUPTION_SEED_OFFSET)
        corrupted = encode_videos(vae, copies.to_model_range())
    memory = (config.dit.memory_frames, config.dit.memory_stride) if config.dit.memory_frames else None
    clips = VideoClips(latents, objective.clip_frames(config.dit.num_frames), labels, anchor_reach, corrupted, memory)
    result = train(model, objective, clips, config.train_config_with_guide(),
                   checkpoint_path=checkpoint, run_config=run_config, resume=resume,
                   checkpoint_kind=VIDEO_DIFFUSION_KIND, on_log=on_log, evaluate=hook, evaluate_every=evaluate_every)
    device = next(result.ema_model.parameters()).device
    run = wrap(result.ema_model.eval(), config.guide_from(result.snapshots, lambda: VideoDiT(config.dit), device))
    run.history, run.seconds = result.history, result.seconds
    return run


def load_video_diffusion(path, device: str = "cpu", vae_checkpoint: Optional[str] = None) -> VideoDiffusionModel:
    """Rebuild a trained video model (EMA weights) and its VAE from a checkpoint of train_video_diffusion."""
    state = load_checkpoint(path, kind=VIDEO_DIFFUSION_KIND)
    try:
        config = VideoDiffusionRunConfig.from_dict(state["config"], TrainConfig(**state.get("train_config", {})))
        model = VideoDiT(config.dit)
        model.load_state_dict(state["ema"]["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path} does not match this version's video diffusion model: {error}") from None
    if vae_checkpoint is not None:
        config.vae_checkpoint = str(vae_checkpoint)
    vae = _vae_at(config.vae_checkpoint, device)
    stored = state["config"].get("vae_latent_scale")
    if stored is not None and abs(float(vae.latent_scale) - stored) > 1e-6 * abs(stored):
        raise CheckpointError(f"{path} was trained on the latents of a different VAE (latent scale {stored:.6g}) "
                              f"than the one in {config.vae_checkpoint} ({float(vae.latent_scale):.6g})")
    try:
        guide = config.guide_from(state.get("snapshots", {}), lambda: VideoDiT(config.dit), device)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: its autoguidance guide does not match its model: {error}") from None
    return VideoDiffusionModel(config, model.to(device).eval(), make_schedule(config.schedule, config.num_timesteps),
                               vae, state.get("history", []), float(state.get("seconds", 0.0)), guide=guide)
