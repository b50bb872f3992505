"""Checks of exercise 02, one DDPM step: the posterior mean and variance (eq. 7), no noise at t = 0.

Compared with ``toydiff.samplers.ddpm_step`` and ``NoiseSchedule.posterior_variance`` on three
schedules, at random t, at t = 0 and T-1, with one t per example, and in float32."""
from __future__ import annotations

from typing import Callable

import torch

from toydiff import samplers
from toydiff.schedules import make_schedule

from .assertions import assert_close, assert_dtype, require
from .inputs import points, schedules, timesteps

TOPIC = "one DDPM step: posterior mean and variance"
LIBRARY = "toydiff"


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def posterior(t_of: Callable[[int], torch.Tensor], what: str):
        require(student, "posterior_mean_variance")
        for name, schedule in schedules().items():
            t = t_of(schedule.num_timesteps)
            x0, x_t = points(len(t), seed=11), points(len(t), seed=12)
            mean, variance = student.posterior_mean_variance(schedule, x0, x_t, t)
            # With the model output taken as x_0 and z = 0, the library's step is the posterior mean.
            expected_mean = samplers.ddpm_step(schedule, x0, t, x_t, noise=torch.zeros_like(x_t), prediction_type="x0")
            assert_close(mean, expected_mean, f"posterior mean μ̃, {name}, {what}")
            assert_close(variance, schedule.posterior_variance(t), f"posterior variance β̃, {name}, {what}",
                         atol=1e-14)

    def posterior_random():
        posterior(lambda T: timesteps(64, 1, T - 1, seed=13), "random t")

    def posterior_first():
        posterior(lambda T: torch.zeros(8, dtype=torch.int64), "t = 0")
        schedule = make_schedule("cosine", 1000)
        x0, x_t = points(8, seed=14), points(8, seed=15)
        mean, variance = student.posterior_mean_variance(schedule, x0, x_t, torch.zeros(8, dtype=torch.int64))
        assert_close(mean, x0, "at t = 0 the posterior mean is x_0 itself (ᾱ_{-1} = 1)")
        assert_close(variance, torch.zeros(8, dtype=torch.float64), "at t = 0 the posterior variance is 0")

    def step(t_of: Callable[[int], torch.Tensor], what: str):
        require(student, "ddpm_step")
        for name, schedule in schedules().items():
            t = t_of(schedule.num_timesteps)
            x_t, epsilon, noise = points(len(t), seed=16), points(len(t), seed=17), points(len(t), seed=18)
            assert_close(student.ddpm_step(schedule, epsilon, t, x_t, noise),
                         samplers.ddpm_step(schedule, epsilon, t, x_t, noise=noise), f"x_(t-1), {name}, {what}",
                         atol=1e-9, rtol=1e-8)

    def step_random():
        step(lambda T: timesteps(64, 1, T - 1, seed=19), "random t")

    def step_last():
        step(lambda T: torch.full((8,), T - 1, dtype=torch.int64), "t = T-1")

    def step_no_noise_at_zero():
        schedule = make_schedule("cosine", 1000)
        t = torch.zeros(8, dtype=torch.int64)
        x_t, epsilon = points(8, seed=20), points(8, seed=21)
        with_noise = student.ddpm_step(schedule, epsilon, t, x_t, points(8, seed=22))
        without = student.ddpm_step(schedule, epsilon, t, x_t, torch.zeros_like(x_t))
        assert_close(with_noise, without, "the last step (t = 0) must add no noise")
        assert_close(with_noise, samplers.ddpm_step(schedule, epsilon, t, x_t, noise=points(8, seed=22)),
                     "x_(t-1) at t = 0", atol=1e-9)

    def step_mixed():
        step(lambda T: torch.tensor([0, 1, T - 1, T // 2, 0, 2], dtype=torch.int64), "one t per example, some 0")

    def keeps_dtype():
        schedule = make_schedule("cosine", 1000)
        t = timesteps(16, 0, 999, seed=23)
        x_t, epsilon, noise = (points(16, seed=s, dtype=torch.float32) for s in (24, 25, 26))
        result = student.ddpm_step(schedule, epsilon, t, x_t, noise)
        assert_dtype(result, torch.float32, "x_(t-1) of float32 inputs")
        assert_close(result, samplers.ddpm_step(schedule, epsilon, t, x_t, noise=noise), "x_(t-1) of float32 inputs",
                     atol=1e-3, rtol=1e-4)

    return [("posterior mean and variance at random t", posterior_random),
            ("posterior at t = 0: mean x_0, variance 0", posterior_first),
            ("ddpm_step at random t", step_random),
            ("ddpm_step at t = T-1", step_last),
            ("ddpm_step adds no noise at t = 0", step_no_noise_at_zero),
            ("ddpm_step with one t per example, including 0", step_mixed),
            ("ddpm_step keeps float32 float32", keeps_dtype)]
