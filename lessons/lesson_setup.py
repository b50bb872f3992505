"""What every lesson sets up first: quick mode, where its figures go, and how many CPU threads.

Lessons import it as a sibling module (``from lesson_setup import ...``): running
``python lessons/NN_name.py`` puts the lessons folder on the import path.
"""
import os
from pathlib import Path

import torch

QUICK = os.environ.get("LESSON_QUICK") == "1"  # a smoke run (CI): a few hundred training steps, fewer points
# runs/ at the top of the repository, wherever the lesson is started from (a notebook runs in lessons/).
OUTPUT_DIR = Path(os.environ.get("LESSON_OUTPUT_DIR", Path(__file__).resolve().parents[1] / "runs"))
ROOT = OUTPUT_DIR / ("lessons_quick" if QUICK else "lessons")
SPIRAL = ROOT / "spiral"  # the one checkpoint lessons 02-04 share


def start_lesson(name: str) -> Path:
    """Set the number of CPU threads, and return the lesson's output folder (created by the first figure saved).

    The lessons use every core torch finds (its default); ``LESSON_THREADS=N`` sets another number.
    """
    value = os.environ.get("LESSON_THREADS", "").strip()
    if value and not (value.isdigit() and int(value) > 0):
        raise SystemExit(f"LESSON_THREADS must be a positive whole number of CPU threads, got {value!r}")
    threads = int(value) if value else 0
    if threads > 0:
        torch.set_num_threads(threads)
    print(f"lesson {name}: {'quick mode, ' if QUICK else ''}{torch.get_num_threads()} CPU thread(s)", flush=True)
    return ROOT / name


# ---------------------------------------------------------------------------------------------
# The image lessons (05-07) share one recipe and four checkpoints.  Each is trained the first time
# a lesson needs it and reused afterwards, so every lesson also runs on its own.
# ---------------------------------------------------------------------------------------------
VAE = ROOT / "vae"                          # lesson 05: the autoencoder (pixels <-> latents)
LATENT = ROOT / "latent"                    # lesson 06: the DiT on latents
EVALUATION = ROOT / "evaluation"            # lesson 05: the classifier that grades samples in 06-07
NOISY = ROOT / "noisy_classifier"           # lesson 07: p(label | noisy latent) for classifier guidance

# Full mode: the library's defaults (32x32 images, all 42 classes).  Quick mode: 16x16 images of four
# classes, a few hundred of them, and tiny step counts — it proves the lessons run, nothing more.
IMAGE_SIZE = 16 if QUICK else 32
DATASET_OPTIONS = {"shapes": ["ring", "cross"], "colours": ["red", "blue"]} if QUICK else {}
QUICK_TRAIN_IMAGES = 512
# The prompts whose samples the figures show: one per shape in full mode, every class in quick mode.
PROMPTS = (["red ring", "blue ring", "red cross", "blue cross"] if QUICK else
           ["red circle", "green square", "blue triangle", "yellow cross", "cyan ring", "magenta diamond", "red star"])


def vae_recipe():
    """The VAERunConfig of lesson 05 (VAERunConfig() in full mode)."""
    from dataclasses import replace

    from imagediff.pipeline import VAERunConfig

    recipe = VAERunConfig(image_size=IMAGE_SIZE, dataset_options=dict(DATASET_OPTIONS))
    if QUICK:
        recipe.num_train_images = QUICK_TRAIN_IMAGES
        recipe.train = replace(recipe.train, steps=150, batch_size=32, warmup_steps=20, log_every=50,
                               checkpoint_every=0, progress=False)
    return recipe


def latent_recipe():
    """The DiffusionRunConfig of lesson 06: a DiT on the latents of the VAE in VAE/checkpoint.pt."""
    from dataclasses import replace

    from imagediff.dit import DiTConfig
    from imagediff.pipeline import DiffusionRunConfig

    recipe = DiffusionRunConfig(image_size=IMAGE_SIZE, dataset_options=dict(DATASET_OPTIONS),
                                vae_checkpoint=str(VAE / "checkpoint.pt"))
    # 2000 of the library's 3000 steps, so that lesson 06 (which also trains the pixel DiT for the same
    # time) stays within its 10 minutes; the bench (make bench) measures the full recipe.
    recipe.train = replace(recipe.train, steps=2000)
    if QUICK:
        recipe.num_train_images = QUICK_TRAIN_IMAGES
        recipe.dit = DiTConfig(patch_size=1, hidden_dim=64, depth=2, num_heads=2)  # 16x16 images: 4x4 latents
        recipe.train = replace(recipe.train, steps=200, batch_size=64, warmup_steps=20, log_every=50,
                               checkpoint_every=0, progress=False, compile=False)  # compiling outlasts 200 steps
    return recipe


