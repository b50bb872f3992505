"""Seeded inputs that several exercises' checks share: schedules, points, timesteps.

Every input is drawn from its own seeded generator, so a failure message names the same numbers on
every run and on every machine."""
from __future__ import annotations

import torch

from toydiff.schedules import NoiseSchedule, make_schedule


def seeded_generator(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


def schedules() -> dict[str, NoiseSchedule]:
    """Three schedules that differ in kind and length, by name: cosine and linear with T = 1000,
    sigmoid with T = 50."""
    return {"cosine T=1000": make_schedule("cosine", 1000), "linear T=1000": make_schedule("linear", 1000),
            "sigmoid T=50": make_schedule("sigmoid", 50)}


def points(batch: int, dims: int = 2, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """(B, D) standard normal points."""
    return torch.randn(batch, dims, generator=seeded_generator(seed), dtype=dtype)


def timesteps(batch: int, low: int, high: int, seed: int = 0) -> torch.Tensor:
    """(B,) int64 uniform in [low, high]."""
    return torch.randint(low, high + 1, (batch,), generator=seeded_generator(seed))
