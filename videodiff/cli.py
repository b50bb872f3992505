"""Command line: ``python -m videodiff data|train-vae|train|rollout|sample|evaluate|probe|ablate|demo``.

    python -m videodiff data --num-videos 100 --seed 0 --out physics.npz
    python -m videodiff train-vae --out runs/video/vae
    python -m videodiff train --vae runs/video/vae/checkpoint.pt --out runs/video/dit
    python -m videodiff rollout --checkpoint runs/video/dit/checkpoint.pt --num-videos 32 --context 4 \
        --length 64 --guidance vanilla --scale 2 --out runs/video/rollout
    python -m videodiff sample --checkpoint runs/video/dit/checkpoint.pt --balls red,blue --out runs/video/sample
    python -m videodiff evaluate --checkpoint runs/video/dit/checkpoint.pt
    python -m videodiff probe --checkpoint runs/video/dit/checkpoint.pt --out runs/video/probe
    python -m videodiff ablate --checkpoint runs/video/dit/checkpoint.pt

A bad argument (context longer than the window, an unknown guidance mode, a length <= 0, a checkpoint
of another layer or a corrupt one…) ends the program with status 2 and one line saying what was wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from imagediff.cli import add_kl_weight_option
from imagediff.vae import VAE_SIZES, vae_config
from toydiff.cli import (
    OneLineParser, UsageError, add_device_option, add_precision_options, autoguidance_scale, existing_file,
    finite_float, non_negative_float, non_negative_int, positive_float, positive_int, print_log_entry, run_cli,
    unit_fraction,
)
from toydiff.distributed import pick_device
from toydiff.losses import TIMESTEP_SAMPLINGS, WEIGHTINGS
from toydiff.samplers import SPACINGS
from videodiff.data import (PALETTE_NAMES, PhysicsConfig, make_impossible_pairs, make_videos, scene_label, scene_labels,
                            scene_sets)
from videodiff.dit import VIDEO_DIT_SIZES, video_dit_config, widened
from videodiff.evaluation import (evaluation_table, format_table, learning_curve_point, reference_rows,
                                  rollout_and_score)
from videodiff.interp.ablations import ABLATION_ETA, ABLATION_STEPS
from videodiff.interp.experiment import (POOLS, ProbeExperimentConfig, held_history_frames, quick_probe_config,
                                         run_probe_experiment)
from videodiff.metrics import drawn_as_asked, format_crowding, format_faults
from videodiff.pipeline import (
    AUTOGUIDANCE_SCALE, HALF_WINDOW, ROLLOUT_ETA, ROLLOUT_SCHEDULING, ROLLOUT_SPACING, ROLLOUT_STEPS,
    SCENE_LABEL_DROPOUT, VIDEO_RECIPE_SIZE, VIDEO_RECIPE_WIDTH, VideoDiffusionRunConfig, load_video_diffusion,
    held_out_videos, physics_config, train_video_diffusion, train_video_vae, video_vae_run_config,
)
from videodiff.sampling import GUIDANCE_MODES, SCHEDULING_KINDS, HistoryGuidance
from videodiff.training import NOISE_MODES, whole_window_fits


def _windows(text: str) -> tuple:
    """'2,all' -> (2, None): the history sub-windows of temporal guidance (all = the whole history)."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            values.append(None)
            continue
        try:
            value = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sub-window lengths such as 2,all, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected sub-window lengths >= 1 or 'all', got {text!r}")
        values.append(value)
    return tuple(values)


def _weights(text: str) -> tuple:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated weights such as 1,1, got {text!r}") from None
    if any(not value > 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected positive weights, got {text!r}")
    return values


def _history_frames(text: str):
    """--history-frames: 'half', 'random' (None) or a number of frames >= 1."""
    if text in (HALF_WINDOW, "random"):
        return HALF_WINDOW if text == HALF_WINDOW else None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of frames >= 1, 'half' or 'random', got {text!r}")
    return value


def add_guidance_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guidance", choices=GUIDANCE_MODES, default="none",
                        help="history guidance: none, vanilla (history vs. fully noised history), fractional "
                             "(vs. history noised to --fractional-level) or temporal (several history sub-windows)")
    parser.add_argument("--scale", type=non_negative_float, default=1.0,
                        help="history guidance scale (1 = the conditional model)")
    parser.add_argument("--fractional-level", type=int, default=500,
                        help="k_H, the timestep of the partly noised history of fractional guidance")
    parser.add_argument("--temporal-windows", type=_windows, default="2,all",
                        help="temporal guidance: history sub-windows, most recent frames, 'all' = the whole history")
    parser.add_argument("--temporal-weights", type=_weights, default="1,1",
                        help="temporal guidance: relative weight of each sub-window")
    parser.add_argument("--stabilization", type=int, default=0,
                        help="k_s: generated frames fed back as history are re-noised to this timestep (0 = clean)")
    add_sampler_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (same seed, same video)")
    add_model_guidance_options(parser)


