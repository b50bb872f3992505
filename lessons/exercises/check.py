"""Check an exercise against the library:  python -m lessons.exercises.check NN [FILE]

    python -m lessons.exercises.check 01                                   # the blank exercise file
    python -m lessons.exercises.check 01 lessons/exercises/ex01_work.py    # your copy
    python -m lessons.exercises.check 02 lessons/exercises/solutions/ex02_ddpm_step.py

FILE is imported by its path, its functions are run on seeded random inputs and on edge cases, and
every result is compared with the reference implementation in ``toydiff`` (exercises 01-04) or
``imagediff`` (05-07; 07 uses both).  One line per check says
PASS or FAIL and why; the exit status is 0 only when every check passes (1 otherwise, 2 for a bad
command line).
"""
from __future__ import annotations

import importlib.util
import math
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from einops import rearrange

from imagediff import dit, metrics
from imagediff.vae import VAE, DiagonalGaussian, VAEConfig
from toydiff import guidance, samplers
from toydiff.parameterisation import predict_x0
from toydiff.schedules import NoiseSchedule, make_schedule

HERE = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------

class CheckFailed(AssertionError):
    """A check's result differs from the reference; the message says where and by how much."""


def assert_close(actual, expected, what: str, atol: float = 1e-10, rtol: float = 1e-8) -> None:
    """Same shape, finite, and within tolerance of the reference; else say what differs."""
    if not isinstance(actual, torch.Tensor):
        raise CheckFailed(f"{what}: expected a tensor, got {type(actual).__name__}")
    expected = torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise CheckFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if not torch.isfinite(actual).all():
        raise CheckFailed(f"{what}: contains NaN or inf (a 0/0, or a square root of a negative number?)")
    difference = (actual.double() - expected.double()).abs()
    allowed = atol + rtol * expected.double().abs()
    if (difference > allowed).any():
        worst = int((difference - allowed).flatten().argmax())
        raise CheckFailed(f"{what}: off by up to {float(difference.max()):.3g} "
                          f"(entry {worst}: got {float(actual.flatten()[worst]):.8g}, "
                          f"expected {float(expected.flatten()[worst]):.8g})")


def assert_dtype(actual: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    if actual.dtype != dtype:
        raise CheckFailed(f"{what}: dtype {actual.dtype}, expected {dtype} (cast the float64 schedule values "
                          "to the sample's dtype)")


@dataclass
class Result:
    name: str
    passed: bool
    reason: str = ""


def run_check(name: str, check: Callable[[], None]) -> Result:
    try:
        check()
    except NotImplementedError as error:
        return Result(name, False, f"not written yet ({error})")
    except CheckFailed as error:
        return Result(name, False, str(error))
    except Exception as error:  # the student's code crashed: show where
        frames = traceback.extract_tb(error.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                      if Path(f.filename).resolve() != Path(__file__).resolve()), "")
        return Result(name, False, f"{type(error).__name__}: {error}" + (f" (at {where})" if where else ""))
    return Result(name, True)


# ----------------------------------------------------------------------------------------------
# Shared inputs
# ----------------------------------------------------------------------------------------------

def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _schedules() -> dict[str, NoiseSchedule]:
    return {"cosine T=1000": make_schedule("cosine", 1000), "linear T=1000": make_schedule("linear", 1000),
            "sigmoid T=50": make_schedule("sigmoid", 50)}


def _points(batch: int, dims: int = 2, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch, dims, generator=_generator(seed), dtype=dtype)


def _timesteps(batch: int, low: int, high: int, seed: int = 0) -> torch.Tensor:
    """(B,) int64 uniform in [low, high]."""
    return torch.randint(low, high + 1, (batch,), generator=_generator(seed))


def _require(module, *names: str) -> None:
    missing = [name for name in names if not callable(getattr(module, name, None))]
    if missing:
        raise CheckFailed(f"the file defines no function named {', '.join(missing)} (keep the given names)")


# ----------------------------------------------------------------------------------------------
# 01 — the forward process
# ----------------------------------------------------------------------------------------------

def checks_01(student) -> list[tuple[str, Callable[[], None]]]:
    def alphas_cumprod():
        _require(student, "alphas_cumprod_from_betas")
        for name, schedule in _schedules().items():
            assert_close(student.alphas_cumprod_from_betas(schedule.betas.clone()), schedule.alphas_cumprod,
                         f"ᾱ of the {name} schedule", atol=1e-14, rtol=1e-12)

    def alphas_cumprod_one_step():
        betas = torch.tensor([0.3], dtype=torch.float64)
        assert_close(student.alphas_cumprod_from_betas(betas), torch.tensor([0.7], dtype=torch.float64),
                     "ᾱ of a 1-step schedule (T = 1): ᾱ_0 = 1 - β_0")

    def random_timesteps():
        _require(student, "add_noise")
        for dims in (2, 5):
            for name, schedule in _schedules().items():
                T = schedule.num_timesteps
                x0, noise = _points(64, dims, seed=1), _points(64, dims, seed=2)
                t = _timesteps(64, 0, T - 1, seed=3)
                assert_close(student.add_noise(schedule.alphas_cumprod, x0, noise, t),
                             schedule.add_noise(x0, noise, t), f"x_t, {name}, D = {dims}, random t")

    def first_step():
        schedule = make_schedule("cosine", 1000)
        x0, noise = _points(16, seed=4), _points(16, seed=5)
        t = torch.zeros(16, dtype=torch.int64)
        assert_close(student.add_noise(schedule.alphas_cumprod, x0, noise, t), schedule.add_noise(x0, noise, t),
                     "x_t at t = 0 (almost the clean point)")

    def last_step():
        schedule = make_schedule("cosine", 1000)
        x0, noise = _points(16, seed=6), _points(16, seed=7)
        t = torch.full((16,), 999, dtype=torch.int64)
        x_t = student.add_noise(schedule.alphas_cumprod, x0, noise, t)
        assert_close(x_t, schedule.add_noise(x0, noise, t), "x_t at t = T-1")
        assert_close(x_t, noise, "x_t at t = T-1 of the cosine schedule should be (nearly) pure noise", atol=1e-3)

    def keeps_dtype():
        schedule = make_schedule("linear", 1000)
        x0, noise = _points(32, seed=8, dtype=torch.float32), _points(32, seed=9, dtype=torch.float32)
        t = _timesteps(32, 0, 999, seed=10)
        x_t = student.add_noise(schedule.alphas_cumprod, x0, noise, t)
        assert_dtype(x_t, torch.float32, "x_t of float32 points")
        assert_close(x_t, schedule.add_noise(x0, noise, t), "x_t of float32 points", atol=1e-6, rtol=1e-5)

    return [("ᾱ_t = cumulative product of (1 - β_t), three schedules", alphas_cumprod),
            ("ᾱ of a one-step schedule", alphas_cumprod_one_step),
            ("add_noise matches NoiseSchedule.add_noise at random t (D = 2 and 5)", random_timesteps),
            ("add_noise at t = 0", first_step),
            ("add_noise at t = T-1 is (nearly) pure noise", last_step),
            ("add_noise keeps float32 points float32", keeps_dtype)]


