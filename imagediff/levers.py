"""Which changes to the recipe buy shape per second: variants trained for the same wall time.

    python -m imagediff levers --budget 360 --out runs/levers default weighting=min_snr \\
        train.batch_size=64 "space=pixel dit.patch_size=4"

A variant is the default DiffusionRunConfig with some fields changed, each written ``field=value``
(``dit.`` and ``train.`` reach into the nested configs), several separated by spaces in one argument;
``default`` changes nothing. Every variant trains the same DiT recipe on the same VAE latents (or on
pixels) for ``--budget`` seconds of training — the step count is what fits, timed on this machine
before the run — and is graded halfway and at the end by the evaluation classifier at CFG s = 3:
accuracy over all classes, accuracy per shape, which shape the classifier saw instead, and the
Fréchet distance. Equal time, not equal steps, because a lever that makes each step better but
slower (more tokens, a wider model) only wins if it wins per second.

Writes OUT/levers.json (one row per variant, appended as each finishes, so a long table survives a
stop), OUT/levers.md (the table), OUT/levers.png (accuracy against training seconds) and
OUT/<variant>/ (its checkpoint and a grid of one sample per class).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Optional

import torch

from imagediff.bench import dit_training_rate
from imagediff.classifier import EvaluationRunConfig, evaluation_classifier
from imagediff.evaluation import Grader, balanced_request
from imagediff.pipeline import (
    DiffusionRunConfig, VAERunConfig, diffusion_training_set, load_vae, train_image_diffusion, train_vae,
)
from imagediff.plots import columns_per_class_grid, save_curves, save_image_grid
from toydiff.losses import DiffusionObjective
from toydiff.schedules import make_schedule

GUIDANCE_SCALE = 3.0


class LeverError(ValueError):
    """A variant that names a field the run's configuration does not have, or a value of the wrong type."""


def _parse_value(text: str, current, where: str):
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise LeverError(f"{where} is true or false, got {text!r}")
        return text.lower() in ("true", "1")
    for kind in (int, float):
        if isinstance(current, kind):
            try:
                return kind(text)
            except ValueError:
                raise LeverError(f"{where} is a number ({kind.__name__}), got {text!r}") from None
    if isinstance(current, dict):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise LeverError(f'{where} is a JSON object without spaces, e.g. {{"rotate":false}}, got {text!r}')
        return value
    if isinstance(current, tuple):
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            raise LeverError(f"{where} is a comma-separated list of integers, got {text!r}") from None
    return text


def apply_variant(config: DiffusionRunConfig, variant: str) -> DiffusionRunConfig:
    """A copy of ``config`` with the changes of ``variant`` ("default", or "field=value field=value")."""
    config = replace(config, dit=replace(config.dit), train=replace(config.train))
    if variant.strip() == "default":
        return config
    for change in variant.split():
        if change.count("=") != 1:
            raise LeverError(f"a change is written field=value (e.g. train.batch_size=64), got {change!r}")
        path, text = change.split("=")
        owner, name = config, path
        if "." in path:
            section, name = path.split(".", 1)
            if section not in ("dit", "train"):
                raise LeverError(f"{path!r}: only dit.<field> and train.<field> are nested, not {section!r}")
            owner = getattr(config, section)
        known = {f.name for f in dataclasses.fields(owner)}
        if name not in known:
            raise LeverError(f"{path!r} is not a field of {type(owner).__name__}; its fields are {', '.join(sorted(known))}")
        value = _parse_value(text, getattr(owner, name), path)
        try:
            updated = replace(owner, **{name: value})
        except (ValueError, TypeError) as error:  # the config's own check, e.g. a patch size that does not divide
            raise LeverError(f"{change}: {error}") from None
        try:
            config = updated if owner is config else replace(config, **{path.split(".")[0]: updated})
        except (ValueError, TypeError) as error:  # a check across fields, e.g. two options that exclude each other
            raise LeverError(f"{change}: {error}") from None
    return config


def check_variant(base: DiffusionRunConfig, variant: str) -> DiffusionRunConfig:
    """The variant's config, with its schedule, prediction type, weighting and timestep sampling checked (they are only
    read when training starts, which would be after the VAE and the grader have trained)."""
    config = apply_variant(base, variant)
    try:
        DiffusionObjective(make_schedule(config.schedule, config.num_timesteps), config.prediction_type,
                           config.weighting, timestep_sampling=config.timestep_sampling,
                           logit_mean=config.logit_mean, logit_std=config.logit_std)
    except ValueError as error:
        raise LeverError(f"variant {variant!r}: {error}") from None
    return config