def _colours(text: str) -> tuple:
    """--balls: colour names separated by commas (checked against the run's scenes when it is loaded)."""
    names = tuple(name.strip().lower() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected colour names separated by commas, such as red,blue; got {text!r}")
    return names


def add_sampler_options(parser: argparse.ArgumentParser) -> None:
    """--scheduling, --steps, --spacing and --eta: how each window is denoised, the library's rollout by default
    (rollout and evaluate take the same four)."""
    parser.add_argument("--scheduling", choices=SCHEDULING_KINDS, default=ROLLOUT_SCHEDULING,
                        help="the scheduling matrix of each window (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=ROLLOUT_STEPS,
                        help="sampling steps per frame (default: %(default)s)")
    parser.add_argument("--spacing", choices=SPACINGS, default=ROLLOUT_SPACING,
                        help="the timesteps the steps visit: trailing starts at pure noise, linspace ends on t = 0, "
                             "leading starts below T (default: %(default)s)")
    parser.add_argument("--eta", type=unit_fraction, default=ROLLOUT_ETA,
                        help="η of every DDIM step: 0 deterministic, 1 the DDPM step (fresh noise at every step) "
                             "(default: %(default)s)")


def add_model_guidance_options(parser: argparse.ArgumentParser) -> None:
    """--autoguidance and --label-scale: how every call of the denoiser is guided (rollout and evaluate)."""
    parser.add_argument("--autoguidance", type=non_negative_float, default=None,
                        help="autoguidance scale w by the run's early snapshot, at every denoiser call (1 = off; "
                             f"default: {AUTOGUIDANCE_SCALE:g} for a run that kept one, else 1)")
    parser.add_argument("--label-scale", type=non_negative_float, default=1.0,
                        help="classifier-free guidance by each video's scene label against the null label, for a "
                             "run trained with scene labels, 1 = the labelled model (default: %(default)s)")


def label_scale_for(args, run) -> float:
    """--label-scale, checked against the run: guidance by the scene label needs a run trained with labels."""
    if args.label_scale != 1.0 and not run.config.scene_labels:
        raise UsageError(f"--label-scale {args.label_scale:g} needs a run trained with scene labels; this one was "
                         "trained without them (train --no-scene-labels): leave --label-scale at 1")
    return args.label_scale


def guidance_from(args) -> HistoryGuidance:
    if args.guidance == "temporal":
        if len(args.temporal_windows) != len(args.temporal_weights):
            raise UsageError(f"--temporal-windows has {len(args.temporal_windows)} entries but --temporal-weights "
                             f"{len(args.temporal_weights)}: give one weight per sub-window")
        return HistoryGuidance("temporal", args.scale, temporal_windows=args.temporal_windows,
                               temporal_weights=args.temporal_weights)
    if args.guidance == "fractional":
        return HistoryGuidance("fractional", args.scale, fractional_level=args.fractional_level)
    return HistoryGuidance(args.guidance, args.scale)


def build_parser() -> argparse.ArgumentParser:
    recipe = VideoDiffusionRunConfig()
    vae_recipe = video_vae_run_config()
    parser = OneLineParser(prog="videodiff", description="Diffusion forcing on physics videos: data, a per-frame "
                                                         "VAE, a video DiT, rollouts with history guidance.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    data = commands.add_parser("data", help="generate physics videos (frames and states) into a .npz file")
    data.add_argument("--num-videos", type=positive_int, default=100, help="videos to generate")
    data.add_argument("--seed", type=int, default=0, help="seed of the videos")
    data.add_argument("--num-frames", type=positive_int, default=32, help="frames per video")
    data.add_argument("--impossible", action="store_true",
                      help="write matched pairs instead: OUT with the plausible videos, OUT-impossible.npz with "
                           "their impossible twins, OUT-pairs.json with each pair's kind and event frame")
    data.add_argument("--out", required=True, help="the .npz file to write")

    vae = commands.add_parser("train-vae", help="train imagediff's VAE on video frames and measure its latent scale")
    vae.add_argument("--size", choices=sorted(VAE_SIZES), default="tiny", help="the VAE registry entry")
    add_kl_weight_option(vae, vae_recipe.vae.kl_weight)
    vae.add_argument("--steps", type=positive_int, default=vae_recipe.train.steps, help="training steps")
    vae.add_argument("--batch-size", type=positive_int, default=vae_recipe.train.batch_size,
                     help="frames per training step")
    vae.add_argument("--num-videos", type=positive_int, default=vae_recipe.dataset_options["num_videos"],
                     help="training videos whose frames the VAE learns")
    vae.add_argument("--seed", type=int, default=vae_recipe.data_seed, help="seed of the training videos")
    vae.add_argument("--quiet", action="store_true", help="no progress bar")
    vae.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    vae.add_argument("--out", default="runs/video/vae", help="folder of the run's checkpoint.pt")
    add_device_option(vae, "the model trains")

    train = commands.add_parser("train", help="train the video DiT with diffusion forcing on the VAE's latents")
    train.add_argument("--vae", default=recipe.vae_checkpoint, help="the VAE checkpoint (train-vae)")
    train.add_argument("--dit-size", choices=VIDEO_DIT_SIZES, default="tiny", help="the video DiT registry entry")
    train.add_argument("--width", type=positive_int, default=None, metavar="D",
                       help="the DiT's hidden width D, its heads keeping the size's head dimension: --width 256 on "
                            "tiny gives 8 heads of 32 (docs/video_rollouts.md, 'A wider DiT') (default: "
                            f"{VIDEO_RECIPE_WIDTH}, the recipe's, for {VIDEO_RECIPE_SIZE}; the size's own otherwise)")
    train.add_argument("--depth", type=positive_int, default=None, metavar="L",
                       help="the number of DiT blocks L (docs/video_rollouts.md, 'A deeper DiT') (default: the size's "
                            f"own, {recipe.dit.depth} for {VIDEO_RECIPE_SIZE})")
    train.add_argument("--window", type=positive_int, default=recipe.dit.num_frames,
                       help="frames per training clip (the model's window)")
    train.add_argument("--noise-mode", choices=NOISE_MODES, default=recipe.noise_mode,
                       help="diffusion_forcing: a level per frame; full_sequence: one per clip; clean_context: "
                            "--context-frames clean, one level on the rest")
    train.add_argument("--context-frames", type=positive_int, default=recipe.context_frames,
                       help="clean frames per clip for --noise-mode clean_context")
    train.add_argument("--clean-history", type=non_negative_float, default=recipe.clean_history_probability,
                       help="--noise-mode diffusion_forcing: the share of clips given a clean history, its length "
                            "--history-frames (ignored by the other modes)")
    train.add_argument("--shared-future-level", action=argparse.BooleanOptionalAction,
                       default=recipe.shared_future_level,
                       help="--noise-mode diffusion_forcing: the frames after a clip's clean history share one "
                            "noise level (the rollout's task) instead of independent ones (default: %(default)s)")
    train.add_argument("--future-level-lag", type=non_negative_int, default=recipe.future_level_lag, metavar="L",
                       help="with --shared-future-level: stagger the frames after the history, each L timesteps "
                            "noisier than the one before, as the pyramid matrix samples them at T/L steps (roll out "
                            "with --scheduling pyramid --steps T/L); 0: one shared level (default: %(default)s)")
    train.add_argument("--history-frames", type=_history_frames, default=recipe.clean_history_frames,
                       help="--noise-mode diffusion_forcing: the length of that clean history: a number of frames, "
                            "'half' (half the window, the history of the default rollout) or 'random' (1..window-1 "
                            "per clip) (default: %(default)s)")
    train.add_argument("--history-noise", type=int, default=recipe.history_noise_max, metavar="K",
                       help="--noise-mode diffusion_forcing: show that history at a level drawn from 0..K instead of "
                            "clean, so that a rollout's --stabilization k_s <= K is a pattern training showed "
                            "(0: clean) (default: %(default)s)")
    train.add_argument("--model-history", type=unit_fraction, default=recipe.model_history_probability, metavar="P",
                       help="--noise-mode diffusion_forcing: with probability P a batch's history is the model's own "
                            "continuation of real frames, as a rollout's later windows see it (0: real histories "
                            "only) (default: %(default)s)")
    train.add_argument("--init", default=None, metavar="CHECKPOINT",
                       help="start from this video run's EMA weights (fine-tuning) instead of a fresh initialisation "
                            "(default: none, a fresh initialisation)")
    train.add_argument("--clean-frame-loss", action=argparse.BooleanOptionalAction, default=recipe.clean_frame_loss,
                       help="whether frames at the clean level get a loss (their v-target is unlearnable noise; "
                            "see VideoDiffusionObjective) (default: %(default)s)")
    train.add_argument("--weighting", choices=WEIGHTINGS, default=recipe.weighting,
                       help="how the loss weighs the noise levels (min_snr: min(SNR, 5), see toydiff.losses)")
    train.add_argument("--timestep-sampling", choices=TIMESTEP_SAMPLINGS, default=recipe.timestep_sampling,
                       help="how training draws each frame's noise level: uniform over 0..T-1, or logit_normal "
                            "(T·sigmoid(m + s·n), see toydiff.losses.sample_levels)")
    train.add_argument("--logit-mean", type=finite_float, default=recipe.logit_mean,
                       help="m of --timestep-sampling logit_normal (> 0: more training at high noise levels)")
    train.add_argument("--logit-std", type=positive_float, default=recipe.logit_std,
                       help="s of --timestep-sampling logit_normal")
    train.add_argument("--steps", type=positive_int, default=recipe.train.steps, help="training steps")
    train.add_argument("--batch-size", type=positive_int, default=recipe.train.batch_size, help="clips per step")
    train.add_argument("--learning-rate", type=non_negative_float, default=recipe.train.learning_rate,
                       help="peak AdamW learning rate (after warm-up, before the cosine decay)")
    train.add_argument("--num-videos", type=positive_int, default=recipe.num_train_videos,
                       help="training videos to generate")
    train.add_argument("--seed", type=int, default=recipe.data_seed, help="seed of the training videos")
    train.add_argument("--train-seed", type=int, default=recipe.train.seed,
                       help="seed of the training itself: the DiT's initialisation, the clips drawn and their noise; "
                            "change it for a second sample of the same recipe on the same videos")
    labelled_balls, unlabelled_balls = (VideoDiffusionRunConfig(scene_labels=labels).training_physics_config().min_balls
                                        for labels in (True, False))
    train.add_argument("--min-balls", type=positive_int, default=None,
                       help=f"the fewest balls a training video holds (at most {PhysicsConfig().max_balls}); held-out "
                            f"videos, rollouts and probes keep {PhysicsConfig().min_balls} to "
                            f"{PhysicsConfig().max_balls} (default: {labelled_balls} with scene labels, "
                            f"{unlabelled_balls} with --no-scene-labels; above {PhysicsConfig().min_balls} only "
                            "with --no-scene-labels)")
    train.add_argument("--scene-labels", action=argparse.BooleanOptionalAction, default=recipe.scene_labels,
                       help="tell the DiT which colours each video's balls have (a class per set of colours, "
                            "videodiff.data.scene_labels); rollouts of held-out videos then pass their labels "
                            "(default: %(default)s)")
    train.add_argument("--label-dropout", type=unit_fraction, default=None,
                       help="with --scene-labels, the share of clips shown the null label instead "
                            f"(default: {SCENE_LABEL_DROPOUT})")
    train.add_argument("--anchor-frame", action=argparse.BooleanOptionalAction, default=recipe.dit.anchor_frame,
                       help="put a clean real frame from earlier in the video in front of every window (a rollout: "
                            "the last real context frame, kept in every window; see VideoDiTConfig.anchor_frame) "
                            "(default: %(default)s)")
    train.add_argument("--memory-frames", type=non_negative_int, default=recipe.dit.memory_frames, metavar="M",
                       help="put M clean frames from further back in front of every window, --memory-stride apart, "
                            "the nearest that many frames before the window (a rollout: the video so far, its own "
                            "frames included; see VideoDiTConfig.memory_frames) (0: none) (default: %(default)s)")
    train.add_argument("--memory-stride", type=positive_int, default=recipe.dit.memory_stride, metavar="S",
                       help="frames between memory frames, and from the nearest to the window (default: %(default)s)")
    train.add_argument("--corrupt-history", type=unit_fraction, default=recipe.corrupt_history_probability,
                       metavar="P",
                       help="the share of clips with a clean history whose history shows one ball left out or "
                            "repainted, while the frames to learn keep it (videodiff.data.corrupted_copies); the whole "
                            "history needs --anchor-frame or --memory-frames, --corrupt-end its last frames only (0: real "
                            "histories only) "
                            "(default: %(default)s)")
    train.add_argument("--corrupt-end", action=argparse.BooleanOptionalAction, default=recipe.corrupt_history_end,
                       help="with --corrupt-history: corrupt only the history's last 1..H-1 frames, as a rollout "
                            "loses a ball, the frames before still showing it (default: %(default)s)")
    train.add_argument("--whole-window", type=unit_fraction, default=recipe.whole_window_probability, metavar="Q",
                       help="--noise-mode diffusion_forcing: the share of all clips given one noise level over the "
                            "whole window, taken from those without a clean history, so at most 1 - --clean-history; "
                            "the first window of sample's videos from nothing; 0: off (default: %(default)s)")
    train.add_argument("--guide-fraction", type=unit_fraction, default=recipe.guide_fraction,
                       help="keep the EMA weights after this share of the steps as autoguidance's guide (0: none)")
    train.add_argument("--evaluate-every", type=non_negative_int, default=0, metavar="N",
                       help="a learning curve: every N steps (a multiple of the log interval, "
                            f"{recipe.train.log_every}) score the EMA weights on --evaluate-videos held-out videos, "
                            "4 real frames (fewer in a shorter window) then 8 generated, the model alone (videodiff.evaluation."
                            "learning_curve_point), print the figures and write them to OUT/curve.json; the time "
                            "it takes is not counted as training time (0: no curve) (default: %(default)s)")
    train.add_argument("--evaluate-videos", type=positive_int, default=32,
                       help="held-out videos scored at each point of --evaluate-every (default: %(default)s)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    train.add_argument("--out", default="runs/video/dit", help="folder of the run's checkpoint.pt (and curve.json)")
    add_device_option(train, "the model trains")
    add_precision_options(train, recipe.train.mixed_precision)
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=recipe.train.compile,
                       help="torch.compile the training step (falls back to eager where the machine cannot compile) "
                            "(default: %(default)s)")

    roll = commands.add_parser("rollout", help="continue held-out videos from real context frames")
    roll.add_argument("--checkpoint", type=existing_file, default="runs/video/dit/checkpoint.pt",
                      help="the video diffusion run")
    roll.add_argument("--num-videos", type=positive_int, default=32, help="held-out videos to continue")
    roll.add_argument("--context", type=positive_int, default=4, help="real context frames (fewer than the window)")
    roll.add_argument("--length", type=positive_int, default=64, help="frames to generate")
    add_guidance_options(roll)
    roll.add_argument("--out", default="runs/video/rollout",
                      help="folder for rollout.gif, frames.npy, truth.npy and metrics.json")
    add_device_option(roll, "the model samples (the same seed draws other videos on another device)")

    sample = commands.add_parser("sample", help="make videos from nothing (no real frame) of the scenes asked for")
    sample.add_argument("--checkpoint", type=existing_file, default="runs/video/dit/checkpoint.pt",
                        help="the video diffusion run")
    sample.add_argument("--num-videos", type=positive_int, default=8, help="videos to make (default: %(default)s)")
    sample.add_argument("--length", type=positive_int, default=32, help="frames per video (default: %(default)s)")
    sample.add_argument("--balls", type=_colours, default=None,
                        help="the balls of every video, colours separated by commas, from "
                             f"{', '.join(PALETTE_NAMES)}, for a run trained with scene labels (default: the scenes of "
                             "the first --num-videos held-out videos; a run without labels draws its own)")
    add_sampler_options(sample)
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default: %(default)s)")
    add_model_guidance_options(sample)
    sample.add_argument("--out", default="runs/video/sample",
                        help="folder for samples.gif, frames.npy and metrics.json")
    add_device_option(sample, "the model samples (the same seed draws other videos on another device)")

    evaluate = commands.add_parser("evaluate", help="physics metrics of rollouts for every history guidance")
    evaluate.add_argument("--checkpoint", type=existing_file, default="runs/video/dit/checkpoint.pt",
                          help="the video diffusion run")
    evaluate.add_argument("--num-videos", type=positive_int, default=32, help="held-out videos")
    evaluate.add_argument("--context", type=positive_int, default=4, help="real context frames")
    evaluate.add_argument("--length", type=positive_int, default=64, help="frames to generate")
    evaluate.add_argument("--scale", type=non_negative_float, default=2.0, help="guidance scale of the guided rows")
    evaluate.add_argument("--stabilization", type=int, default=20, help="k_s of the stabilised rows")
    add_sampler_options(evaluate)
    add_model_guidance_options(evaluate)
    evaluate.add_argument("--out", help="also write the table as JSON to this file (default: print it only)")
    add_device_option(evaluate, "the model samples (the same seed draws other videos on another device)")

    probe = commands.add_parser("probe", help="the physical-plausibility probe experiment (videodiff.interp)")
    probe.add_argument("--checkpoint", type=existing_file, default="runs/video/dit/checkpoint.pt",
                       help="the video diffusion run")
    probe.add_argument("--out", default="runs/video/probe",
                       help="folder for probe.json, features.npz and the figures")
    probe.add_argument("--num-pairs", type=positive_int, default=200,
                       help="matched plausible/impossible pairs (at least 10)")
    probe.add_argument("--steps", type=positive_int, default=10, help="DDIM inversion steps")
    probe.add_argument("--pool", choices=POOLS, default="all",
                       help="mean-pool the tokens of all the window's frames, only of those from the event on, or "
                            "each frame's own (per_frame: frames kept in order, projected to 256 features)")
    probe.add_argument("--frames-before-event", type=non_negative_int, default=4,
                       help="the window starts this many frames before the event frame")
    probe.add_argument("--history-frames", type=non_negative_int, default=None,
                       help="frames at the window's start held clean along the inversion, as a rollout holds its "
                            "history (default: the history the run trained with, 4 for the recipe; 0 inverts every "
                            "frame, as one would probe a model that never saw a clean history)")
    probe.add_argument("--permutations", type=positive_int, default=199, help="relabellings of the permutation null")
    probe.add_argument("--seed", type=int, default=0, help="seed of the pairs (the probes' splits use 0, 1, 2)")
    probe.add_argument("--quick", action="store_true", help="smoke-test sizes: runs in seconds, figures mean nothing")
    add_device_option(probe, "the DiT runs (the probes themselves are fitted on the CPU)")

    ablate = commands.add_parser("ablate", help="physics metrics of rollouts with one part of the DiT broken")
    ablate.add_argument("--checkpoint", type=existing_file, default="runs/video/dit/checkpoint.pt",
                        help="the video diffusion run")
    ablate.add_argument("--num-videos", type=positive_int, default=16, help="held-out videos")
    ablate.add_argument("--context", type=positive_int, default=4, help="real context frames")
    ablate.add_argument("--length", type=positive_int, default=16, help="frames to generate")
    ablate.add_argument("--steps", type=positive_int, default=ABLATION_STEPS,
                        help="sampling steps per frame, deterministic DDIM unless --eta says otherwise: the rows "
                             "differ only by what they break (default: %(default)s)")
    ablate.add_argument("--eta", type=unit_fraction, default=ABLATION_ETA,
                        help="η of every DDIM step: 0 deterministic, 1 the DDPM step (default: %(default)s)")
    ablate.add_argument("--alpha", type=non_negative_float, default=0.5, help="size of the injected noise, α")
    ablate.add_argument("--out", help="also write the table as JSON to this file (default: print it only)")
    add_device_option(ablate, "the model samples")

    demo = commands.add_parser("demo", help="train the VAE and the video DiT, write a rollout GIF (make demo)")
    demo.add_argument("--out", default="runs/demo/video", help="output folder")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def command_data(args) -> None:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise UsageError(f"--out must be a .npz file, got {args.out}")
    config = physics_config({"num_frames": args.num_frames})
    if not args.impossible:
        videos = make_videos(args.num_videos, seed=args.seed, config=config)
        videos.save(out)
        print(f"wrote {len(videos)} videos of {args.num_frames} frames to {out}")
        return
    pairs = make_impossible_pairs(args.num_videos, seed=args.seed, config=config)
    pairs.plausible.save(out)
    twin = out.with_name(out.stem + "-impossible.npz")
    pairs.impossible.save(twin)
    table = out.with_name(out.stem + "-pairs.json")
    table.write_text(json.dumps({"kinds": [str(kind) for kind in pairs.kinds],
                                 "event_frames": np.asarray(pairs.event_frames).tolist(),
                                 "pair_ids": np.asarray(pairs.pair_ids).tolist()}, indent=1))
    print(f"wrote {len(pairs.plausible)} plausible videos to {out}, their impossible twins to {twin}, "
          f"and each pair's kind and event frame to {table}")


def command_train_vae(args) -> None:
    config = video_vae_run_config(num_videos=args.num_videos, seed=args.seed)
    config.vae = vae_config(args.size, kl_weight=args.kl_weight)
    config.train = replace(config.train, steps=args.steps, batch_size=args.batch_size, device=args.device,
                           progress=not args.quiet)
    run = train_video_vae(config, out_dir=args.out, resume=not args.fresh, on_log=print_log_entry)
    print(f"trained the VAE in {run.seconds:.0f} s; latent scale {float(run.vae.latent_scale):.4f} "
          f"(measured); checkpoint {Path(args.out) / 'checkpoint.pt'}")


def _training_physics(min_balls: Optional[int]) -> Optional[dict]:
    """--min-balls as the run's training_physics (None, the recipe's, where it was not given): stored only
    where it differs from the videos' default."""
    if min_balls is None:
        return None
    if min_balls > PhysicsConfig().max_balls:
        raise UsageError(f"--min-balls {min_balls}: the videos hold at most {PhysicsConfig().max_balls} balls")
    return {} if min_balls == PhysicsConfig().min_balls else {"min_balls": min_balls}


def _dit_shape(args) -> dict:
    """--width and --depth as overrides of the registered size (the width through videodiff.dit.widened)."""
    depth = {} if args.depth is None else {"depth": args.depth}
    if args.width is None:  # the recipe's width for the recipe's size, else the size's own
        return {**(widened(args.dit_size, VIDEO_RECIPE_WIDTH) if args.dit_size == VIDEO_RECIPE_SIZE else {}), **depth}
    try:
        return {**widened(args.dit_size, args.width), **depth}
    except ValueError:
        head_dim = video_dit_config(args.dit_size).head_dim
        nearest = head_dim * max(1, round(args.width / head_dim))
        raise UsageError(f"--width {args.width}: the heads of --dit-size {args.dit_size} are {head_dim} wide, so the "
                         f"width must be a multiple of {head_dim} (e.g. {nearest})")


def command_train(args) -> None:
    if args.clean_history > 1:
        raise UsageError(f"--clean-history is a share of clips in [0, 1], got {args.clean_history}")
    clean_history = args.clean_history if args.noise_mode == "diffusion_forcing" else 0.0
    dit = video_dit_config(args.dit_size, num_frames=args.window, anchor_frame=args.anchor_frame,
                           memory_frames=args.memory_frames, memory_stride=args.memory_stride, **_dit_shape(args))
    config = VideoDiffusionRunConfig(vae_checkpoint=args.vae, noise_mode=args.noise_mode,
                                     clean_history_probability=clean_history, guide_fraction=args.guide_fraction,
                                     shared_future_level=args.shared_future_level and clean_history > 0,
                                     future_level_lag=args.future_level_lag,
                                     clean_history_frames=args.history_frames,
                                     clean_frame_loss=args.clean_frame_loss,
                                     history_noise_max=args.history_noise,
                                     model_history_probability=args.model_history, init_checkpoint=args.init,
                                     corrupt_history_probability=args.corrupt_history,
                                     corrupt_history_end=args.corrupt_end,
                                     whole_window_probability=args.whole_window,
                                     weighting=args.weighting,
                                     timestep_sampling=args.timestep_sampling, logit_mean=args.logit_mean,
                                     logit_std=args.logit_std,
                                     context_frames=args.context_frames, num_train_videos=args.num_videos,
                                     data_seed=args.seed, dit=dit,
                                     training_physics=_training_physics(args.min_balls),
                                     scene_labels=args.scene_labels, label_dropout=args.label_dropout)
    try:
        config.check_scene_labels()  # the rule is the config's; the command line says it in its own options
    except ValueError:
        raise UsageError(f"--min-balls {args.min_balls} leaves out the scenes of fewer balls, whose scene labels would "
                         f"never be trained: scene labels (the default) train on {PhysicsConfig().min_balls} to "
                         f"{PhysicsConfig().max_balls} balls; add --no-scene-labels to train on fewer kinds of scene"
                         ) from None
    if args.future_level_lag and not (args.future_level_lag < config.num_timesteps and config.shared_future_level
                                      and args.timestep_sampling == "uniform" and not args.clean_frame_loss):
        shared = "--shared-future-level" if args.shared_future_level else "--no-shared-future-level"
        raise UsageError(f"--future-level-lag {args.future_level_lag} staggers the frames after diffusion forcing's "
                         f"clean history and needs a lag below {config.num_timesteps} timesteps, "
                         f"--shared-future-level, --clean-history > 0, --timestep-sampling uniform and "
                         f"--no-clean-frame-loss; this run has "
                         f"--noise-mode {args.noise_mode}, --clean-history {args.clean_history}, {shared}, "
                         f"--timestep-sampling {args.timestep_sampling}"
                         f"{', --clean-frame-loss' if args.clean_frame_loss else ''}")
    if not 0 <= args.history_noise < config.num_timesteps:
        raise UsageError(f"--history-noise is a timestep in 0..{config.num_timesteps - 1}, got {args.history_noise}")
    if args.history_noise and not clean_history > 0:
        raise UsageError(f"--history-noise {args.history_noise} noises the clean history of diffusion forcing's clips, "
                         f"but this run gives none (--noise-mode {args.noise_mode}, --clean-history {args.clean_history})")
    if args.model_history and (not clean_history > 0 or args.history_frames is None):
        raise UsageError(f"--model-history {args.model_history} replaces the clean history of a fixed length by the "
                         f"model's own frames, but this run has none (--noise-mode {args.noise_mode}, --clean-history "
                         f"{args.clean_history}, --history-frames {args.history_frames or 'random'})")
    witness = args.anchor_frame or args.memory_frames or args.corrupt_end
    if args.corrupt_history and not (witness and clean_history > 0 and args.history_frames is not None
                                     and not args.history_noise and not args.model_history
                                     and not args.clean_frame_loss):
        raise UsageError(f"--corrupt-history {args.corrupt_history} corrupts the clean history of a fixed length and "
                         f"needs a frame that shows what it lost: pass --anchor-frame, --memory-frames or "
                         f"--corrupt-end, keep a clean history (--clean-history > 0, --history-frames not random, "
                         f"--history-noise 0, --no-clean-frame-loss) and no --model-history")
    if args.whole_window and (args.noise_mode != "diffusion_forcing"
                              or not whole_window_fits(args.whole_window, clean_history)):
        raise UsageError(f"--whole-window {args.whole_window} takes its clips from diffusion forcing's clips without a "
                         f"clean history: expected --noise-mode diffusion_forcing and at most "
                         f"{1 - clean_history:g} (1 - --clean-history); this run has --noise-mode {args.noise_mode}, "
                         f"--clean-history {args.clean_history}")
    if args.whole_window and (args.anchor_frame or args.memory_frames):
        raise UsageError(f"--whole-window {args.whole_window} teaches the first window of a video from nothing, which a "
                         f"model with --anchor-frame or --memory-frames never draws (it reads real frames)")
    if args.memory_frames and args.model_history:
        raise UsageError(f"--model-history {args.model_history} does not support --memory-frames: the model's own "
                         f"history would need its memory too")
    if isinstance(args.history_frames, int) and args.history_frames >= args.window:
        raise UsageError(f"--history-frames {args.history_frames} leaves no frame to learn in a window of {args.window}")
    if args.noise_mode == "clean_context" and args.context_frames >= args.window:
        raise UsageError(f"--context-frames {args.context_frames} leaves no frame to learn in a window of {args.window}")
    config.train = replace(config.train, steps=args.steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                           seed=args.train_seed, device=args.device, mixed_precision=args.precision, compile=args.compile,
                           progress=not args.quiet)
    if args.evaluate_every % config.train.log_every:
        raise UsageError(f"--evaluate-every {args.evaluate_every} must be a multiple of the log interval, "
                         f"{config.train.log_every} steps")
    evaluate = None
    if args.evaluate_every:
        def evaluate(model, step):
            return learning_curve_point(model, args.evaluate_videos, context=min(4, args.window - 1))
    run = train_video_diffusion(config, out_dir=args.out, resume=not args.fresh, on_log=_print_with_curve(args),
                                evaluate=evaluate, evaluate_every=args.evaluate_every)
    print(f"trained the video DiT in {run.seconds:.0f} s; checkpoint {Path(args.out) / 'checkpoint.pt'}")
    curve = [{"step": entry["step"], "seconds": entry["seconds"], **entry["evaluation"]}
             for entry in run.history if "evaluation" in entry]
    if curve:
        (Path(args.out) / "curve.json").write_text(json.dumps(curve, indent=1))
        print(f"wrote the learning curve ({len(curve)} points) to {Path(args.out) / 'curve.json'}")


def _print_with_curve(args):
    """train's on_log: print_log_entry, and a point of the learning curve when the entry holds one."""
    def on_log(entry: dict) -> None:
        print_log_entry(entry)
        point = entry.get("evaluation")
        if point is not None:
            error = point["position_error_first"]
            print(f"  {args.evaluate_videos} held-out videos, 8 generated frames, the model alone: "
                  f"{'-' if error is None else f'{error:.2f}'} px, intact {point['intact_share']:.3f}, "
                  f"found {point['found_share']:.3f}, a ball missing {point['missing']:.3f}", flush=True)
    return on_log


def _check_rollout_request(run, context: int, length: int) -> None:
    if context >= run.window:
        raise UsageError(f"--context {context} does not fit the model's window of {run.window} frames: "
                         f"pass at most {run.window - 1} context frames")
    if length < 1:
        raise UsageError(f"--length must be >= 1, got {length}")


def command_rollout(args) -> None:
    from videodiff.plots import save_rollout_gif

    run = load_video_diffusion(args.checkpoint, device=pick_device(args.device))
    _check_rollout_request(run, args.context, args.length)
    guidance = guidance_from(args)
    guidance.check_levels(run.schedule.num_timesteps)
    guide_scale, label_scale = autoguidance_scale(args.autoguidance, run), label_scale_for(args, run)
    generated, truth, metrics = rollout_and_score(
        run, args.num_videos, args.context, args.length, guidance, num_steps=args.steps, scheduling=args.scheduling,
        spacing=args.spacing, stabilization_level=args.stabilization, eta=args.eta, guide_scale=guide_scale,
        label_scale=label_scale, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "frames.npy", generated)
    np.save(out / "truth.npy", truth.frames)
    save_rollout_gif(generated[:16], truth.frames[:16], out / "rollout.gif", num_context=args.context)
    metrics["request"] = {"num_videos": args.num_videos, "context": args.context, "length": args.length,
                          "guidance": args.guidance, "scale": args.scale, "stabilization": args.stabilization,
                          "scheduling": args.scheduling, "steps": args.steps, "spacing": args.spacing, "eta": args.eta,
                          "seed": args.seed, "autoguidance": guide_scale, "label_scale": label_scale}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"position error over the first 8 generated frames {metrics['position_error_first']:.2f} px; "
          f"well-formed frames {metrics['well_formed_share']:.1%} (matched to the truth), intact "
          f"{metrics['intact_share']:.1%} (judged alone); moves: {metrics['moves']}")
    print(format_crowding(metrics["intact_by_crowding"]))
    print(format_faults(metrics["faults"]))
    print(f"wrote rollout.gif, frames.npy, truth.npy and metrics.json to {out}")


