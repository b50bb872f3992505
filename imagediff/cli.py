"""Command line: ``python -m imagediff train-vae|train|train-classifier|sample|evaluate|levers|demo``.

    python -m imagediff train-vae --out runs/vae
    python -m imagediff train --vae runs/vae/checkpoint.pt --out runs/latent
    python -m imagediff sample --checkpoint runs/latent/checkpoint.pt --prompt "red circle" \
        --guidance 3 --num-samples 16 --out grid.png
    python -m imagediff train-classifier --kind evaluation --out runs/evaluation
    python -m imagediff evaluate --checkpoint runs/latent/checkpoint.pt --scales 0,1,3,5,7

A bad argument (an unknown prompt, a missing checkpoint, a negative scale…) ends the program with
status 2 and one line saying what was wrong; an unknown prompt lists the known class names.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Optional

import torch

from imagediff.classifier import (
    EvaluationRunConfig, NoisyClassifierRunConfig, load_evaluation_classifier, load_noisy_classifier,
    train_evaluation_classifier, train_noisy_classifier,
)
from imagediff.data import GENERATORS, make_dataset
from imagediff.dit import DIT_SIZES, dit_config
from imagediff.evaluation import Grader, format_sweep, guidance_sweep
from imagediff.levers import run_levers
from imagediff.metrics import psnr, summarise_psnr
from imagediff.pipeline import (
    AUTOGUIDANCE_SCALE, GUIDANCE_RESCALE, SAMPLERS, SPACES, DiffusionRunConfig, VAERunConfig, decode_latents,
    encode_images, load_image_diffusion, load_vae, train_image_diffusion, train_vae,
)
from imagediff.plots import save_image_grid
from imagediff.vae import VAE_SIZES, vae_config
from toydiff.cli import (
    OneLineParser, UsageError, add_device_option, add_precision_options, autoguidance_scale, existing_file,
    finite_float, non_negative_float, positive_float, positive_int, print_log_entry, run_cli, unit_fraction,
)
from toydiff.distributed import pick_device


def _scales(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0,1,3, got {text!r}") from None
    if not values or any(not v >= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected guidance scales >= 0, got {text!r}")
    return values


def add_kl_weight_option(parser: argparse.ArgumentParser, default: float) -> None:
    """train-vae's --kl-weight (this layer's and the video layer's): VAELoss's weight of the KL term."""
    parser.add_argument("--kl-weight", type=non_negative_float, default=default,
                        help="weight of the KL term against the per-pixel squared error (imagediff.vae.VAELoss)")


def build_parser() -> argparse.ArgumentParser:
    # The defaults that --help shows are the recipes' own.
    vae_recipe, diffusion_recipe, evaluation_recipe = VAERunConfig(), DiffusionRunConfig(), EvaluationRunConfig()
    noisy_steps = NoisyClassifierRunConfig().train.steps
    parser = OneLineParser(prog="imagediff", description="Latent image diffusion: a VAE, a class-conditional DiT, "
                                                         "guidance and its evaluation.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    vae = commands.add_parser("train-vae", help="train the autoencoder and measure its latent scale")
    vae.add_argument("--dataset", choices=sorted(GENERATORS), default=vae_recipe.dataset,
                     help="the generated images to train on")
    vae.add_argument("--size", choices=sorted(VAE_SIZES), default="tiny", help="the VAE registry entry")
    add_kl_weight_option(vae, vae_recipe.vae.kl_weight)
    vae.add_argument("--steps", type=positive_int, default=vae_recipe.train.steps, help="training steps")
    vae.add_argument("--batch-size", type=positive_int, default=vae_recipe.train.batch_size,
                     help="images per training step")
    vae.add_argument("--num-images", type=positive_int, default=vae_recipe.num_train_images,
                     help="training images to generate")
    vae.add_argument("--seed", type=int, default=vae_recipe.data_seed, help="seed of the generated training images")
    vae.add_argument("--quiet", action="store_true", help="no progress bar")
    vae.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    vae.add_argument("--out", default="runs/vae", help="folder of the run's checkpoint.pt")
    add_device_option(vae, "the model trains")

    train = commands.add_parser("train", help="train the DiT on VAE latents (or on pixels)")
    train.add_argument("--dataset", choices=sorted(GENERATORS), default=diffusion_recipe.dataset,
                       help="the generated images to learn")
    train.add_argument("--space", choices=SPACES, default=diffusion_recipe.space,
                       help="latent: diffuse the VAE's scaled latents; pixel: diffuse the images themselves")
    train.add_argument("--vae", default=diffusion_recipe.vae_checkpoint, help="VAE checkpoint (for --space latent)")
    train.add_argument("--dit-size", choices=list(DIT_SIZES), default="tiny", help="the DiT registry entry")
    train.add_argument("--patch-size", type=positive_int,
                       help="side p of the square patch each token covers (default: the --dit-size entry's)")
    train.add_argument("--steps", type=positive_int, default=diffusion_recipe.train.steps, help="training steps")
    train.add_argument("--batch-size", type=positive_int, default=diffusion_recipe.train.batch_size,
                       help="images (latents) per training step")
    train.add_argument("--learning-rate", type=non_negative_float, default=diffusion_recipe.train.learning_rate,
                       help="peak AdamW learning rate (after warm-up, before the cosine decay)")
    train.add_argument("--num-images", type=positive_int, default=diffusion_recipe.num_train_images,
                       help="training images to generate")
    train.add_argument("--seed", type=int, default=diffusion_recipe.data_seed,
                       help="seed of the generated training images")
    train.add_argument("--guide-fraction", type=unit_fraction, default=diffusion_recipe.guide_fraction,
                       help="keep the EMA weights after this share of the steps as autoguidance's guide (0: none)")
    train.add_argument("--angle-conditioning", action="store_true",
                       help="also tell the DiT each training image's angle (a data set that records it: shapes); "
                            "sample --angle then chooses the orientation")
    train.add_argument("--canonical-frame", action=argparse.BooleanOptionalAction, default=None,
                       help="learn every shape upright and turn each sample to an angle drawn from the data's "
                            "(default: on for the shapes without --angle-conditioning, off otherwise)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    train.add_argument("--out", default="runs/latent", help="folder of the run's checkpoint.pt")
    add_device_option(train, "the model trains")
    add_precision_options(train, DiffusionRunConfig().train.mixed_precision)
    train.add_argument("--compile", action=argparse.BooleanOptionalAction, default=DiffusionRunConfig().train.compile,
                       help="torch.compile the training step (falls back to eager where the machine cannot compile) "
                            "(default: %(default)s)")

    classifier = commands.add_parser("train-classifier",
                                     help="train the evaluation classifier (real pixels) or the noisy one (guidance)")
    classifier.add_argument("--kind", choices=("evaluation", "noisy"), required=True,
                            help="evaluation: grades samples, trained on real pixels; noisy: p(y | z_t, t) for "
                                 "classifier guidance, trained on a diffusion run's noised latents")
    classifier.add_argument("--checkpoint", default="runs/latent/checkpoint.pt",
                            help="the diffusion run whose latents the noisy classifier learns (--kind noisy)")
    classifier.add_argument("--dataset", choices=sorted(GENERATORS), default=evaluation_recipe.dataset,
                            help="the images the evaluation classifier learns (--kind evaluation)")
    classifier.add_argument("--steps", type=positive_int,
                            help=f"training steps (default: {evaluation_recipe.train.steps} for --kind evaluation, "
                                 f"{noisy_steps} for --kind noisy)")
    add_device_option(classifier, "the classifier trains")
    classifier.add_argument("--quiet", action="store_true", help="no progress bar")
    classifier.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    classifier.add_argument("--out", required=True, help="folder of the run's checkpoint.pt")

    sample = commands.add_parser("sample", help="draw images for a prompt and save them as a grid")
    sample.add_argument("--checkpoint", type=existing_file, default="runs/latent/checkpoint.pt",
                        help="the diffusion run to sample")
    sample.add_argument("--prompt", help='a class name such as "red circle" (default: cycle through all classes)')
    sample.add_argument("--guidance", type=non_negative_float, default=3.0,
                        help="classifier-free guidance scale s (1 = the conditional model)")
    sample.add_argument("--rescale", type=unit_fraction, default=None,
                        help=f"guidance rescale φ in [0, 1] (default: {GUIDANCE_RESCALE:g} for classifier-free "
                             "guidance at s > 1, else 0)")
    sample.add_argument("--classifier", type=existing_file,
                        help="a noisy classifier checkpoint: use classifier guidance with scale --guidance instead "
                             "(default: none, classifier-free guidance)")
    sample.add_argument("--autoguidance", type=non_negative_float, default=None,
                        help="autoguidance scale w by the run's early snapshot (1 = off; default: "
                             f"{AUTOGUIDANCE_SCALE:g} for a run that kept one, else 1)")
    sample.add_argument("--angle", type=finite_float, default=None,
                        help="orientation in degrees, counter-clockwise, for a run trained with --angle-conditioning "
                             "or in the canonical frame (default: a random angle per image, as in the training data)")
    sample.add_argument("--num-samples", type=positive_int, default=16, help="images to draw")
    sample.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="the sampling algorithm")
    sample.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    sample.add_argument("--seed", type=int, default=0, help="seed of the starting noise (same seed, same images)")
    sample.add_argument("--vae", type=existing_file,
                        help="the VAE checkpoint, if it moved since training (default: the path stored in the run)")
    sample.add_argument("--out", default="grid.png", help="a .png grid (or .pt for the raw tensor)")
    add_device_option(sample, "the model samples (the same seed draws other images on another device)")

    evaluate = commands.add_parser("evaluate", help="accuracy and Fréchet distance over guidance scales")
    evaluate.add_argument("--checkpoint", type=existing_file, default="runs/latent/checkpoint.pt",
                          help="the diffusion run to evaluate")
    evaluate.add_argument("--classifier", default="runs/evaluation/checkpoint.pt",
                          help="the evaluation classifier (trained on real images)")
    evaluate.add_argument("--guidance-classifier", type=existing_file,
                          help="a noisy classifier: sweep classifier guidance instead of classifier-free "
                               "(default: none, classifier-free guidance)")
    evaluate.add_argument("--scales", type=_scales, default="0,1,3,5,7",
                          help="the guidance scales to sweep, comma-separated")
    evaluate.add_argument("--autoguidance", type=non_negative_float, default=None,
                          help="autoguidance scale w at every CFG scale (1 = off; default: "
                               f"{AUTOGUIDANCE_SCALE:g} for a run that kept a guide, else 1)")
    evaluate.add_argument("--rescale", type=unit_fraction, default=None,
                          help=f"guidance rescale φ in [0, 1] at every CFG scale (default: {GUIDANCE_RESCALE:g} at "
                               "s > 1, else 0, as the sampler draws)")
    evaluate.add_argument("--per-class", type=positive_int, default=12, help="samples drawn per class and scale")
    evaluate.add_argument("--steps", type=positive_int, default=50, help="DDIM steps per sample")
    evaluate.add_argument("--vae", type=existing_file,
                          help="also report this VAE's PSNR on held-out images (default: no VAE report)")
    add_device_option(evaluate, "the model samples (the graders stay on the CPU)")
    levers = commands.add_parser(
        "levers", help="train variants of the recipe for the same wall time and grade each (imagediff.levers)")
    levers.add_argument("variants", nargs="+",
                        help='"default", or field=value changes of the run configuration separated by spaces, e.g. '
                             '"train.batch_size=64 weighting=min_snr" (dit. and train. reach the nested configs)')
    levers.add_argument("--budget", type=positive_float, default=360.0, help="seconds of training per variant")
    levers.add_argument("--per-class", type=positive_int, default=6, help="samples graded per class")
    levers.add_argument("--out", default="runs/levers",
                        help="output folder: levers.json, levers.md, levers.png, one folder per variant "
                             "(the VAE and the grader in it are reused)")
    demo = commands.add_parser("demo", help="train the VAE and the latent DiT, write sample grids (make demo)")
    demo.add_argument("--out", default="runs/demo/images", help="output folder of the figures")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def command_train_vae(args) -> None:
    config = VAERunConfig(dataset=args.dataset, data_seed=args.seed, num_train_images=args.num_images)
    channels = make_dataset(args.dataset, 1).images.shape[1]
    config.vae = vae_config(args.size, image_channels=channels, kl_weight=args.kl_weight)
    config.train.steps, config.train.batch_size = args.steps, args.batch_size
    config.train.device = args.device
    config.train.progress = not args.quiet
    run = train_vae(config, out_dir=args.out, resume=not args.fresh, on_log=print_log_entry)
    print(f"trained the VAE in {run.seconds:.0f} s; latent scale {float(run.vae.latent_scale):.4f} "
          f"(measured); checkpoint {Path(args.out) / 'checkpoint.pt'}")


def command_train(args) -> None:
    dit = dit_config(args.dit_size, **({"patch_size": args.patch_size} if args.patch_size else {}),
                     angle_conditioning=args.angle_conditioning)
    config = DiffusionRunConfig(dataset=args.dataset, space=args.space, vae_checkpoint=args.vae, data_seed=args.seed,
                                num_train_images=args.num_images, guide_fraction=args.guide_fraction,
                                canonical_frame=args.canonical_frame, dit=dit)
    config.train.steps, config.train.batch_size = args.steps, args.batch_size
    config.train.learning_rate = args.learning_rate
    config.train.device = args.device
    config.train.mixed_precision = args.precision
    config.train.compile = args.compile
    config.train.progress = not args.quiet
    run = train_image_diffusion(config, out_dir=args.out, resume=not args.fresh, on_log=print_log_entry)
    print(f"trained the {args.space} DiT in {run.seconds:.0f} s; checkpoint {Path(args.out) / 'checkpoint.pt'}")


def command_train_classifier(args) -> None:
    if args.kind == "evaluation":
        config = EvaluationRunConfig(dataset=args.dataset)
        if args.steps:
            config.train.steps = args.steps
        config.train.progress, config.train.device = not args.quiet, args.device
        train_evaluation_classifier(config, out_dir=args.out, resume=not args.fresh, on_log=print_log_entry)
    else:
        run = load_image_diffusion(args.checkpoint)
        config = NoisyClassifierRunConfig()
        if args.steps:
            config.train.steps = args.steps
        config.train.progress, config.train.device = not args.quiet, args.device
        train_noisy_classifier(run, config, out_dir=args.out, resume=not args.fresh, on_log=print_log_entry)
    print(f"checkpoint {Path(args.out) / 'checkpoint.pt'}")


def command_sample(args) -> None:
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pt"):
        raise UsageError(f"--out must end in .png (an image grid) or .pt (the tensor), got {args.out}")
    device = pick_device(args.device)
    run = load_image_diffusion(args.checkpoint, device=device, vae_checkpoint=args.vae)
    if args.prompt is not None:
        labels = [run.class_index(args.prompt)] * args.num_samples
    else:
        labels = [i % len(run.class_names) for i in range(args.num_samples)]
    classifier = load_noisy_classifier(args.classifier, device=device, run=run) if args.classifier else None
    guide_scale = _guide_scale(args.autoguidance, run, classifier)
    if args.angle is not None and run.angle_range is None:
        raise UsageError(f"--angle {args.angle:g}: this run was trained neither with --angle-conditioning nor in the "
                         "canonical frame, so it cannot be given an orientation")
    angles = math.radians(args.angle) if args.angle is not None else None
    images = run.sample(labels=labels, guidance_scale=args.guidance, classifier=classifier, rescale=args.rescale,
                        guide_scale=guide_scale, sampler=args.sampler, num_steps=args.steps, seed=args.seed,
                        angles=angles)
    if out.suffix.lower() == ".pt":
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "labels": torch.tensor(labels)}, out)
    else:
        kind = "classifier guidance" if classifier is not None else "CFG"
        title = f"{args.prompt or 'all classes'}, {kind} s = {args.guidance:g}" + (
            f", autoguidance w = {guide_scale:g}" if guide_scale != 1 else "")
        save_image_grid(images, out, columns=min(8, len(labels)), title=title)
    print(f"wrote {len(labels)} images to {out}")


def _guide_scale(asked: Optional[float], run, classifier) -> float:
    """--autoguidance: the run's default when not given (1 under classifier guidance); checked against the run."""
    if asked is None and classifier is not None:
        return 1.0
    scale = autoguidance_scale(asked, run)
    if scale != 1 and classifier is not None:
        raise UsageError("--autoguidance applies to classifier-free guidance, not with a noisy classifier")
    return scale