def evaluation_recipe():
    """The EvaluationRunConfig of the grader (trained on real images of other seeds than the models')."""
    from dataclasses import replace

    from imagediff.classifier import EvaluationClassifierConfig, EvaluationRunConfig

    recipe = EvaluationRunConfig(image_size=IMAGE_SIZE, dataset_options=dict(DATASET_OPTIONS))
    if QUICK:
        recipe.num_train_images = QUICK_TRAIN_IMAGES
        recipe.classifier = EvaluationClassifierConfig(width=8)
        recipe.train = replace(recipe.train, steps=150, warmup_steps=20, log_every=50, checkpoint_every=0,
                               progress=False)
    return recipe


def noisy_classifier_recipe():
    """The NoisyClassifierRunConfig of lesson 07's classifier guidance."""
    from dataclasses import replace

    from imagediff.classifier import NoisyClassifierRunConfig

    recipe = NoisyClassifierRunConfig()
    if QUICK:
        recipe.dit = replace(recipe.dit, hidden_dim=64, num_heads=2)
        recipe.train = replace(recipe.train, steps=150, batch_size=64, warmup_steps=20, log_every=50,
                               checkpoint_every=0, progress=False)
    return recipe


def finished(checkpoint: Path, steps: int, recipe=None) -> bool:
    """Whether ``checkpoint`` exists and holds a run that completed ``steps`` training steps of ``recipe``.

    A checkpoint that another recipe wrote (the library's defaults changed since it was trained, say) is
    not the lesson's model: it is moved aside to checkpoint.previous-recipe.pt, a line says which
    settings differ, and the answer is False, so that the lesson trains its own recipe from scratch.
    The recipe's top-level settings are compared (numbers, strings, flags; not the nested network
    configs, which training completes from the data), as the training loop compares them
    (`toydiff.training.recipe_differences`: a setting the checkpoint predates counts as unchanged when off).
    """
    from toydiff.checkpoints import load_checkpoint
    from toydiff.training import recipe_differences, set_aside

    if not checkpoint.exists():
        return False
    state = load_checkpoint(checkpoint)
    if recipe is not None:
        stored = {key: value for key, value in state.get("config", {}).items() if not isinstance(value, dict)}
        asked = {key: value for key, value in recipe.to_dict().items() if not isinstance(value, dict)}
        differing = [key for key in recipe_differences(stored, asked) if key in asked]
        if differing:
            set_aside(checkpoint, differing)
            return False
    return int(state["step"]) >= steps


def shared_vae():
    """Lesson 05's trained VAE (a TrainedVAE): loaded when finished, trained (or resumed) otherwise."""
    from imagediff.pipeline import load_vae, train_vae

    recipe, checkpoint = vae_recipe(), VAE / "checkpoint.pt"
    if finished(checkpoint, recipe.train.steps, recipe):
        return load_vae(checkpoint)
    print(f"training the VAE of lesson 05 first ({recipe.train.steps} steps) -> {VAE}", flush=True)
    return train_vae(recipe, out_dir=VAE)


def shared_latent_model():
    """Lesson 06's latent DiT (an ImageDiffusionModel): loaded when finished, trained otherwise."""
    from imagediff.pipeline import load_image_diffusion, train_image_diffusion

    recipe, checkpoint = latent_recipe(), LATENT / "checkpoint.pt"
    if finished(checkpoint, recipe.train.steps, recipe):
        return load_image_diffusion(checkpoint)
    vae = shared_vae().vae
    print(f"training the latent DiT of lesson 06 first ({recipe.train.steps} steps) -> {LATENT}", flush=True)
    return train_image_diffusion(recipe, out_dir=LATENT, vae=vae)


def shared_grader(num_images: int):
    """The evaluation classifier (trained once) and the scores of ``num_images`` held-out real images.

    Compare a Fréchet distance only with one computed from as many images: build the grader with
    ``num_images`` equal to the number of samples you will score.
    """
    from imagediff.classifier import evaluation_classifier
    from imagediff.evaluation import Grader

    recipe, checkpoint = evaluation_recipe(), EVALUATION / "checkpoint.pt"
    if not finished(checkpoint, recipe.train.steps):
        print(f"training the evaluation classifier first ({recipe.train.steps} steps) -> {EVALUATION}", flush=True)
    classifier = evaluation_classifier(checkpoint, recipe)
    return Grader.build(classifier, recipe.dataset, num_images, IMAGE_SIZE, **DATASET_OPTIONS)