def command_sample(args) -> None:
    from videodiff.plots import save_rollout_gif

    run = load_video_diffusion(args.checkpoint, device=pick_device(args.device))
    guide_scale, label_scale = autoguidance_scale(args.autoguidance, run), label_scale_for(args, run)
    physics = physics_config(run.config.physics)
    labels = None
    if args.balls is not None and not run.config.scene_labels:
        raise UsageError("--balls needs a run trained with scene labels; this one was trained without them "
                         "(train --no-scene-labels): leave --balls out")
    if run.config.scene_labels:
        # The held-out videos: their scenes when --balls is not given, and the judge's reference. A video has at
        # least two frames; a one-frame request reads the first.
        held_out = held_out_videos(run.config, args.num_videos, num_frames=max(2, args.length))
    if args.balls is not None:
        try:
            label = scene_label(args.balls, physics.max_balls)
        except ValueError as error:
            raise UsageError(f"--balls: {error}") from None
        labels = np.full(args.num_videos, label)
    elif run.config.scene_labels:
        labels = scene_labels(held_out)
    frames = run.generate(args.length, args.num_videos, labels=labels, label_scale=label_scale,
                          guide_scale=guide_scale, num_steps=args.steps, scheduling=args.scheduling,
                          spacing=args.spacing, eta=args.eta, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "frames.npy", frames)
    save_rollout_gif(frames[:16], None, out / "samples.gif", num_context=0)
    metrics = {"request": {"num_videos": args.num_videos, "length": args.length, "balls": args.balls,
                           "labels": None if labels is None else np.asarray(labels).tolist(),
                           "scheduling": args.scheduling, "steps": args.steps, "spacing": args.spacing, "eta": args.eta,
                           "seed": args.seed, "autoguidance": guide_scale, "label_scale": label_scale}}
    if labels is not None:
        # The balls asked for, one row of slots per video (drawn_as_asked reads only the present slots).
        colours = np.zeros((len(labels), physics.max_balls), dtype=np.int64)
        present = np.zeros(colours.shape, dtype=bool)
        for row, label in enumerate(labels):
            balls = scene_sets(physics.max_balls)[int(label)]
            colours[row, :len(balls)], present[row, :len(balls)] = balls, True
        judged = drawn_as_asked(frames, colours, present, radius_range=physics.radius_range)
        real = run.decode(run.encode(held_out.frames))[:, :args.length]
        reference = drawn_as_asked(real, held_out.colours[:, 0], held_out.present[:, 0],
                                   radius_range=physics.radius_range)
        metrics["drawn_as_asked"] = {key: value for key, value in judged.items() if key != "frames"}
        metrics["reference"] = {key: value for key, value in reference.items() if key != "frames"}

        def speed(judgement):
            return "-" if judgement["speed"] is None else f"{judgement['speed']:.2f} px/frame"

        print(f"frames that hold the balls asked for, each a whole disc, nothing else: {judged['share']:.1%} "
              f"(a ball missing {judged['missing']:.1%}, misshapen {judged['misshapen']:.1%}, stray colour "
              f"{judged['stray colour']:.1%}); the balls move {speed(judged)}")
        print(f"the same judge on {args.num_videos} held-out physics videos through the VAE (a ball behind the bar "
              f"counts as missing): {reference['share']:.1%}; their balls move {speed(reference)}")
    else:
        print("a run without scene labels draws scenes of its own: no scene to judge its videos against")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"wrote samples.gif, frames.npy and metrics.json to {out}")


