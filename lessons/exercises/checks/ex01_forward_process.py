"""Checks of exercise 01, the forward process: ᾱ_t from β_t, and x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε.

Compared with ``toydiff.schedules.NoiseSchedule`` on three schedules, at random t, at t = 0 and
t = T-1, and in float32."""
from __future__ import annotations

from typing import Callable

import torch

from toydiff.schedules import make_schedule

from .assertions import assert_close, assert_dtype, require
from .inputs import points, schedules, timesteps

TOPIC = "the forward process: ᾱ_t and add_noise"
LIBRARY = "toydiff"


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def alphas_cumprod():
        require(student, "alphas_cumprod_from_betas")
        for name, schedule in schedules().items():
            assert_close(student.alphas_cumprod_from_betas(schedule.betas.clone()), schedule.alphas_cumprod,
                         f"ᾱ of the {name} schedule", atol=1e-14, rtol=1e-12)

    def alphas_cumprod_one_step():
        betas = torch.tensor([0.3], dtype=torch.float64)
        assert_close(student.alphas_cumprod_from_betas(betas), torch.tensor([0.7], dtype=torch.float64),
                     "ᾱ of a 1-step schedule (T = 1): ᾱ_0 = 1 - β_0")

    def random_timesteps():
        require(student, "add_noise")
        for dims in (2, 5):
            for name, schedule in schedules().items():
                T = schedule.num_timesteps
                x0, noise = points(64, dims, seed=1), points(64, dims, seed=2)
                t = timesteps(64, 0, T - 1, seed=3)
                assert_close(student.add_noise(schedule.alphas_cumprod, x0, noise, t),
                             schedule.add_noise(x0, noise, t), f"x_t, {name}, D = {dims}, random t")

    def first_step():
        schedule = make_schedule("cosine", 1000)
        x0, noise = points(16, seed=4), points(16, seed=5)
        t = torch.zeros(16, dtype=torch.int64)
        assert_close(student.add_noise(schedule.alphas_cumprod, x0, noise, t), schedule.add_noise(x0, noise, t),
                     "x_t at t = 0 (almost the clean point)")

    def last_step():
        schedule = make_schedule("cosine", 1000)
        x0, noise = points(16, seed=6), points(16, seed=7)
        t = torch.full((16,), 999, dtype=torch.int64)
        x_t = student.add_noise(schedule.alphas_cumprod, x0, noise, t)
        assert_close(x_t, schedule.add_noise(x0, noise, t), "x_t at t = T-1")
        assert_close(x_t, noise, "x_t at t = T-1 of the cosine schedule should be (nearly) pure noise", atol=1e-3)

    def keeps_dtype():
        schedule = make_schedule("linear", 1000)
        x0, noise = points(32, seed=8, dtype=torch.float32), points(32, seed=9, dtype=torch.float32)
        t = timesteps(32, 0, 999, seed=10)
        x_t = student.add_noise(schedule.alphas_cumprod, x0, noise, t)
        assert_dtype(x_t, torch.float32, "x_t of float32 points")
        assert_close(x_t, schedule.add_noise(x0, noise, t), "x_t of float32 points", atol=1e-6, rtol=1e-5)

    return [("ᾱ_t = cumulative product of (1 - β_t), three schedules", alphas_cumprod),
            ("ᾱ of a one-step schedule", alphas_cumprod_one_step),
            ("add_noise matches NoiseSchedule.add_noise at random t (D = 2 and 5)", random_timesteps),
            ("add_noise at t = 0", first_step),
            ("add_noise at t = T-1 is (nearly) pure noise", last_step),
            ("add_noise keeps float32 points float32", keeps_dtype)]