# ---------------------------------------------------------------------------------------------
# The video lessons (08-12) share two checkpoints, trained the first time a lesson needs them.
# ---------------------------------------------------------------------------------------------
VIDEO_VAE = ROOT / "video_vae"              # lesson 08: the per-frame autoencoder (frames <-> latents)
VIDEO_DIT = ROOT / "video_dit"              # lesson 09: the video DiT trained with diffusion forcing

# Full mode: the library's defaults (32 frames of 32x32, a window of 8).  Quick mode: 12-frame videos,
# a few dozen of them, a one-block DiT with a window of 4, a few dozen training steps per network.
VIDEO_PHYSICS = {"num_frames": 12} if QUICK else {}
# Real frames given to a model before it predicts: half its window (4 of 8; 2 of 4 in quick mode).
VIDEO_CONTEXT = 2 if QUICK else 4


def video_vae_recipe():
    """The VAERunConfig of lesson 08 (videodiff's video_vae_run_config() in full mode)."""
    from dataclasses import replace

    from videodiff.pipeline import video_vae_run_config

    if not QUICK:
        return video_vae_run_config()
    recipe = video_vae_run_config(num_videos=20, physics=dict(VIDEO_PHYSICS))
    recipe.train = replace(recipe.train, steps=30, batch_size=32, warmup_steps=5, log_every=10,
                           checkpoint_every=0, progress=False)
    return recipe


def video_dit_recipe():
    """The VideoDiffusionRunConfig of lesson 09: diffusion forcing on the latents of VIDEO_VAE's VAE."""
    from dataclasses import replace

    from videodiff.dit import video_dit_config
    from videodiff.pipeline import VideoDiffusionRunConfig

    recipe = VideoDiffusionRunConfig(vae_checkpoint=str(VIDEO_VAE / "checkpoint.pt"))
    # 3000 of the library's 7000 steps (compiled, on 2 idle cores: 0.12 s each when the DiT was 128 wide and
    # trained in fp32; 68 ms at today's width of 192 under bf16 on a CPU with AMX), so that lesson 09 trains its
    # model within its 10 minutes; the bench (make bench) measures the full recipe. The lessons' rollouts are
    # that much rougher.
    recipe.train = replace(recipe.train, steps=3000)
    if QUICK:
        recipe.physics, recipe.num_train_videos = dict(VIDEO_PHYSICS), 20
        recipe.dit = video_dit_config("tiny", hidden_dim=48, depth=1, num_heads=2, num_frames=4)
        recipe.train = replace(recipe.train, steps=30, batch_size=8, warmup_steps=5, log_every=10,
                               checkpoint_every=0, progress=False, compile=False)  # compiling outlasts 30 steps
    return recipe


def shared_video_vae():
    """Lesson 08's per-frame VAE (a TrainedVAE): loaded when finished, trained (or resumed) otherwise."""
    from imagediff.pipeline import load_vae
    from videodiff.pipeline import train_video_vae

    recipe, checkpoint = video_vae_recipe(), VIDEO_VAE / "checkpoint.pt"
    if finished(checkpoint, recipe.train.steps, recipe):
        return load_vae(checkpoint)
    print(f"training the per-frame VAE of lesson 08 first ({recipe.train.steps} steps) -> {VIDEO_VAE}", flush=True)
    return train_video_vae(recipe, out_dir=VIDEO_VAE)


def shared_video_model():
    """Lesson 09's video DiT (a VideoDiffusionModel): loaded when finished, trained otherwise."""
    from videodiff.pipeline import load_video_diffusion, train_video_diffusion

    recipe, checkpoint = video_dit_recipe(), VIDEO_DIT / "checkpoint.pt"
    if finished(checkpoint, recipe.train.steps, recipe):
        return load_video_diffusion(checkpoint, vae_checkpoint=VIDEO_VAE / "checkpoint.pt")
    vae = shared_video_vae().vae
    print(f"training the video DiT of lesson 09 first ({recipe.train.steps} steps) -> {VIDEO_DIT}", flush=True)
    return train_video_diffusion(recipe, out_dir=VIDEO_DIT, vae=vae)
