"""How close are generated points to the data?  Two sample-based distances, each with its floor.

A distance between two finite samples is never exactly zero, even when both come from the same
distribution. So every figure is reported next to its *floor*: the same metric between two fresh,
independent draws of the real data of the same size.  A model is as good as it can be measured to be
when its distance reaches the floor.
"""
from __future__ import annotations

from typing import Callable

import torch


def _mean_pairwise_distance(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """E|a_i - b_j| over all pairs (the V-statistic, diagonal included), computed in float64 chunks."""
    a, b = a.double(), b.double()
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, len(a), chunk):
        total += torch.cdist(a[start:start + chunk], b).sum()
    return total / (len(a) * len(b))


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Székely & Rizzo) between (N, D) and (M, D).

    Zero iff the distributions are equal; computed as a V-statistic, so two finite samples of one
    distribution give a small positive value (about E|X - X'| / N).
    """
    _check_points(x, y)
    return float(2 * _mean_pairwise_distance(x, y) - _mean_pairwise_distance(x, x) - _mean_pairwise_distance(y, y))


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: the root mean of W2² of 1-D projections on random directions.

    In 1-D, W2 between equal-size samples pairs the sorted values; samples of different sizes are
    compared through matched quantiles.
    """
    _check_points(x, y)
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    px, _ = (x.double().cpu() @ directions).sort(dim=0)  # (N, P)
    py, _ = (y.double().cpu() @ directions).sort(dim=0)  # (M, P)
    if len(px) != len(py):
        levels = torch.linspace(0, 1, max(len(px), len(py)), dtype=torch.float64)
        px, py = torch.quantile(px, levels, dim=0), torch.quantile(py, levels, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


METRICS: dict[str, Callable] = {"energy_distance": energy_distance, "sliced_wasserstein": sliced_wasserstein}


def _check_points(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected two point sets (N, D) and (M, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        raise ValueError("the points contain NaN or inf (did sampling diverge?)")


def compare_to_data(samples: torch.Tensor, fresh_data: torch.Tensor, second_fresh_data: torch.Tensor) -> dict:
    """Every metric of ``samples`` against ``fresh_data``, and its floor (fresh vs second fresh)."""
    return {name: {"value": metric(samples.cpu(), fresh_data.cpu()),
                   "floor": metric(second_fresh_data.cpu(), fresh_data.cpu())}
            for name, metric in METRICS.items()}


def format_comparison(comparison: dict) -> str:
    return "  ".join(f"{name} {v['value']:.5f} (floor {v['floor']:.5f})" for name, v in comparison.items())