def variant_slug(variant: str) -> str:
    """A folder name for a variant: "train.batch_size=64 weighting=min_snr" -> "batch_size64_weightingmin_snr"."""
    parts = []
    for change in variant.split():
        path, _, value = change.partition("=")
        parts.append(re.sub(r"[^A-Za-z0-9_.-]", "", path.split(".")[-1] + value))
    return "_".join(parts) or "default"


class ShapeGrade:
    """The ``evaluate`` hook: accuracy at CFG s = 3, per shape, what each shape was taken for, Fréchet distance."""

    def __init__(self, grader: Grader, per_class: int, num_steps: int):
        self.grader, self.per_class, self.num_steps = grader, per_class, num_steps

    def __call__(self, run, step) -> dict:
        labels = balanced_request(len(run.class_names), self.per_class)
        # Plain guidance (no rescale), as every lever table in docs/image_levers.md was measured.
        images = run.sample(labels=labels, guidance_scale=GUIDANCE_SCALE, rescale=0.0, num_steps=self.num_steps,
                            seed=1)
        score = self.grader.score(images, labels)
        predicted = self.grader.classifier.predict(images.clamp(-1, 1))[0].argmax(dim=1)  # (N,)
        score.update(grade_by_shape(run.class_names, labels, predicted))
        return score


def grade_by_shape(class_names, labels: torch.Tensor, predicted: torch.Tensor) -> dict:
    """Accuracy per shape, colour accuracy, and a shape confusion {asked: {seen: count}} for names "<colour> <shape>"."""
    shapes = list(dict.fromkeys(name.split()[-1] for name in class_names))
    colours = list(dict.fromkeys(name.split()[0] for name in class_names))
    shape_of = torch.tensor([shapes.index(name.split()[-1]) for name in class_names])
    colour_of = torch.tensor([colours.index(name.split()[0]) for name in class_names])
    asked, seen = shape_of[labels], shape_of[predicted]
    per_shape = {shape: (predicted[asked == k] == labels[asked == k]).float().mean().item()
                 for k, shape in enumerate(shapes) if (asked == k).any()}
    confusion = {shape: {other: int(((asked == k) & (seen == j)).sum()) for j, other in enumerate(shapes)}
                 for k, shape in enumerate(shapes)}
    return {"per_shape_accuracy": per_shape, "shape_confusion": confusion,
            "colour_accuracy": (colour_of[predicted] == colour_of[labels]).float().mean().item()}