def command_evaluate(args) -> None:
    device = pick_device(args.device)
    run = load_image_diffusion(args.checkpoint, device=device)
    if not Path(args.classifier).exists():
        raise UsageError(f"no evaluation classifier at {args.classifier}: train one with "
                         f"python -m imagediff train-classifier --kind evaluation --out {Path(args.classifier).parent}")
    samples_per_scale = args.per_class * len(run.class_names)
    grader = Grader.build(load_evaluation_classifier(args.classifier), dataset=run.config.dataset,
                          num_images=samples_per_scale, image_size=run.config.image_size,
                          **run.config.dataset_options)
    guide = (load_noisy_classifier(args.guidance_classifier, device=device, run=run) if args.guidance_classifier
             else None)
    guide_scale = _guide_scale(args.autoguidance, run, guide)
    if args.rescale and guide is not None:
        raise UsageError("--rescale applies to classifier-free guidance, not with --guidance-classifier")
    rows = guidance_sweep(run, grader, args.scales, per_class=args.per_class, classifier=guide, num_steps=args.steps,
                          guide_scale=guide_scale, rescale=args.rescale)
    title = "classifier scale" if guide is not None else "CFG scale"
    if guide_scale != 1:
        print(f"every row with autoguidance w = {guide_scale:g} (the run's early snapshot as the guide)")
    if guide is None:
        print("guidance rescale: " + (f"φ = {args.rescale:g} at every scale" if args.rescale is not None else
                                      f"φ = {GUIDANCE_RESCALE:g} at s > 1 (the sampler's default), none at s <= 1"))
    print(format_sweep(rows, grader.reference, title))
    if args.vae is not None:
        vae = load_vae(args.vae).vae
        held_out = make_dataset(run.config.dataset, 1000, seed=300).images
        print("VAE reconstruction PSNR on 1000 held-out images:",
              summarise_psnr(psnr(decode_latents(vae, encode_images(vae, held_out)), held_out)))


def command_levers(args) -> None:
    if not torch.cuda.is_available():
        torch.set_num_threads(min(2, os.cpu_count() or 1))  # the budget is stated for 2 cores
    run_levers(args.variants, args.budget, Path(args.out), per_class=args.per_class)


def command_demo(args) -> None:
    from imagediff.demo import run_demo

    run_demo(Path(args.out), progress=not args.quiet)


COMMANDS = {"demo": command_demo, "levers": command_levers, "train-vae": command_train_vae, "train": command_train, "train-classifier": command_train_classifier,
            "sample": command_sample, "evaluate": command_evaluate}


def main(argv=None) -> int:
    return run_cli("imagediff", build_parser(), COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
