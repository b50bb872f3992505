"""Check an exercise against the library:  python -m lessons.exercises.check NN [FILE]

    python -m lessons.exercises.check 01                                   # the blank exercise file
    python -m lessons.exercises.check 01 lessons/exercises/ex01_work.py    # your copy
    python -m lessons.exercises.check 02 lessons/exercises/solutions/ex02_ddpm_step.py

FILE is imported by its path, its functions are run on seeded random inputs and on edge cases, and
every result is compared with the reference implementation in ``toydiff``.  One line per check says
PASS or FAIL and why; the exit status is 0 only when every check passes (1 otherwise, 2 for a bad
command line).
"""
from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

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
# The command line
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Exercise:
    file_name: str
    topic: str
    checks: Callable


EXERCISES = {
    "01": Exercise("ex01_forward_process.py", "the forward process: ᾱ_t and add_noise", checks_01),
    "02": Exercise("ex02_ddpm_step.py", "one DDPM step: posterior mean and variance", checks_02),
    "03": Exercise("ex03_ddim_step.py", "one DDIM step: σ(η), eq. 12, inversion", checks_03),
    "04": Exercise("ex04_guidance.py", "guidance: classifier-free combination and classifier gradient", checks_04),
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
    print(f"Exercise {number} — {exercise.topic}\nchecking {path} against toydiff\n", file=out)
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
