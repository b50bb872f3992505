"""The one return type of every image data set, and the one error every loader raises.

Whatever produced the images (a generator of shapes or digits, a folder of files, MNIST-format IDX
files), the rest of imagediff receives an ``ImageDataset``:

    images       (N, C, H, W) float32 in [-1, 1]
    labels       (N,) int64, each an index into class_names
    class_names  list of N_classes readable, unique names ("red circle", "7", "cat")
    angles       (N,) float32 radians, or None: the orientation a generator drew each image at, when
                 it knows it (the shapes do). A model can be told it in training and be given one at
                 sampling time (DiTConfig.angle_conditioning; docs/image_levers.md).

Why [-1, 1] and not [0, 1]: the forward process mixes x_0 with unit-variance noise,
x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) eps, and a signal centred on zero with a spread comparable to
the noise's is what the schedules are designed for (Ho et al. 2020, section 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Optional

import torch


class DataError(ValueError):
    """A data source is missing, empty or malformed, or a class name is unknown.

    The message names the path (or the name) and says what was expected instead.
    """


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """Map intensities in [0, 1] to the [-1, 1] range the models use; any shape in, same shape out."""
    return images * 2 - 1


def check_generation_request(num_samples: int, image_size: int) -> None:
    """Refuse sizes a generator cannot honour, before any work is done."""
    # bool is an Integral too, but make_dataset(..., True) is surely a mistake.
    if isinstance(num_samples, bool) or not isinstance(num_samples, Integral) or num_samples < 1:
        raise DataError(f"num_samples must be a positive integer, got {num_samples!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 8:
        raise DataError(f"image_size must be an integer of at least 8 pixels, got {image_size!r}")


def balanced_labels(num_samples: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Labels (num_samples,) int64 in which every class appears equally often, in a random order.

    The class counts differ by at most one (when num_classes does not divide num_samples), so a
    data set of at least num_classes samples contains every class.
    """
    labels = torch.arange(num_samples) % num_classes  # (N,) 0, 1, ..., K-1, 0, 1, ...
    return labels[torch.randperm(num_samples, generator=generator)]


@dataclass
class ImageDataset:
    """Images with their class labels and the names of the classes.

    images: (N, C, H, W) float32 in [-1, 1]; labels: (N,) int64 in [0, len(class_names));
    angles: (N,) float32 radians each image was drawn at, or None where the source does not know them.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    angles: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.float32:
            raise DataError(
                f"ImageDataset.images must be a float32 tensor of shape (N, C, H, W), "
                f"got {self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.ndim != 1 or self.labels.dtype != torch.int64:
            raise DataError(
                f"ImageDataset.labels must be an int64 tensor of shape (N,), "
                f"got {self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise DataError(f"label count {len(self.labels)} does not match image count {len(self.images)}")
        if self.angles is not None and (self.angles.dtype != torch.float32 or self.angles.shape != self.labels.shape):
            raise DataError(
                f"ImageDataset.angles must be None or a float32 tensor of shape ({len(self.labels)},) "
                f"(radians, one per image), got {self.angles.dtype} of shape {tuple(self.angles.shape)}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise DataError(f"class names must be unique, got {self.class_names}")
        if len(self.labels) > 0 and not 0 <= self.labels.min() <= self.labels.max() < self.num_classes:
            raise DataError(
                f"labels run from {int(self.labels.min())} to {int(self.labels.max())}, but there are "
                f"{self.num_classes} class names: expected labels in [0, {self.num_classes})"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_index(self, name: str) -> int:
        """The label of the class called ``name``, e.g. ``class_index("red circle")``."""
        if name not in self.class_names:
            known = ", ".join(map(repr, self.class_names))
            raise DataError(f"unknown class name {name!r}: expected one of {known}")
        return self.class_names.index(name)

    def images_of_class(self, name: str) -> torch.Tensor:
        """All images (M, C, H, W) of the class called ``name``."""
        return self.images[self.labels == self.class_index(name)]
