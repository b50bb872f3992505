"""Checks of exercise 03, one DDIM step: σ(η) (eq. 16), eq. 12, the last step, and inversion.

Compared with ``toydiff.samplers.ddim_step`` and ``ddim_sigma``; also η = 1 against the DDPM step, and
a step down then up against the start."""
from __future__ import annotations

from typing import Callable

import torch

from toydiff import samplers
from toydiff.parameterisation import predict_x0
from toydiff.schedules import make_schedule

from .assertions import assert_close, assert_dtype, require
from .inputs import points, schedules, seeded_generator, timesteps

TOPIC = "one DDIM step: σ(η), eq. 12, inversion"
LIBRARY = "toydiff"


def _ddim_pairs(T: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (t, t_prev) with t_prev < t, t_prev possibly -1."""
    t = timesteps(batch, 0, T - 1, seed)
    t_prev = (t.double() * torch.rand(batch, generator=seeded_generator(seed + 1), dtype=torch.float64)).long() - 1
    return t, t_prev


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def sigma():
        require(student, "ddim_sigma")
        for name, schedule in schedules().items():
            t, t_prev = _ddim_pairs(schedule.num_timesteps, 64, seed=30)
            for eta in (0.0, 0.5, 1.0):
                assert_close(student.ddim_sigma(schedule, t, t_prev, eta),
                             samplers.ddim_sigma(schedule, t, t_prev, eta), f"σ(η = {eta}), {name}", atol=1e-14)

    def step(eta: float, what: str, pairs=None):
        require(student, "ddim_step")
        for name, schedule in schedules().items():
            t, t_prev = pairs(schedule.num_timesteps) if pairs else _ddim_pairs(schedule.num_timesteps, 64, seed=31)
            x_t, epsilon, noise = (points(len(t), seed=s) for s in (32, 33, 34))
            assert_close(student.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=eta, noise=noise),
                         samplers.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=eta, noise=noise),
                         f"x_(t_prev), {name}, η = {eta}, {what}", atol=1e-9, rtol=1e-8)

    def last_step_is_x0():
        schedule = make_schedule("cosine", 1000)
        t = torch.tensor([5, 100, 999, 0], dtype=torch.int64)
        t_prev = torch.full((4,), -1, dtype=torch.int64)
        x_t, epsilon = points(4, seed=35), points(4, seed=36)
        x0 = predict_x0(schedule, epsilon, t, x_t)
        for eta in (0.0, 1.0):
            assert_close(student.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=eta, noise=points(4, seed=37)), x0,
                         f"the last step (t_prev = -1, η = {eta}) must return x̂_0, with no noise", atol=1e-8)

    def eta_one_is_ddpm():
        for name, schedule in schedules().items():
            T = schedule.num_timesteps
            t = torch.arange(T, dtype=torch.int64)
            x_t, epsilon, noise = (points(T, seed=s) for s in (38, 39, 40))
            assert_close(student.ddim_step(schedule, epsilon, t, t - 1, x_t, eta=1.0, noise=noise),
                         samplers.ddpm_step(schedule, epsilon, t, x_t, noise=noise),
                         f"η = 1 with t_prev = t - 1 must equal the DDPM step, every t of {name}", atol=1e-8, rtol=1e-7)

    def inversion():
        schedule = make_schedule("cosine", 1000)
        t = torch.tensor([-1, -1, 0, 19, 500], dtype=torch.int64)
        t_next = torch.tensor([19, 999, 19, 39, 999], dtype=torch.int64)
        x_t, epsilon = points(5, seed=41), points(5, seed=42)
        assert_close(student.ddim_step(schedule, epsilon, t, t_next, x_t, eta=0.0),
                     samplers.ddim_step(schedule, epsilon, t, t_next, x_t, eta=0.0),
                     "an inversion step (t_prev > t, starting from clean data at t = -1), η = 0", atol=1e-8)

    def round_trip():
        schedule = make_schedule("cosine", 1000)
        t, t_prev = _ddim_pairs(1000, 32, seed=43)
        t_prev = t_prev.clamp_min(0)
        x_t, epsilon = points(32, seed=44), points(32, seed=45)
        down = student.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=0.0)
        up = student.ddim_step(schedule, epsilon, t_prev, t, down, eta=0.0)
        assert_close(up, x_t, "a step down then up with the same ε̂ must return x_t (η = 0 is deterministic)",
                     atol=1e-8, rtol=1e-8)

    def keeps_dtype():
        schedule = make_schedule("cosine", 1000)
        t, t_prev = _ddim_pairs(1000, 16, seed=46)
        x_t, epsilon, noise = (points(16, seed=s, dtype=torch.float32) for s in (47, 48, 49))
        result = student.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=0.5, noise=noise)
        assert_dtype(result, torch.float32, "x_(t_prev) of float32 inputs")

    return [("σ(η) for η = 0, 0.5, 1", sigma),
            ("deterministic step, η = 0, random t > t_prev", lambda: step(0.0, "random t > t_prev")),
            ("stochastic step, η = 1, random t > t_prev", lambda: step(1.0, "random t > t_prev")),
            ("stochastic step, η = 0.3, from t = T-1", lambda: step(
                0.3, "from t = T-1", lambda T: (torch.full((8,), T - 1), torch.tensor([T - 2, T // 2, 0, -1] * 2)))),
            ("the last step (t_prev = -1) returns x̂_0", last_step_is_x0),
            ("η = 1 with t_prev = t - 1 equals the DDPM step, every t", eta_one_is_ddpm),
            ("an inversion step from clean data (t = -1) has no NaN", inversion),
            ("η = 0 down then up returns the start", round_trip),
            ("ddim_step keeps float32 float32", keeps_dtype)]