# ----------------------------------------------------------------------------------------------
# 02 — one DDPM step
# ----------------------------------------------------------------------------------------------

def checks_02(student) -> list[tuple[str, Callable[[], None]]]:
    def posterior(t_of: Callable[[int], torch.Tensor], what: str):
        _require(student, "posterior_mean_variance")
        for name, schedule in _schedules().items():
            t = t_of(schedule.num_timesteps)
            x0, x_t = _points(len(t), seed=11), _points(len(t), seed=12)
            mean, variance = student.posterior_mean_variance(schedule, x0, x_t, t)
            # With the model output taken as x_0 and z = 0, the library's step is the posterior mean.
            expected_mean = samplers.ddpm_step(schedule, x0, t, x_t, noise=torch.zeros_like(x_t), prediction_type="x0")
            assert_close(mean, expected_mean, f"posterior mean μ̃, {name}, {what}")
            assert_close(variance, schedule.posterior_variance(t), f"posterior variance β̃, {name}, {what}",
                         atol=1e-14)

    def posterior_random():
        posterior(lambda T: _timesteps(64, 1, T - 1, seed=13), "random t")

    def posterior_first():
        posterior(lambda T: torch.zeros(8, dtype=torch.int64), "t = 0")
        schedule = make_schedule("cosine", 1000)
        x0, x_t = _points(8, seed=14), _points(8, seed=15)
        mean, variance = student.posterior_mean_variance(schedule, x0, x_t, torch.zeros(8, dtype=torch.int64))
        assert_close(mean, x0, "at t = 0 the posterior mean is x_0 itself (ᾱ_{-1} = 1)")
        assert_close(variance, torch.zeros(8, dtype=torch.float64), "at t = 0 the posterior variance is 0")

    def step(t_of: Callable[[int], torch.Tensor], what: str):
        _require(student, "ddpm_step")
        for name, schedule in _schedules().items():
            t = t_of(schedule.num_timesteps)
            x_t, epsilon, noise = _points(len(t), seed=16), _points(len(t), seed=17), _points(len(t), seed=18)
            assert_close(student.ddpm_step(schedule, epsilon, t, x_t, noise),
                         samplers.ddpm_step(schedule, epsilon, t, x_t, noise=noise), f"x_(t-1), {name}, {what}",
                         atol=1e-9, rtol=1e-8)

    def step_random():
        step(lambda T: _timesteps(64, 1, T - 1, seed=19), "random t")

    def step_last():
        step(lambda T: torch.full((8,), T - 1, dtype=torch.int64), "t = T-1")

    def step_no_noise_at_zero():
        schedule = make_schedule("cosine", 1000)
        t = torch.zeros(8, dtype=torch.int64)
        x_t, epsilon = _points(8, seed=20), _points(8, seed=21)
        with_noise = student.ddpm_step(schedule, epsilon, t, x_t, _points(8, seed=22))
        without = student.ddpm_step(schedule, epsilon, t, x_t, torch.zeros_like(x_t))
        assert_close(with_noise, without, "the last step (t = 0) must add no noise")
        assert_close(with_noise, samplers.ddpm_step(schedule, epsilon, t, x_t, noise=_points(8, seed=22)),
                     "x_(t-1) at t = 0", atol=1e-9)

    def step_mixed():
        step(lambda T: torch.tensor([0, 1, T - 1, T // 2, 0, 2], dtype=torch.int64), "one t per example, some 0")

    def keeps_dtype():
        schedule = make_schedule("cosine", 1000)
        t = _timesteps(16, 0, 999, seed=23)
        x_t, epsilon, noise = (_points(16, seed=s, dtype=torch.float32) for s in (24, 25, 26))
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


# ----------------------------------------------------------------------------------------------
# 03 — one DDIM step
# ----------------------------------------------------------------------------------------------

def _ddim_pairs(T: int, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (t, t_prev) with t_prev < t, t_prev possibly -1."""
    t = _timesteps(batch, 0, T - 1, seed)
    t_prev = (t.double() * torch.rand(batch, generator=_generator(seed + 1), dtype=torch.float64)).long() - 1
    return t, t_prev


def checks_03(student) -> list[tuple[str, Callable[[], None]]]:
    def sigma():
        _require(student, "ddim_sigma")
        for name, schedule in _schedules().items():
            t, t_prev = _ddim_pairs(schedule.num_timesteps, 64, seed=30)
            for eta in (0.0, 0.5, 1.0):
                assert_close(student.ddim_sigma(schedule, t, t_prev, eta), samplers.ddim_sigma(schedule, t, t_prev, eta),
                             f"σ(η = {eta}), {name}", atol=1e-14)

    def step(eta: float, what: str, pairs=None):
        _require(student, "ddim_step")
        for name, schedule in _schedules().items():
            t, t_prev = pairs(schedule.num_timesteps) if pairs else _ddim_pairs(schedule.num_timesteps, 64, seed=31)
            x_t, epsilon, noise = (_points(len(t), seed=s) for s in (32, 33, 34))
            assert_close(student.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=eta, noise=noise),
                         samplers.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=eta, noise=noise),
                         f"x_(t_prev), {name}, η = {eta}, {what}", atol=1e-9, rtol=1e-8)

    def last_step_is_x0():
        schedule = make_schedule("cosine", 1000)
        t = torch.tensor([5, 100, 999, 0], dtype=torch.int64)
        t_prev = torch.full((4,), -1, dtype=torch.int64)
        x_t, epsilon = _points(4, seed=35), _points(4, seed=36)
        x0 = predict_x0(schedule, epsilon, t, x_t)
        for eta in (0.0, 1.0):
            assert_close(student.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=eta, noise=_points(4, seed=37)), x0,
                         f"the last step (t_prev = -1, η = {eta}) must return x̂_0, with no noise", atol=1e-8)

    def eta_one_is_ddpm():
        for name, schedule in _schedules().items():
            T = schedule.num_timesteps
            t = torch.arange(T, dtype=torch.int64)
            x_t, epsilon, noise = (_points(T, seed=s) for s in (38, 39, 40))
            assert_close(student.ddim_step(schedule, epsilon, t, t - 1, x_t, eta=1.0, noise=noise),
                         samplers.ddpm_step(schedule, epsilon, t, x_t, noise=noise),
                         f"η = 1 with t_prev = t - 1 must equal the DDPM step, every t of {name}", atol=1e-8, rtol=1e-7)

    def inversion():
        schedule = make_schedule("cosine", 1000)
        t = torch.tensor([-1, -1, 0, 19, 500], dtype=torch.int64)
        t_next = torch.tensor([19, 999, 19, 39, 999], dtype=torch.int64)
        x_t, epsilon = _points(5, seed=41), _points(5, seed=42)
        assert_close(student.ddim_step(schedule, epsilon, t, t_next, x_t, eta=0.0),
                     samplers.ddim_step(schedule, epsilon, t, t_next, x_t, eta=0.0),
                     "an inversion step (t_prev > t, starting from clean data at t = -1), η = 0", atol=1e-8)

    def round_trip():
        schedule = make_schedule("cosine", 1000)
        t, t_prev = _ddim_pairs(1000, 32, seed=43)
        t_prev = t_prev.clamp_min(0)
        x_t, epsilon = _points(32, seed=44), _points(32, seed=45)
        down = student.ddim_step(schedule, epsilon, t, t_prev, x_t, eta=0.0)
        up = student.ddim_step(schedule, epsilon, t_prev, t, down, eta=0.0)
        assert_close(up, x_t, "a step down then up with the same ε̂ must return x_t (η = 0 is deterministic)",
                     atol=1e-8, rtol=1e-8)

    def keeps_dtype():
        schedule = make_schedule("cosine", 1000)
        t, t_prev = _ddim_pairs(1000, 16, seed=46)
        x_t, epsilon, noise = (_points(16, seed=s, dtype=torch.float32) for s in (47, 48, 49))
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


# ----------------------------------------------------------------------------------------------
# 04 — guidance
# ----------------------------------------------------------------------------------------------

class _LinearClassifier(torch.nn.Module):
    """logits = W x + b + c·t/T: a classifier whose gradient is known, and which uses t."""

    def __init__(self, dims: int, classes: int, seed: int):
        super().__init__()
        generator = _generator(seed)
        self.weight = torch.nn.Parameter(torch.randn(classes, dims, generator=generator))
        self.bias = torch.nn.Parameter(torch.randn(classes, generator=generator))
        self.time = torch.nn.Parameter(torch.randn(classes, generator=generator))

    def forward(self, x, t):
        return x @ self.weight.T + self.bias + self.time * t[:, None].float() / 1000  # (B, C)


class _MLPClassifier(torch.nn.Module):
    def __init__(self, dims: int, classes: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(dims + 1, 32), torch.nn.SiLU(), torch.nn.Linear(32, classes))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].float() / 1000], dim=1))


def checks_04(student) -> list[tuple[str, Callable[[], None]]]:
    def cfg_scales():
        _require(student, "classifier_free_guidance")
        uncond = torch.randn(8, 3, 4, 4, generator=_generator(50))
        cond = torch.randn(8, 3, 4, 4, generator=_generator(51))
        for scale in (0.0, 0.5, 2.0, 4.0, 7.5):
            assert_close(student.classifier_free_guidance(uncond, cond, scale), guidance.combine_guidance(uncond, cond, scale),
                         f"guided ε at s = {scale} (image-shaped, every channel guided)", atol=1e-5, rtol=1e-5)

    def cfg_one_exact():
        _require(student, "classifier_free_guidance")
        uncond = torch.randn(256, 2, generator=_generator(52))
        cond = torch.randn(256, 2, generator=_generator(53)) * 3.7
        guided = student.classifier_free_guidance(uncond, cond, 1.0)
        if not torch.equal(guided, cond):
            differing = int((guided != cond).sum())
            raise CheckFailed(f"s = 1 must return ε_cond bit for bit; {differing} of {cond.numel()} entries differ "
                              "(ε_u + 1·(ε_c - ε_u) rounds differently: write it around ε_c)")

    def cfg_zero_is_uncond():
        uncond = torch.randn(64, 2, generator=_generator(54))
        cond = torch.randn(64, 2, generator=_generator(55))
        assert_close(student.classifier_free_guidance(uncond, cond, 0.0), uncond, "s = 0 must give ε_uncond",
                     atol=1e-6, rtol=1e-6)

    def classifier(make_classifier, what: str, t_of):
        _require(student, "classifier_guided_epsilon")
        schedule = make_schedule("cosine", 1000)
        clf = make_classifier(2, 3, 56)
        x_t, epsilon = _points(32, seed=57, dtype=torch.float32), _points(32, seed=58, dtype=torch.float32)
        labels = _timesteps(32, 0, 2, seed=59)
        t = t_of(32)
        for scale in (0.0, 1.0, 3.0):
            reference = guidance.classifier_guidance(lambda x, t_: epsilon, clf, labels, scale, schedule)(x_t, t)
            with torch.no_grad():  # as inside a sampler
                guided = student.classifier_guided_epsilon(schedule, epsilon, x_t, t, clf, labels, scale)
            assert_close(guided, reference, f"ε̃ with a {what} classifier, s = {scale}", atol=1e-5, rtol=1e-5)

    def classifier_gradient_sign():
        # For logits = W x, moving along ∇ log p(y|x) must raise p(y|x): ε̃ = ε - s σ ∇ means x̂_0 moves along +∇.
        schedule = make_schedule("cosine", 1000)
        clf = _LinearClassifier(2, 3, 60)
        x_t = _points(16, seed=61, dtype=torch.float32)
        labels = torch.zeros(16, dtype=torch.int64)
        t = torch.full((16,), 500, dtype=torch.int64)
        epsilon = torch.zeros_like(x_t)
        guided = student.classifier_guided_epsilon(schedule, epsilon, x_t, t, clf, labels, 1.0)
        x0_before = predict_x0(schedule, epsilon, t, x_t)
        x0_after = predict_x0(schedule, guided, t, x_t)
        with torch.no_grad():
            before = torch.log_softmax(clf(x0_before, t), -1)[:, 0]
            after = torch.log_softmax(clf(x0_after, t), -1)[:, 0]
        if not bool((after >= before - 1e-6).all()):
            raise CheckFailed("guidance moved x̂_0 away from the requested class: check the sign of the correction")

    return [("classifier-free guidance at s = 0, 0.5, 2, 4, 7.5", cfg_scales),
            ("classifier-free guidance at s = 1 is the conditional output, bit for bit", cfg_one_exact),
            ("classifier-free guidance at s = 0 is the unconditional output", cfg_zero_is_uncond),
            ("classifier guidance, linear classifier, random t",
             lambda: classifier(_LinearClassifier, "linear", lambda b: _timesteps(b, 0, 999, seed=62))),
            ("classifier guidance, small MLP classifier, t = 0 and t = T-1",
             lambda: classifier(_MLPClassifier, "MLP", lambda b: torch.tensor([0, 999] * (b // 2)))),
            ("classifier guidance moves x̂_0 towards the class", classifier_gradient_sign)]


# ----------------------------------------------------------------------------------------------
# Numbers, not tensors (05 and 07 return Python floats)
# ----------------------------------------------------------------------------------------------

def as_number(value, what: str) -> float:
    """A Python number, or a tensor holding exactly one, as a float; else say what came back."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise CheckFailed(f"{what}: expected one number, got a tensor of shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise CheckFailed(f"{what}: expected a number, got {type(value).__name__}")


def assert_close_number(actual, expected: float, what: str, atol: float = 1e-10, rtol: float = 1e-8) -> float:
    """Like assert_close, for one number."""
    actual = as_number(actual, what)
    if not math.isfinite(actual):
        raise CheckFailed(f"{what}: got {actual} (a 0/0, or a square root of a negative number?)")
    if abs(actual - expected) > atol + rtol * abs(expected):
        raise CheckFailed(f"{what}: got {actual:.12g}, expected {expected:.12g} "
                          f"(off by {abs(actual - expected):.3g})")
    return actual


# ----------------------------------------------------------------------------------------------
# 05 — the VAE's posterior and the latent scale factor
# ----------------------------------------------------------------------------------------------

def _posterior(shape: tuple[int, ...], seed: int, dtype=torch.float64, logvar_low: float = -3.0,
               logvar_high: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, logvar) of a posterior: mean ~ 1.5 N(0, 1), logvar uniform in [logvar_low, logvar_high]."""
    generator = _generator(seed)
    mean = 1.5 * torch.randn(shape, generator=generator, dtype=dtype)
    logvar = logvar_low + (logvar_high - logvar_low) * torch.rand(shape, generator=generator, dtype=dtype)
    return mean, logvar


def _measured_latent_scale(latents: torch.Tensor, batch_size: int) -> float:
    """What VAE.measure_latent_scale returns for a VAE whose posterior mode is its input itself.

    The encoder is replaced by the identity, so the library's own accumulation (batch by batch, in
    float64, unbiased) measures exactly these latents."""
    channels = latents.shape[1]
    config = VAEConfig(image_channels=channels, latent_channels=channels, base_channels=8, channel_multipliers=(1,))
    vae = VAE(config).to(latents.dtype)
    vae.encode = lambda images: DiagonalGaussian(images, torch.zeros_like(images))  # an identity encoder
    return vae.measure_latent_scale(latents, batch_size=batch_size)


def checks_05(student) -> list[tuple[str, Callable[[], None]]]:
    def sample_random():
        _require(student, "reparameterised_sample")
        for seed, shape in ((70, (4, 4, 8, 8)), (72, (3, 2, 4, 6))):
            mean, logvar = _posterior(shape, seed)
            noise = torch.randn(shape, generator=_generator(seed + 1), dtype=torch.float64)  # what sample() draws
            expected = DiagonalGaussian(mean, logvar).sample(_generator(seed + 1))
            assert_close(student.reparameterised_sample(mean, logvar, noise), expected,
                         f"z = μ + σ ε of a posterior of shape {shape}", atol=1e-12, rtol=1e-12)

    def sample_clamped():
        _require(student, "reparameterised_sample")
        mean, logvar = _posterior((4, 4, 8, 8), 74, torch.float32, logvar_low=-80.0, logvar_high=80.0)
        noise = torch.randn(mean.shape, generator=_generator(75), dtype=torch.float32)
        for low, high in ((-30.0, 20.0), (-4.0, 2.0)):
            expected = DiagonalGaussian(mean, logvar, low, high).sample(_generator(75))
            assert_close(student.reparameterised_sample(mean, logvar, noise, low, high), expected,
                         f"z with log σ² in [-80, 80] and the clamp [{low:g}, {high:g}] (clamp log σ² before exp)",
                         atol=1e-5, rtol=1e-5)

    def sample_without_noise_is_mode():
        _require(student, "reparameterised_sample")
        mean, logvar = _posterior((4, 4, 8, 8), 76)
        z = student.reparameterised_sample(mean, logvar, torch.zeros_like(mean))
        assert_close(z, DiagonalGaussian(mean, logvar).mode(), "with ε = 0 the sample must be the mode μ itself",
                     atol=0.0, rtol=0.0)

    def sample_gradients():
        _require(student, "reparameterised_sample")
        # Some log-variances lie outside the clamp [-30, 20]: there the gradient must be 0, as the library's.
        mean, logvar = _posterior((3, 4, 4, 4), 77, logvar_low=-40.0, logvar_high=30.0)
        noise = torch.randn(mean.shape, generator=_generator(78), dtype=torch.float64)
        weights = torch.randn(mean.shape, generator=_generator(79), dtype=torch.float64)  # loss = Σ w · z
        mean_reference, logvar_reference = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
        (DiagonalGaussian(mean_reference, logvar_reference).sample(_generator(78)) * weights).sum().backward()
        mean, logvar = mean.requires_grad_(), logvar.requires_grad_()
        z = student.reparameterised_sample(mean, logvar, noise)
        if not isinstance(z, torch.Tensor) or not z.requires_grad:
            raise CheckFailed("z has no gradient: write it as μ + σ ε from mean and logvar themselves "
                              "(no .detach(), no torch.no_grad(), no new tensor built from their values)")
        (z * weights).sum().backward()
        for name, tensor, reference in (("μ", mean, mean_reference), ("log σ²", logvar, logvar_reference)):
            if tensor.grad is None:
                raise CheckFailed(f"no gradient reaches {name}: the sample must be computed from it")
            assert_close(tensor.grad, reference.grad, f"∂ loss / ∂ {name} (the gradient that trains the encoder)",
                         atol=1e-10, rtol=1e-10)

    def kl_random():
        _require(student, "kl_to_standard_normal")
        for seed, shape in ((80, (4, 4, 8, 8)), (81, (5, 16))):
            mean, logvar = _posterior(shape, seed)
            assert_close(student.kl_to_standard_normal(mean, logvar), DiagonalGaussian(mean, logvar).kl(),
                         f"KL per example, posterior of shape {shape} (summed over every non-batch dimension)",
                         atol=1e-10, rtol=1e-12)

    def kl_of_prior_is_zero():
        _require(student, "kl_to_standard_normal")
        zeros = torch.zeros(6, 4, 2, 2, dtype=torch.float64)
        assert_close(student.kl_to_standard_normal(zeros, zeros), torch.zeros(6, dtype=torch.float64),
                     "KL of N(0, I) to itself (μ = 0, log σ² = 0) must be 0 for each of the 6 examples", atol=1e-15)

    def kl_clamped():
        _require(student, "kl_to_standard_normal")
        mean, logvar = _posterior((4, 4, 8, 8), 82, torch.float32, logvar_low=-80.0, logvar_high=80.0)
        for low, high in ((-30.0, 20.0), (-4.0, 2.0)):
            assert_close(student.kl_to_standard_normal(mean, logvar, low, high),
                         DiagonalGaussian(mean, logvar, low, high).kl(),
                         f"KL with log σ² in [-80, 80] and the clamp [{low:g}, {high:g}] (clamp log σ² first, "
                         "and use the clamped value in both σ² and log σ²)", atol=1e-3, rtol=1e-5)

    def latent_scale_random():
        _require(student, "latent_scale_factor")
        latents = 0.3 + 2.5 * torch.randn(64, 4, 8, 8, generator=_generator(83))  # float32, like a VAE's output
        assert_close_number(student.latent_scale_factor(latents.clone()), _measured_latent_scale(latents, 16),
                            "1 / std of 64 latents (4, 8, 8)", rtol=1e-10, atol=0.0)

    def latent_scale_one_unbiased_scalar():
        _require(student, "latent_scale_factor")
        # 8 values, the two channels of very different spread: per-channel and biased answers are far off.
        latents = torch.randn(2, 2, 1, 2, generator=_generator(84), dtype=torch.float64)
        latents[:, 1] = 5.0 * latents[:, 1] + 1.0
        expected = _measured_latent_scale(latents, 256)
        actual = as_number(student.latent_scale_factor(latents.clone()),
                           "the latent scale factor (ONE std over every value of every latent, not one per channel)")
        flat = latents.flatten()
        if math.isclose(actual, 1.0 / float(flat.std(correction=0)), rel_tol=1e-9):
            raise CheckFailed(f"got 1 / the biased std, {actual:.8g}: divide by n - 1 (torch.std's default), "
                              f"expected {expected:.8g}")
        if math.isclose(actual, float(flat.std()), rel_tol=1e-9):
            raise CheckFailed(f"got the std itself, {actual:.8g}: the scale factor is 1 / std, expected {expected:.8g}")
        assert_close_number(actual, expected, "1 / std of 8 latent values", rtol=1e-12, atol=0.0)

    def latent_scale_in_float64():
        _require(student, "latent_scale_factor")
        latents = 3.0 + 0.7 * torch.randn(256, 4, 8, 8, generator=_generator(85))  # 65 536 float32 values
        assert_close_number(student.latent_scale_factor(latents.clone()), _measured_latent_scale(latents, 64),
                            "1 / std of 65 536 float32 latent values (convert to float64 before taking the std)",
                            rtol=1e-10, atol=0.0)

    return [("reparameterised sample z = μ + σ ε matches DiagonalGaussian.sample", sample_random),
            ("reparameterised sample clamps log σ² (default and custom bounds)", sample_clamped),
            ("with ε = 0 the sample is the mode μ", sample_without_noise_is_mode),
            ("gradients reach μ and log σ² (the point of the trick)", sample_gradients),
            ("KL to N(0, I) matches DiagonalGaussian.kl, (B, C, h, w) and (B, D)", kl_random),
            ("KL of the prior to itself is 0", kl_of_prior_is_zero),
            ("KL clamps log σ² (default and custom bounds)", kl_clamped),
            ("latent scale factor matches VAE.measure_latent_scale", latent_scale_random),
            ("latent scale factor: one scalar, unbiased std, 1 / std", latent_scale_one_unbiased_scalar),
            ("latent scale factor computed in float64", latent_scale_in_float64)]


# ----------------------------------------------------------------------------------------------
# 06 — patchify, unpatchify, modulate
# ----------------------------------------------------------------------------------------------

# The usual wrong orders, as einops patterns from images to tokens, and what each one gets wrong.
_WRONG_PATCH_ORDERS = {
    "b c (h p) (w q) -> b (h w) (c p q)":
        "the values inside a token are in the order (channel, row in patch, column in patch); the library "
        "puts the channel LAST, (row in patch, column in patch, channel): pixel (0, 0) of the patch with all "
        "its channels, then pixel (0, 1), …",
    "b c (h p) (w q) -> b (h w) (c q p)":
        "the values inside a token are in the order (channel, column in patch, row in patch); the library's "
        "is (row in patch, column in patch, channel), channel last",
    "b c (h p) (w q) -> b (h w) (q p c)":
        "inside a patch the pixels go column by column; the library goes row by row, "
        "(row in patch, column in patch, channel)",
    "b c (h p) (w q) -> b (w h) (p q c)":
        "the patches are numbered column by column; the library numbers them row by row (left to right, "
        "then top to bottom), the order of the position table",
}

_PATCH_CASES = {  # name: (image shape, patch size)
    "square": [((2, 3, 8, 8), 2)],
    "non-square": [((2, 4, 8, 12), 4), ((2, 4, 8, 12), 2), ((3, 1, 6, 4), 2)],
    "edge": [((2, 3, 4, 6), 1), ((1, 3, 4, 4), 4)],
}


def _describe_pixel(value: float, shape: tuple[int, ...]) -> str:
    """The pixel of an image of `shape` whose value, in torch.arange order, is `value`."""
    if not math.isfinite(value) or value != int(value) or not 0 <= int(value) < math.prod(shape):
        return f"the value {value:g}, which is not a pixel of the image"
    index = int(value)
    _, channels, height, width = shape
    image, rest = divmod(index, channels * height * width)
    channel, rest = divmod(rest, height * width)
    row, column = divmod(rest, width)
    return f"(image {image}, channel {channel}, row {row}, column {column})"


def _describe_entry(value: float, shape: tuple[int, ...]) -> str:
    """The token entry of tokens of `shape` (B, N, K) whose value, in torch.arange order, is `value`."""
    if not math.isfinite(value) or value != int(value) or not 0 <= int(value) < math.prod(shape):
        return f"the value {value:g}, which is not an entry of the tokens"
    index = int(value)
    _, tokens, entries = shape
    image, rest = divmod(index, tokens * entries)
    token, entry = divmod(rest, entries)
    return f"(image {image}, token {token}, entry {entry})"


def checks_06(student) -> list[tuple[str, Callable[[], None]]]:
    def compare_patchify(x: torch.Tensor, p: int, what: str) -> None:
        expected = dit.patchify(x, p)  # (B, N, p·p·C)
        actual = student.patchify(x.clone(), p)
        if not isinstance(actual, torch.Tensor):
            raise CheckFailed(f"{what}: expected a tensor, got {type(actual).__name__}")
        if actual.shape != expected.shape:
            raise CheckFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)} = (B, N, p·p·C)")
        if torch.equal(actual, expected):
            return
        for pattern, mistake in _WRONG_PATCH_ORDERS.items():
            if torch.equal(actual, rearrange(x, pattern, p=p, q=p)):
                raise CheckFailed(f"{what}: {mistake}")
        # Not a usual mistake: feed an image whose values say where they come from, and name one misplaced value.
        labelled = torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape)
        got, want = student.patchify(labelled, p), dit.patchify(labelled, p)
        wrong = (got != want).nonzero()
        if len(wrong) == 0:
            raise CheckFailed(f"{what}: differs from the library (patchify only moves values: it must match "
                              "bit for bit)")
        b, n, k = (int(i) for i in wrong[0])
        raise CheckFailed(f"{what}: token {n} (image {b}), entry {k} holds "
                          f"{_describe_pixel(float(got[b, n, k]), x.shape)} but should hold "
                          f"{_describe_pixel(float(want[b, n, k]), x.shape)}")

    def compare_unpatchify(tokens: torch.Tensor, p: int, shape: tuple[int, ...], what: str) -> None:
        _, channels, height, width = shape
        expected = dit.unpatchify(tokens, p, height, width, channels)  # (B, C, H, W)
        actual = student.unpatchify(tokens.clone(), p, height, width, channels)
        if not isinstance(actual, torch.Tensor):
            raise CheckFailed(f"{what}: expected a tensor, got {type(actual).__name__}")
        if actual.shape != expected.shape:
            raise CheckFailed(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)} = (B, C, H, W)")
        if torch.equal(actual, expected):
            return
        for pattern, mistake in _WRONG_PATCH_ORDERS.items():
            inverse = " -> ".join(reversed(pattern.split(" -> ")))
            if torch.equal(actual, rearrange(tokens, inverse, h=height // p, w=width // p, p=p, q=p)):
                raise CheckFailed(f"{what}: {mistake}")
        labelled = torch.arange(tokens.numel(), dtype=torch.float64).reshape(tokens.shape)
        got = student.unpatchify(labelled, p, height, width, channels)
        want = dit.unpatchify(labelled, p, height, width, channels)
        wrong = (got != want).nonzero()
        if len(wrong) == 0:
            raise CheckFailed(f"{what}: differs from the library (unpatchify only moves values: it must match "
                              "bit for bit)")
        b, c, i, j = (int(index) for index in wrong[0])
        raise CheckFailed(f"{what}: pixel (image {b}, channel {c}, row {i}, column {j}) holds "
                          f"{_describe_entry(float(got[b, c, i, j]), tokens.shape)} but should hold "
                          f"{_describe_entry(float(want[b, c, i, j]), tokens.shape)}")

    def images(shape: tuple[int, ...], seed: int) -> torch.Tensor:
        return torch.randn(shape, generator=_generator(seed))

    def patchify_cases(kind: str):
        _require(student, "patchify")
        for seed, (shape, p) in enumerate(_PATCH_CASES[kind], start=90):
            compare_patchify(images(shape, seed), p,
                             f"patchify of {shape[2]}×{shape[3]} images, C = {shape[1]}, p = {p}")

    def first_token():
        # Known value, no library involved: token 0 is the top-left 2×2 patch, pixel by pixel, channels last.
        _require(student, "patchify")
        x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
        tokens = student.patchify(x, 2)
        if not isinstance(tokens, torch.Tensor) or tokens.shape != (2, 6, 12):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise CheckFailed(f"patchify of (2, 3, 4, 6) with p = 2 gave {shape}, expected (2, 6, 12)")
        expected = torch.stack([x[0, :, 0, 0], x[0, :, 0, 1], x[0, :, 1, 0], x[0, :, 1, 1]]).flatten()  # (p·p·C,)
        if not torch.equal(tokens[0, 0], expected):
            for k in range(len(expected)):
                if tokens[0, 0, k] != expected[k]:
                    raise CheckFailed(f"token 0, entry {k} holds {_describe_pixel(float(tokens[0, 0, k]), x.shape)} "
                                      f"but should hold {_describe_pixel(float(expected[k]), x.shape)}: a token lists "
                                      "pixel (0, 0) of its patch with all its channels, then pixel (0, 1), … "
                                      "(row in patch, column in patch, channel)")
        compare_patchify(x, 2, "patchify of 4×6 images, C = 3, p = 2")

    def unpatchify_cases():
        _require(student, "unpatchify")
        for seed, (shape, p) in enumerate(sum(_PATCH_CASES.values(), []), start=100):
            batch, channels, height, width = shape
            tokens = torch.randn(batch, (height // p) * (width // p), p * p * channels, generator=_generator(seed))
            compare_unpatchify(tokens, p, shape, f"unpatchify to {height}×{width} images, C = {channels}, p = {p}")

    def round_trips():
        _require(student, "patchify", "unpatchify")
        for seed, (shape, p) in enumerate(sum(_PATCH_CASES.values(), []), start=110):
            batch, channels, height, width = shape
            x = images(shape, seed)
            back = student.unpatchify(student.patchify(x.clone(), p), p, height, width, channels)
            if not isinstance(back, torch.Tensor) or back.shape != x.shape or not torch.equal(back, x):
                raise CheckFailed(f"unpatchify(patchify(x)) is not x for {height}×{width} images, p = {p}: "
                                  "unpatchify must undo every step of patchify, in reverse order")
            tokens = torch.randn(batch, (height // p) * (width // p), p * p * channels, generator=_generator(seed + 50))
            again = student.patchify(student.unpatchify(tokens.clone(), p, height, width, channels), p)
            if not torch.equal(again, tokens):
                raise CheckFailed(f"patchify(unpatchify(tokens)) is not tokens for {height}×{width} images, p = {p}")

    def modulate_matches():
        _require(student, "modulate")
        x = torch.randn(2, 5, 8, generator=_generator(120), dtype=torch.float64)
        for what, shape in (("per example, (B, 1, D)", (2, 1, 8)), ("per token, (B, N, D)", (2, 5, 8))):
            shift = torch.randn(shape, generator=_generator(121), dtype=torch.float64)
            scale = torch.randn(shape, generator=_generator(122), dtype=torch.float64)
            assert_close(student.modulate(x, shift, scale), dit.modulate(x, shift, scale),
                         f"modulate with shift and scale {what}", atol=1e-12, rtol=1e-12)

    def modulate_zero_is_identity():
        _require(student, "modulate")
        x = torch.randn(2, 5, 8, generator=_generator(123))
        zeros = torch.zeros(2, 1, 8)
        result = student.modulate(x, zeros, zeros)
        if not isinstance(result, torch.Tensor) or result.shape != x.shape or not torch.equal(result, x):
            raise CheckFailed("a zero shift and scale must leave x unchanged (adaLN-Zero starts every block as "
                              "the identity): x · (1 + scale) + shift, not x · scale + shift")

    return [("patchify equals the library bit for bit, square 8×8, p = 2", lambda: patchify_cases("square")),
            ("patchify on non-square inputs (8×12 with p = 4 and 2, 6×4 with one channel)",
             lambda: patchify_cases("non-square")),
            ("patchify with p = 1 and with one patch per image", lambda: patchify_cases("edge")),
            ("the first token lists its pixels row by row, channels last", first_token),
            ("unpatchify equals the library bit for bit (square, non-square, p = 1, one patch)", unpatchify_cases),
            ("unpatchify(patchify(x)) = x and back, exactly", round_trips),
            ("modulate equals the library, shift and scale per example and per token", modulate_matches),
            ("zero modulation leaves x unchanged", modulate_zero_is_identity)]


# ----------------------------------------------------------------------------------------------
# 07 — guidance rescale and the Fréchet distance
# ----------------------------------------------------------------------------------------------

def _predictions(seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided, cond) of shape (4, 4, 8, 8), each example with its own spread, as after strong guidance."""
    generator = _generator(seed)
    cond_spread = torch.tensor([1.0, 0.7, 2.0, 0.3], dtype=dtype).view(4, 1, 1, 1)
    guided_spread = torch.tensor([1.5, 3.0, 0.5, 10.0], dtype=dtype).view(4, 1, 1, 1)
    channel_offset = torch.tensor([0.0, 0.5, -1.0, 2.0], dtype=dtype).view(1, 4, 1, 1)
    cond = cond_spread * torch.randn(4, 4, 8, 8, generator=generator, dtype=dtype)
    guided = guided_spread * torch.randn(4, 4, 8, 8, generator=generator, dtype=dtype) + channel_offset
    return guided, cond


def _features(count: int, dims: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """(count, dims) float32 correlated features: Gaussian noise through a random linear map, plus a shift."""
    generator = _generator(seed)
    mixing = torch.randn(dims, dims, generator=generator) / dims**0.5
    return torch.randn(count, dims, generator=generator) @ mixing + shift


def checks_07(student) -> list[tuple[str, Callable[[], None]]]:
    def rescale_matches():
        _require(student, "rescale_guidance")
        for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            guided, cond = _predictions(130, dtype)
            for phi in (0.25, 0.7, 1.0):
                assert_close(student.rescale_guidance(guided.clone(), cond.clone(), phi),
                             guidance.rescale_guidance(guided, cond, phi),
                             f"rescaled prediction, φ = {phi}, {dtype} "
                             "(std over each example's channels and positions)",
                             atol=tolerance, rtol=tolerance)

    def rescale_zero_is_plain_guidance():
        _require(student, "rescale_guidance")
        guided, cond = _predictions(131, torch.float32)
        result = student.rescale_guidance(guided.clone(), cond, 0.0)
        if not isinstance(result, torch.Tensor) or result.shape != guided.shape:
            raise CheckFailed("φ = 0: expected a tensor shaped like the guided prediction")
        if not torch.equal(result, guided):
            differing = int((result != guided).sum())
            raise CheckFailed(f"φ = 0 must return x_guided bit for bit; {differing} of {guided.numel()} entries differ "
                              "(x_final = φ · x_rescaled + (1 − φ) · x_guided: is φ on the right term?)")

    def rescale_one_matches_cond_std():
        _require(student, "rescale_guidance")
        guided, cond = _predictions(132)
        result = student.rescale_guidance(guided, cond, 1.0)
        if not isinstance(result, torch.Tensor) or result.shape != guided.shape:
            raise CheckFailed("φ = 1: expected a tensor shaped like the guided prediction")
        dims = (1, 2, 3)
        assert_close(result.std(dim=dims), cond.std(dim=dims),
                     "φ = 1: the std of each example must be that of its conditional prediction", atol=1e-12)

    def rescale_per_example():
        _require(student, "rescale_guidance")
        guided, cond = _predictions(133)
        before = student.rescale_guidance(guided.clone(), cond, 0.7)
        louder = guided.clone()
        louder[0] *= 10.0  # only example 0 changes
        after = student.rescale_guidance(louder, cond, 0.7)
        assert_close(after[1:], before[1:], "making example 0 ten times louder changed the other examples: "
                     "take the std per example, not over the whole batch", atol=1e-12)
        assert_close(after, guidance.rescale_guidance(louder, cond, 0.7),
                     "rescaled prediction with one loud example (std over every non-batch dimension)", atol=1e-12)

    def rescale_no_guidance():
        _require(student, "rescale_guidance")
        _, cond = _predictions(134)
        for phi in (0.3, 1.0):
            assert_close(student.rescale_guidance(cond.clone(), cond, phi), cond,
                         f"x_guided = x_cond (guidance scale 1), φ = {phi}: nothing to rescale, x_cond comes back",
                         atol=1e-12, rtol=1e-12)

    def statistics():
        _require(student, "mean_and_covariance")
        features = _features(50, 6, seed=140, shift=0.5)
        mean, covariance = student.mean_and_covariance(features.clone())
        expected_mean, expected_covariance = metrics.gaussian_statistics(features)
        for name, actual, expected in (("μ", mean, expected_mean), ("Σ", covariance, expected_covariance)):
            if isinstance(actual, torch.Tensor) and actual.dtype != torch.float64:
                raise CheckFailed(f"{name} of float32 features: dtype {actual.dtype}, expected torch.float64 "
                                  "(convert the features with .double() first)")
            assert_close(actual, expected, f"{name} of 50 features in 6 dimensions (Σ unbiased: divide by N - 1)",
                         atol=1e-12, rtol=1e-10)

    def distance_matches():
        _require(student, "frechet_distance")
        a = _features(300, 8, seed=141)
        b = _features(200, 8, seed=142, shift=0.3)
        assert_close_number(student.frechet_distance(a.clone(), b.clone()), metrics.frechet_distance(a, b),
                            "d² between two correlated sets, N = 300 and M = 200, D = 8 (in float64)",
                            atol=1e-10, rtol=1e-8)

    def distance_identical():
        _require(student, "frechet_distance")
        a = _features(100, 8, seed=143)
        distance = as_number(student.frechet_distance(a.clone(), a.clone()), "d² of a set to itself")
        if not math.isfinite(distance):
            raise CheckFailed(f"d² of a set to itself is {distance} (clamp eigenvalues at 0 before the square root)")
        if distance < 0.0:
            raise CheckFailed(f"d² of a set to itself is {distance:.3g} < 0: clamp the result at 0, "
                              "a squared distance cannot be negative")
        scale = float(metrics.gaussian_statistics(a)[1].trace())
        if distance > 1e-9 * scale:
            raise CheckFailed(f"d² of a set to itself is {distance:.3g}, expected 0 "
                              f"(up to rounding, < {1e-9 * scale:.1g})")

    def distance_shift():
        _require(student, "frechet_distance")
        a = _features(120, 5, seed=144).double()
        shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
        assert_close_number(student.frechet_distance(a.clone(), a + shift), float(shift.pow(2).sum()),
                            "d² between a set and its copy shifted by v must be |v|² (the covariances cancel)",
                            atol=1e-8, rtol=1e-9)

    def distance_one_dimension():
        _require(student, "frechet_distance")
        a = 2.0 * torch.randn(40, 1, generator=_generator(145), dtype=torch.float64) + 1.0
        b = 0.5 * torch.randn(70, 1, generator=_generator(146), dtype=torch.float64) - 1.0
        expected = float((a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2)
        assert_close_number(student.frechet_distance(a.clone(), b.clone()), expected,
                            "in one dimension d² = (μ_a − μ_b)² + (σ_a − σ_b)² (σ unbiased)", atol=1e-10, rtol=1e-9)

    def distance_singular():
        _require(student, "frechet_distance")
        a = _features(6, 16, seed=147)
        b = _features(9, 16, seed=148, shift=0.2)
        try:
            distance = student.frechet_distance(a.clone(), b.clone())
        except torch.linalg.LinAlgError as error:  # usually a NaN from √ of a negative eigenvalue reached it
            raise CheckFailed(f"{str(error).split(':')[0]} failed: with fewer samples than features "
                              "Σ is singular and rounding makes some of its eigenvalues tiny negatives; clamp "
                              "them at 0 before every square root") from None
        assert_close_number(distance, metrics.frechet_distance(a, b),
                            "d² with fewer samples than features (singular Σ: clamp eigenvalues at 0 before √)",
                            atol=1e-6, rtol=1e-6)

    return [("guidance rescale equals the library, φ = 0.25, 0.7, 1 (float64 and float32)", rescale_matches),
            ("guidance rescale at φ = 0 returns the guided prediction bit for bit", rescale_zero_is_plain_guidance),
            ("guidance rescale at φ = 1 gives each example the std of its conditional prediction",
             rescale_one_matches_cond_std),
            ("guidance rescale is per example", rescale_per_example),
            ("guidance rescale of an unguided prediction (guided = cond) returns it", rescale_no_guidance),
            ("mean and covariance equal the library's gaussian_statistics", statistics),
            ("Fréchet distance equals the library on two correlated sets", distance_matches),
            ("Fréchet distance of a set to itself is 0, never negative", distance_identical),
            ("Fréchet distance of a shifted copy is |shift|²", distance_shift),
            ("Fréchet distance in one dimension has its closed form", distance_one_dimension),
            ("Fréchet distance with fewer samples than features (singular covariance)", distance_singular)]


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    file_name: str
    topic: str
    checks: Callable
    library: str = "toydiff"  # what the checks compare with, for the header line


EXERCISES = {
    "01": Exercise("ex01_forward_process.py", "the forward process: ᾱ_t and add_noise", checks_01),
    "02": Exercise("ex02_ddpm_step.py", "one DDPM step: posterior mean and variance", checks_02),
    "03": Exercise("ex03_ddim_step.py", "one DDIM step: σ(η), eq. 12, inversion", checks_03),
    "04": Exercise("ex04_guidance.py", "guidance: classifier-free combination and classifier gradient", checks_04),
    "05": Exercise("ex05_vae.py", "the VAE: reparameterised sample, KL to N(0, I), latent scale factor", checks_05,
                   "imagediff.vae"),
    "06": Exercise("ex06_patchify.py", "DiT tokens: patchify, unpatchify and adaLN's modulate", checks_06,
                   "imagediff.dit"),
    "07": Exercise("ex07_image_guidance.py", "guidance rescale and the Fréchet distance", checks_07,
                   "toydiff.guidance and imagediff.metrics"),
}


def load_student_file(path: Path, name: str):
    """Import a Python file by its path (it need not be inside a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_exercise(number: str, path: Path | None = None, out=sys.stdout) -> int:
    """Run every check of exercise ``number`` on ``path``; print one line each.  Returns the exit status."""
    exercise = EXERCISES[number]
    path = Path(path) if path is not None else HERE / exercise.file_name
    print(f"Exercise {number} — {exercise.topic}\nchecking {path} against {exercise.library}\n", file=out)
    if not path.is_file():
        print(f"FAIL  no such file: {path}", file=out)
        return 1
    try:
        student = load_student_file(path, f"student_exercise_{number}")
    except Exception as error:
        print(f"FAIL  could not import {path}: {type(error).__name__}: {error}", file=out)
        return 1
    results = [run_check(name, check) for name, check in exercise.checks(student)]
    for result in results:
        print(f"PASS  {result.name}" if result.passed else f"FAIL  {result.name}\n      {result.reason}", file=out)
    passed = sum(result.passed for result in results)
    verdict = "all checks pass" if passed == len(results) else "keep going"
    print(f"\n{passed}/{len(results)} checks passed: {verdict}", file=out)
    return 0 if passed == len(results) else 1


def normalise_number(text: str) -> str:
    digits = text.lower().removeprefix("ex")
    if not digits.isdigit() or f"{int(digits):02d}" not in EXERCISES:
        raise ValueError(f"unknown exercise {text!r}; expected one of {', '.join(EXERCISES)}")
    return f"{int(digits):02d}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) > 2 or argv[0] in ("-h", "--help"):
        asked = bool(argv) and argv[0] in ("-h", "--help")
        print(__doc__.strip(), file=sys.stdout if asked else sys.stderr)
        print("\nexercises:\n" + "\n".join(f"  {n}  {e.topic}  ({e.file_name})" for n, e in EXERCISES.items()),
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    try:
        number = normalise_number(argv[0])
    except ValueError as error:
        print(f"check: error: {error}", file=sys.stderr)
        return 2
    return check_exercise(number, Path(argv[1]) if len(argv) > 1 and argv[1] else None)


if __name__ == "__main__":
    sys.exit(main())