def command_evaluate(args) -> None:
    run = load_video_diffusion(args.checkpoint, device=pick_device(args.device))
    _check_rollout_request(run, args.context, args.length)
    guide_scale, label_scale = autoguidance_scale(args.autoguidance, run), label_scale_for(args, run)
    table = evaluation_table(run, args.num_videos, args.context, args.length, args.scale, args.stabilization,
                             args.steps, scheduling=args.scheduling, guide_scale=guide_scale, eta=args.eta,
                             spacing=args.spacing, label_scale=label_scale)
    guides = ([f"autoguidance w = {guide_scale:g} (the run's early snapshot as the guide)"] if guide_scale != 1 else []) \
        + ([f"guidance by the scene label s = {label_scale:g}"] if label_scale != 1 else [])
    if guides:
        print(f"every row but the last with {' and '.join(guides)}; the last row is the model alone")
    reference = [{**row, "reference": True} for row in reference_rows(run, args.num_videos, args.context, args.length)]
    print(format_table(table))
    print("reference rows (no model: the ceiling and a frozen video):\n" + format_table(reference))
    if args.out:
        Path(args.out).write_text(json.dumps(table + reference, indent=2))


def command_probe(args) -> None:

    if args.num_pairs < 10 and not args.quick:
        raise UsageError(f"--num-pairs must be at least 10 (grouped folds need pairs to split), got {args.num_pairs}")
    run = load_video_diffusion(args.checkpoint, device=pick_device(args.device))
    chosen = dict(pool=args.pool, frames_before_event=args.frames_before_event, history_frames=args.history_frames)
    config = replace(quick_probe_config(), **chosen) if args.quick else ProbeExperimentConfig(
        num_pairs=args.num_pairs, inversion_steps=args.steps, num_permutations=args.permutations, seed=args.seed,
        **chosen)
    history = held_history_frames(run, config)  # refuses a history that fills the window, before any work
    print(f"probing {args.checkpoint} on {config.num_pairs} matched pairs ({2 * config.num_pairs} videos); windows "
          f"from {config.frames_before_event} frames before the event, the first {history} held clean")
    result = run_probe_experiment(run, config, out_dir=args.out)
    best = result["best"]
    print(f"best cell (chosen on inner folds): {best['site']} block {best['block']} level {best['noise_level']}: "
          f"per-video accuracy {best['per_video_accuracy']:.3f} ± {best['per_video_accuracy_std']:.3f} (held-out "
          f"folds), pairwise {best['pairwise_accuracy']:.3f}, AUROC {best['auroc']:.3f}")
    for name in ("vae_latent_baseline", "x_t_baseline", "random_init_baseline"):
        print(f"{name}: per-video accuracy {result[name]['per_video_accuracy']:.3f}")
    print(f"permutation p-value {result['permutation_p_value']:.4f}; total {result['seconds']['total']:.0f} s")
    print(f"wrote probe.json, features.npz, probe_heatmaps.png and probe_sweeps.png to {args.out}")


def command_ablate(args) -> None:
    from videodiff.interp.ablations import ablation_table, format_ablation_table, standard_ablations

    run = load_video_diffusion(args.checkpoint, device=pick_device(args.device))
    _check_rollout_request(run, args.context, args.length)
    table = ablation_table(run, standard_ablations(run.model, alpha=args.alpha), num_videos=args.num_videos,
                           context=args.context, length=args.length, num_steps=args.steps, eta=args.eta)
    print(format_ablation_table(table))
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2))


def command_demo(args) -> None:
    from videodiff.demo import run_demo

    run_demo(Path(args.out), progress=not args.quiet)


COMMANDS = {"data": command_data, "train-vae": command_train_vae, "train": command_train, "rollout": command_rollout,
            "sample": command_sample, "evaluate": command_evaluate, "probe": command_probe, "ablate": command_ablate,
            "demo": command_demo}


def main(argv=None) -> int:
    return run_cli("videodiff", build_parser(), COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
