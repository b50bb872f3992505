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
    """Scores samples against held-out real images, with reference values computed at the same size.

    The Fréchet distance is biased upwards for small sets, so a distance is only comparable with one
    computed from as many images: ``score`` compares N samples with the first N real images, and
    reports next to it the distance between the first N of two independent real sets.
    """

    classifier: EvaluationClassifier
    real_features: torch.Tensor          # (M, feature_dim) of held-out real images
    second_features: torch.Tensor        # (M, feature_dim) of another held-out set
    real_accuracy: float                 # the classifier's accuracy on the first set: the ceiling

    @classmethod
    def build(cls, classifier: EvaluationClassifier, dataset: str = "shapes", num_images: int = 1000,
              image_size: int = 32, **dataset_options) -> "Grader":
        """Featurise two held-out sets of ``num_images`` real images (the most ``score`` can compare)."""
        first = make_dataset(dataset, num_images, seed=REFERENCE_SEEDS[0], image_size=image_size, **dataset_options)
        second = make_dataset(dataset, num_images, seed=REFERENCE_SEEDS[1], image_size=image_size, **dataset_options)
        if classifier.config.num_classes != first.num_classes or classifier.config.image_size != image_size:
            raise ValueError(f"the evaluation classifier grades {classifier.config.num_classes} classes of "
                             f"{classifier.config.image_size}px images, but the {dataset} data asked for has "
                             f"{first.num_classes} classes of {image_size}px: train a grader on that data")
        logits, features = classifier.predict(first.images)
        _, second_features = classifier.predict(second.images)
        return cls(classifier, features, second_features, accuracy(logits, first.labels))

    @property
    def num_images(self) -> int:
        return self.real_features.shape[0]

    def reference_at(self, count: int) -> dict:
        """What real images score with ``count`` images: accuracy, and the Fréchet distance between two
        independent real sets of that size (the floor that finite samples alone give)."""
        if not 2 <= count <= self.num_images:
            raise ValueError(f"the grader holds {self.num_images} real images; it can compare 2..{self.num_images} "
                             f"samples, got {count}: build it with num_images >= {count}")
        return {"accuracy": self.real_accuracy,
                "frechet_distance": frechet_distance(self.second_features[:count], self.real_features[:count])}

    @property
    def reference(self) -> dict:
        return self.reference_at(self.num_images)

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """images (N, C, H, W) in [-1, 1] (clamped here, as a saved image would be); labels (N,) asked for.

        Returns accuracy, the Fréchet distance to N real images, and real_frechet_distance: the same
        distance between two real sets of N images.
        """
        count = images.shape[0]
        reference = self.reference_at(count)
        logits, features = self.classifier.predict(images.clamp(-1, 1))
        return {"accuracy": accuracy(logits, labels),
                "frechet_distance": frechet_distance(features, self.real_features[:count]),
                "real_frechet_distance": reference["frechet_distance"]}


def guidance_sweep(run, grader: Grader, scales: Sequence[float] = (0, 1, 3, 5, 7), per_class: int = 12,
                   classifier=None, rescale: Optional[float] = None, num_steps: int = 50, seed: int = 0,
                   guide_scale: float = 1.0) -> list[dict]:
    """Accuracy and Fréchet distance of ``run``'s samples at each guidance scale.

    run: an ImageDiffusionModel. classifier: a NoisyLatentClassifier for classifier guidance (the
    scale is then the classifier-guidance scale); None: classifier-free guidance. guide_scale: the
    autoguidance scale added at every row (1: none). rescale: guidance rescale φ at every row; None, the
    sampler's default at each scale (imagediff.pipeline.default_rescale).
    The same seeds at every scale, so the rows differ only by the guidance.
    Returns one dict per scale: scale, accuracy, frechet_distance, seconds (sampling wall time).
    """
    labels = balanced_request(len(run.class_names), per_class)
    rows = []
    for scale in scales:
        started = time.perf_counter()
        images = run.sample(labels=labels, guidance_scale=scale, classifier=classifier, rescale=rescale,
                            guide_scale=guide_scale, num_steps=num_steps, seed=seed)
        seconds = time.perf_counter() - started
        rows.append({"scale": float(scale), "guide_scale": float(guide_scale), **grader.score(images, labels),
                     "seconds": seconds})
    return rows


def format_sweep(rows: list[dict], reference: Optional[dict] = None, title: str = "guidance scale") -> str:
    """A table of a sweep; each Fréchet distance is shown next to real images' at the same size."""
    lines = [f"{title:>18} | accuracy | Fréchet distance (real images, same N)"]
    for row in rows:
        real = row.get("real_frechet_distance")
        lines.append(f"{row['scale']:>18g} | {row['accuracy']:8.3f} | {row['frechet_distance']:10.2f}"
                     + (f" ({real:.2f})" if real is not None else ""))
    if reference is not None:
        lines.append(f"{'real images':>18} | {reference['accuracy']:8.3f} |")
    return "\n".join(lines)
