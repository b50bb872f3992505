"""Grading generated images against real ones: accuracy, Fréchet distance, and their reference values.

    grader = Grader.build(classifier, dataset="shapes", num_images=1000)
    grader.reference          # {"accuracy": ..., "frechet_distance": ...} of held-out real images
    grader.score(images, labels)
    sweep = guidance_sweep(run, grader, scales=(0, 1, 3, 5, 7))

Every number is reported next to what real images score the same way: the classifier's accuracy on
held-out real images (the best a generator can hope for) and the Fréchet distance between two
independent sets of real images of the same size (the floor that sampling noise alone gives).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from imagediff.classifier import EvaluationClassifier
from imagediff.data import make_dataset
from imagediff.metrics import accuracy, frechet_distance

# Held-out real images come from seeds that neither the diffusion model (0) nor the grader (100) saw.
REFERENCE_SEEDS = (200, 201)


def balanced_request(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels 0, 0, …, 1, 1, …: ``per_class`` of each class, (num_classes * per_class,) int64."""
    return torch.arange(num_classes).repeat_interleave(per_class)


@dataclass
class Grader:
    classifier: EvaluationClassifier
    reference_features: torch.Tensor     # (N, feature_dim) of held-out real images
    reference: dict                      # what real images score: accuracy, frechet_distance

    @classmethod
    def build(cls, classifier: EvaluationClassifier, dataset: str = "shapes", num_images: int = 1000,
              image_size: int = 32, **dataset_options) -> "Grader":
        """Score two held-out sets of ``num_images`` real images: the reference values."""
        first = make_dataset(dataset, num_images, seed=REFERENCE_SEEDS[0], image_size=image_size, **dataset_options)
        second = make_dataset(dataset, num_images, seed=REFERENCE_SEEDS[1], image_size=image_size, **dataset_options)
        logits, features = classifier.predict(first.images)
        _, second_features = classifier.predict(second.images)
        reference = {"accuracy": accuracy(logits, first.labels),
                     "frechet_distance": frechet_distance(second_features, features)}
        return cls(classifier, features, reference)

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """images (N, C, H, W) in [-1, 1] (clamped here, as a saved image would be); labels (N,) asked for."""
        logits, features = self.classifier.predict(images.clamp(-1, 1))
        return {"accuracy": accuracy(logits, labels), "frechet_distance": frechet_distance(features,
                                                                                            self.reference_features)}


def guidance_sweep(run, grader: Grader, scales: Sequence[float] = (0, 1, 3, 5, 7), per_class: int = 12,
                   classifier=None, rescale: float = 0.0, num_steps: int = 50, seed: int = 0) -> list[dict]:
    """Accuracy and Fréchet distance of ``run``'s samples at each guidance scale.

    run: an ImageDiffusionModel. classifier: a NoisyLatentClassifier for classifier guidance (the
    scale is then the classifier-guidance scale); None: classifier-free guidance.
    The same seeds at every scale, so the rows differ only by the guidance.
    Returns one dict per scale: scale, accuracy, frechet_distance, seconds (sampling wall time).
    """
    labels = balanced_request(len(run.class_names), per_class)
    rows = []
    for scale in scales:
        started = time.perf_counter()
        images = run.sample(labels=labels, guidance_scale=scale, classifier=classifier, rescale=rescale,
                            num_steps=num_steps, seed=seed)
        seconds = time.perf_counter() - started
        rows.append({"scale": float(scale), **grader.score(images, labels), "seconds": seconds})
    return rows


def format_sweep(rows: list[dict], reference: Optional[dict] = None, title: str = "guidance scale") -> str:
    lines = [f"{title:>16} | accuracy | Fréchet distance"]
    for row in rows:
        lines.append(f"{row['scale']:>16g} | {row['accuracy']:8.3f} | {row['frechet_distance']:10.2f}")
    if reference is not None:
        lines.append(f"{'real images':>16} | {reference['accuracy']:8.3f} | {reference['frechet_distance']:10.2f}")
    return "\n".join(lines)