def run_variant(variant: str, base: DiffusionRunConfig, budget_seconds: float, vae, grader: Grader, out: Path,
                per_class: int = 6, num_steps: int = 25) -> dict:
    """Train one variant for ``budget_seconds`` of training and grade it; returns its row of the table."""
    config = apply_variant(base, variant)
    samples, data = diffusion_training_set(config, vae if config.space == "latent" else None)
    # The bench's own timing of full training steps (forward, backward, AdamW), median of 5, compiled if the
    # variant trains compiled.
    step_seconds = dit_training_rate(config, tuple(samples.shape[1:]), data.num_classes, repeats=5)["step_seconds"]
    steps = max(4, int(budget_seconds / step_seconds) // 4 * 4)
    config.train = replace(config.train, steps=steps, log_every=steps // 4, checkpoint_every=0, progress=False,
                           warmup_steps=min(config.train.warmup_steps, steps // 10))
    folder = out / variant_slug(variant)
    run = train_image_diffusion(config, out_dir=folder, resume=False, vae=vae if config.space == "latent" else None,
                                evaluate=ShapeGrade(grader, per_class, num_steps), evaluate_every=steps // 2)
    graded = [h for h in run.history if "evaluation" in h]
    last = graded[-1]["evaluation"]
    save_image_grid(run.sample(labels=balanced_request(len(run.class_names), 1), guidance_scale=GUIDANCE_SCALE,
                               num_steps=num_steps, seed=2),
                    folder / "samples.png", columns=columns_per_class_grid(run.class_names),
                    title=f"{variant}: one sample per class, CFG s = {GUIDANCE_SCALE:g}")
    return {"variant": variant, "seconds_per_step": step_seconds, "steps": steps, "train_seconds": run.seconds,
            "curve": [{"step": h["step"], "train_seconds": h["seconds"], "accuracy": h["evaluation"]["accuracy"],
                       "frechet_distance": h["evaluation"]["frechet_distance"]} for h in graded],
            "accuracy": last["accuracy"], "frechet_distance": last["frechet_distance"],
            "real_frechet_distance": last["real_frechet_distance"], "colour_accuracy": last["colour_accuracy"],
            "per_shape_accuracy": last["per_shape_accuracy"], "shape_confusion": last["shape_confusion"],
            "final_loss": run.history[-1]["loss"], "samples": str(folder / "samples.png")}


def format_table(rows: list[dict], budget_seconds: float) -> str:
    """The lever table in Markdown: one row per variant, accuracy per shape in the last columns."""
    shapes = list(rows[0]["per_shape_accuracy"]) if rows else []
    header = ["variant", "s/step", "steps", "training s", "accuracy (s=3)", "Fréchet", *shapes]
    lines = [f"Training budget {budget_seconds:g} s per variant (the steps are what a timing before the run said would "
             "fit; 'training s' is what they took); accuracy of the evaluation classifier at CFG s = 3.",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['variant']}`", f"{row['seconds_per_step']:.3f}", str(row["steps"]), f"{row['train_seconds']:.0f}",
                 f"{row['accuracy']:.3f}",
                 f"{row['frechet_distance']:.0f}", *(f"{row['per_shape_accuracy'][s]:.2f}" for s in shapes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_levers(variants: list[str], budget_seconds: float, out: Path, base: Optional[DiffusionRunConfig] = None,
               per_class: int = 6, num_steps: int = 25, vae_config: Optional[VAERunConfig] = None,
               grader_config: Optional[EvaluationRunConfig] = None) -> list[dict]:
    """Train and grade every variant (after checking them all: a typo fails before any training)."""
    base = base or DiffusionRunConfig()
    for variant in variants:
        check_variant(base, variant)
    out.mkdir(parents=True, exist_ok=True)
    vae_config = vae_config or VAERunConfig(image_size=base.image_size, dataset_options=base.dataset_options)
    vae_config.train.progress = False
    vae_path = out / "vae" / "checkpoint.pt"
    base = replace(base, vae_checkpoint=str(vae_path))  # so that each variant's checkpoint loads on its own
    vae = load_vae(vae_path).vae if vae_path.exists() else train_vae(vae_config, out_dir=vae_path.parent).vae
    grader_config = grader_config or EvaluationRunConfig(image_size=base.image_size, dataset_options=base.dataset_options)
    grader_config.train.progress = False
    grader_net = evaluation_classifier(out / "evaluation" / "checkpoint.pt", grader_config)
    num_classes = grader_net.config.num_classes
    grader = Grader.build(grader_net, num_images=num_classes * per_class, image_size=base.image_size,
                          **base.dataset_options)
    table = out / "levers.json"
    rows = json.loads(table.read_text()) if table.exists() else []
    for variant in variants:
        row = run_variant(variant, base, budget_seconds, vae, grader, out, per_class, num_steps)
        row["budget_seconds"] = budget_seconds
        rows = [r for r in rows if r["variant"] != variant or r["budget_seconds"] != budget_seconds] + [row]
        table.write_text(json.dumps(rows, indent=2))
        print(f"{variant}: {row['steps']} steps, accuracy {row['accuracy']:.3f}, Fréchet {row['frechet_distance']:.0f}, "
              f"per shape {', '.join(f'{k} {v:.2f}' for k, v in row['per_shape_accuracy'].items())}", flush=True)
    same_budget = [r for r in rows if r["budget_seconds"] == budget_seconds]
    (out / "levers.md").write_text(format_table(same_budget, budget_seconds) + "\n")
    save_curves({r["variant"]: ([p["train_seconds"] for p in r["curve"]], [p["accuracy"] for p in r["curve"]])
                 for r in same_budget}, out / "levers.png", "training time (s)", f"accuracy at CFG s = {GUIDANCE_SCALE:g}",
                f"Levers at equal wall time ({budget_seconds:g} s each)", reference=grader.reference["accuracy"])
    return rows
