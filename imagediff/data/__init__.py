"""Image data for imagediff: generated offline and seeded, or read from your own files.

Every source returns an ImageDataset: images (N, C, H, W) float32 in [-1, 1], labels (N,) int64 and
the class names that the labels index.

    shapes = make_dataset("shapes", 20_000, seed=0)    # 42 classes: "red circle", ..., "magenta star"
    digits = make_dataset("glyphs", 20_000, seed=0)    # 10 classes: "0", ..., "9"; 1 channel
    mine = load_image_folder("photos/", image_size=32) # one sub-folder per class
    mnist = load_idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")

    label = shapes.class_index("red circle")           # a prompt becomes a label

Where each piece lives: dataset.py (the return type and the error), shapes.py and glyphs.py (the
generated sets), image_folder.py and idx.py (your own data).
"""

from __future__ import annotations

from typing import Callable

from imagediff.data.dataset import DataError, ImageDataset
from imagediff.data.glyphs import make_glyphs
from imagediff.data.idx import load_idx
from imagediff.data.image_folder import load_image_folder
from imagediff.data.shapes import make_shapes

# The generated data sets by name; each takes (num_samples, seed, image_size, **options).
GENERATORS: dict[str, Callable[..., ImageDataset]] = {
    "shapes": make_shapes,  # options: shapes, colours, rotate, num_angles
    "glyphs": make_glyphs,  # options: channels
}


def make_dataset(name: str, num_samples: int, seed: int = 0, image_size: int = 32, **options) -> ImageDataset:
    """Generate ``num_samples`` images of the data set ``name`` ("shapes" or "glyphs").

    Returns an ImageDataset with images (N, C, image_size, image_size) in [-1, 1] and balanced
    labels (N,). The same seed gives identical tensors; a different seed gives different images.
    ``options`` go to the generator (make_shapes or make_glyphs).
    """
    if name not in GENERATORS:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(map(repr, GENERATORS))}")
    return GENERATORS[name](num_samples, seed=seed, image_size=image_size, **options)


__all__ = [
    "DataError", "GENERATORS", "ImageDataset", "load_idx", "load_image_folder", "make_dataset", "make_glyphs",
    "make_shapes",
]
