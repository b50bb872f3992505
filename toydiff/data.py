"""Two-dimensional point clouds to learn: the spiral (the default) and five classics.

Every data set is generated, seeded and labelled; nothing is read from disk or downloaded.
Points are *standardised*: each coordinate is shifted and scaled by the mean and standard deviation of
a large fixed reference draw of the same data set, so every fresh draw lives in the same coordinates
and metrics on different data sets are comparable.

    points, labels = make_dataset("spiral", 4000, seed=1)     # (4000, 2) float32, (4000,) int64
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch


@dataclass(frozen=True)
class PointDataset:
    """How to draw one data set: a raw generator and the names of its classes."""

    name: str
    draw: Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
    class_names: tuple[str, ...]
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ----------------------------------------------------------------------------------------------
# Raw generators: (n, rng) -> (points (n, 2) float64, labels (n,) int64)
# ----------------------------------------------------------------------------------------------

SPIRAL_ARMS = 3


def _spiral(n, rng, arms: int = SPIRAL_ARMS, turns: float = 0.9, width: float = 0.05):
    labels = rng.integers(0, arms, n)
    # sqrt makes the density per unit length roughly even: the outer turns are longer.
    u = np.sqrt(rng.uniform(0.02, 1.0, n))
    angle = 2 * math.pi * (turns * u + labels / arms)
    radius = u
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    points += rng.normal(scale=width, size=(n, 2))
    return points, labels


def _moons(n, rng, noise: float = 0.06):
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0, math.pi, n)
    upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower = np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    points = np.where(labels[:, None] == 0, upper, lower) + rng.normal(scale=noise, size=(n, 2))
    return points, labels


def _circles(n, rng, inner_radius: float = 0.5, noise: float = 0.04):
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0, 2 * math.pi, n)
    radius = np.where(labels == 0, 1.0, inner_radius)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + rng.normal(scale=noise, size=(n, 2)), labels


def _checkerboard(n, rng, cells: int = 4):
    # Uniform points on the "black" squares of a cells x cells board; label = which colour row parity.
    column = rng.integers(0, cells, n)
    row = 2 * rng.integers(0, cells // 2, n) + (column % 2)
    points = np.stack([column + rng.uniform(0, 1, n), row + rng.uniform(0, 1, n)], axis=1)
    labels = (column % 2).astype(np.int64)
    return points, labels


def _eight_gaussians(n, rng, radius: float = 2.0, std: float = 0.1):
    labels = rng.integers(0, 8, n)
    angle = labels * (2 * math.pi / 8)
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + rng.normal(scale=std, size=(n, 2)), labels


def _swiss_roll(n, rng, noise: float = 0.3):
    u = rng.uniform(0, 1, n)
    angle = 1.5 * math.pi * (1 + 2 * u)
    points = np.stack([angle * np.cos(angle), angle * np.sin(angle)], axis=1)
    labels = (u >= 0.5).astype(np.int64)  # inner half / outer half of the roll
    return points + rng.normal(scale=noise, size=(n, 2)), labels


DATASETS: dict[str, PointDataset] = {
    d.name: d
    for d in (
        PointDataset("spiral", _spiral, tuple(f"arm {k}" for k in range(SPIRAL_ARMS)),
                     f"{SPIRAL_ARMS} interleaved spiral arms; the label is the arm"),
        PointDataset("moons", _moons, ("upper moon", "lower moon"), "two interleaving half circles"),
        PointDataset("circles", _circles, ("outer circle", "inner circle"), "two concentric circles"),
        PointDataset("checkerboard", _checkerboard, ("even column", "odd column"), "uniform on a 4x4 board's dark squares"),
        PointDataset("eight_gaussians", _eight_gaussians, tuple(f"mode {k}" for k in range(8)),
                     "eight gaussians on a circle"),
        PointDataset("swiss_roll", _swiss_roll, ("inner half", "outer half"), "a 2-D swiss roll"),
    )
}


def get_dataset(name: str) -> PointDataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


@lru_cache(maxsize=None)
def standardisation(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of a fixed 200 000-point reference draw: the data set's coordinate system."""
    points, _ = get_dataset(name).draw(200_000, np.random.default_rng(20240101))
    return points.mean(axis=0), points.std(axis=0)


def make_dataset(name: str = "spiral", num_samples: int = 4000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_samples`` standardised points and their class labels.

    Returns points (N, 2) float32 and labels (N,) int64.  The same seed gives the same points.
    """
    dataset = get_dataset(name)
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    points, labels = dataset.draw(int(num_samples), np.random.default_rng(seed))
    mean, std = standardisation(name)
    points = (points - mean) / std
    return torch.from_numpy(points.astype(np.float32)), torch.from_numpy(labels.astype(np.int64))
