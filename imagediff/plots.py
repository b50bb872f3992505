"""Figures of images: sample grids, reconstructions next to originals, latent channels, curves.

Every function takes tensors in the model's range [-1, 1] and writes a PNG; none of them computes
anything a reader would need to learn diffusion from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def image_grid(images: torch.Tensor, columns: int = 8, padding: int = 1) -> np.ndarray:
    """Tile images (N, C, H, W) in [-1, 1] into one (rows·(H+p), columns·(W+p), 3) array in [0, 1].

    Single-channel images are shown in grey; values outside [-1, 1] are clamped for display only.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid expects images (N, 1 or 3, H, W), got {tuple(images.shape)}")
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) / 2)  # (N, C, H, W) in [0, 1]
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    count, _, height, width = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    grid = np.ones((rows * (height + padding) + padding, columns * (width + padding) + padding, 3), dtype=np.float32)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[top:top + height, left:left + width] = images[index].permute(1, 2, 0).numpy()
    return grid


def columns_per_class_grid(class_names) -> int:
    """Columns for a grid of one image per class. The shapes classes ("red circle", …) run shape-major,
    colour-minor, so one column per colour puts one shape on each row; other data sets get 8."""
    if all(len(name.split()) == 2 for name in class_names):
        return len({name.split()[0] for name in class_names})
    return 8


def save_image_grid(images: torch.Tensor, path, columns: int = 8, title: Optional[str] = None,
                    scale: float = 0.35) -> Path:
    """Write a grid of images (N, C, H, W) in [-1, 1] as a PNG, with an optional title."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, columns)
    height, width = grid.shape[:2]
    figure = plt.figure(figsize=(max(2.0, width * scale / 10), max(2.0, height * scale / 10 + (0.4 if title else 0))))
    axis = figure.add_axes([0, 0, 1, 0.92 if title else 1])
    axis.imshow(grid, interpolation="nearest")
    axis.axis("off")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_labelled_rows(rows: Sequence[torch.Tensor], row_titles: Sequence[str], path, title: str = "") -> Path:
    """One row of images per entry of ``rows`` (each (n, C, H, W)), each titled on its left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows) + 0.5), squeeze=False)
    for axis, images, row_title in zip(axes[:, 0], rows, row_titles):
        axis.imshow(image_grid(images, columns=images.shape[0]), interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(row_title, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_curves(curves: dict, path, xlabel: str, ylabel: str, title: str, reference: Optional[float] = None,
                reference_label: str = "real images", logy: bool = False) -> Path:
    """Line plot of named curves {name: (xs, ys)}, with an optional horizontal reference line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    for name, (xs, ys) in curves.items():
        axis.plot(xs, ys, marker="o", markersize=3, label=name)
    if reference is not None:
        axis.axhline(reference, color="grey", linestyle="--", linewidth=1, label=reference_label)
    if logy:
        axis.set_yscale("log")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
