"""How close are generated points to the data?  Sample-based metrics, each reported with its floor.

Distances (energy, sliced Wasserstein: lower is better) and shares (precision, recall: higher is
better). A figure between two finite samples is never exactly ideal, even when both come from the same
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


def _inside_manifold(queries: torch.Tensor, support: torch.Tensor, k: int) -> torch.Tensor:
    """For each query, whether it lies within the k-th-nearest-neighbour radius of some support point."""
    support = support.double().cpu()
    distances = torch.cdist(support, support)                        # (M, M)
    radius = distances.kthvalue(k + 1, dim=1).values                 # (M,) k+1: skip the point itself
    inside = torch.zeros(len(queries), dtype=torch.bool)
    for start in range(0, len(queries), 2048):
        block = torch.cdist(queries[start:start + 2048].double().cpu(), support)  # (Q, M)
        inside[start:start + 2048] = (block <= radius).any(dim=1)
    return inside


def precision(samples: torch.Tensor, data: torch.Tensor, k: int = 5) -> float:
    """Share of samples that fall on the data manifold (Kynkäänniemi et al. 2019): low when samples blur.

    The manifold is the union of balls around each data point, of radius its k-th neighbour distance.
    Energy distance barely notices a blurred spiral (a Gaussian with the same moments is only ~0.016
    away); this does.
    """
    _check_points(samples, data)
    return float(_inside_manifold(samples, data, k).double().mean())


def recall(samples: torch.Tensor, data: torch.Tensor, k: int = 5) -> float:
    """Share of data points that fall on the samples' manifold: low when samples miss modes."""
    _check_points(samples, data)
    return float(_inside_manifold(data, samples, k).double().mean())


METRICS: dict[str, Callable] = {"energy_distance": energy_distance, "sliced_wasserstein": sliced_wasserstein,
                                "precision": precision, "recall": recall}


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
    return "  ".join(f"{name} {v['value']:.4g} (floor {v['floor']:.4g})" for name, v in comparison.items())
