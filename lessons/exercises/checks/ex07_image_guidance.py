"""Checks of exercise 07, guidance rescale (Lin et al. 2024) and the Fréchet distance.

Compared with ``toydiff.guidance.rescale_guidance`` and ``imagediff.metrics``, and with what is known
without them: φ = 0 and φ = 1, the std taken per example, the distance of a set to itself (0, never
negative), of a shifted copy (|shift|²), in one dimension, and with a singular covariance."""
from __future__ import annotations

import math
from typing import Callable

import torch

from imagediff import metrics
from toydiff import guidance

from .assertions import CheckFailed, as_number, assert_close, assert_close_number, require
from .inputs import seeded_generator

TOPIC = "guidance rescale and the Fréchet distance"
LIBRARY = "toydiff.guidance and imagediff.metrics"


def _predictions(seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided, cond) of shape (4, 4, 8, 8), each example with its own spread, as after strong guidance."""
    generator = seeded_generator(seed)
    cond_spread = torch.tensor([1.0, 0.7, 2.0, 0.3], dtype=dtype).view(4, 1, 1, 1)
    guided_spread = torch.tensor([1.5, 3.0, 0.5, 10.0], dtype=dtype).view(4, 1, 1, 1)
    channel_offset = torch.tensor([0.0, 0.5, -1.0, 2.0], dtype=dtype).view(1, 4, 1, 1)
    cond = cond_spread * torch.randn(4, 4, 8, 8, generator=generator, dtype=dtype)
    guided = guided_spread * torch.randn(4, 4, 8, 8, generator=generator, dtype=dtype) + channel_offset
    return guided, cond


def _features(count: int, dims: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """(count, dims) float32 correlated features: Gaussian noise through a random linear map, plus a shift."""
    generator = seeded_generator(seed)
    mixing = torch.randn(dims, dims, generator=generator) / dims**0.5
    return torch.randn(count, dims, generator=generator) @ mixing + shift


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def rescale_matches():
        require(student, "rescale_guidance")
        for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            guided, cond = _predictions(130, dtype)
            for phi in (0.25, 0.7, 1.0):
                assert_close(student.rescale_guidance(guided.clone(), cond.clone(), phi),
                             guidance.rescale_guidance(guided, cond, phi),
                             f"rescaled prediction, φ = {phi}, {dtype} "
                             "(std over each example's channels and positions)",
                             atol=tolerance, rtol=tolerance)

    def rescale_zero_is_plain_guidance():
        require(student, "rescale_guidance")
        guided, cond = _predictions(131, torch.float32)
        result = student.rescale_guidance(guided.clone(), cond, 0.0)
        if not isinstance(result, torch.Tensor) or result.shape != guided.shape:
            raise CheckFailed("φ = 0: expected a tensor shaped like the guided prediction")
        if not torch.equal(result, guided):
            differing = int((result != guided).sum())
            raise CheckFailed(f"φ = 0 must return x_guided bit for bit; {differing} of {guided.numel()} entries differ "
                              "(x_final = φ · x_rescaled + (1 − φ) · x_guided: is φ on the right term?)")

    def rescale_one_matches_cond_std():
        require(student, "rescale_guidance")
        guided, cond = _predictions(132)
        result = student.rescale_guidance(guided, cond, 1.0)
        if not isinstance(result, torch.Tensor) or result.shape != guided.shape:
            raise CheckFailed("φ = 1: expected a tensor shaped like the guided prediction")
        dims = (1, 2, 3)
        assert_close(result.std(dim=dims), cond.std(dim=dims),
                     "φ = 1: the std of each example must be that of its conditional prediction", atol=1e-12)

    def rescale_per_example():
        require(student, "rescale_guidance")
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
        require(student, "rescale_guidance")
        _, cond = _predictions(134)
        for phi in (0.3, 1.0):
            assert_close(student.rescale_guidance(cond.clone(), cond, phi), cond,
                         f"x_guided = x_cond (guidance scale 1), φ = {phi}: nothing to rescale, x_cond comes back",
                         atol=1e-12, rtol=1e-12)

    def statistics():
        require(student, "mean_and_covariance")
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
        require(student, "frechet_distance")
        a = _features(300, 8, seed=141)
        b = _features(200, 8, seed=142, shift=0.3)
        assert_close_number(student.frechet_distance(a.clone(), b.clone()), metrics.frechet_distance(a, b),
                            "d² between two correlated sets, N = 300 and M = 200, D = 8 (in float64)",
                            atol=1e-10, rtol=1e-8)

    def distance_identical():
        require(student, "frechet_distance")
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
        require(student, "frechet_distance")
        a = _features(120, 5, seed=144).double()
        shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
        assert_close_number(student.frechet_distance(a.clone(), a + shift), float(shift.pow(2).sum()),
                            "d² between a set and its copy shifted by v must be |v|² (the covariances cancel)",
                            atol=1e-8, rtol=1e-9)

    def distance_one_dimension():
        require(student, "frechet_distance")
        a = 2.0 * torch.randn(40, 1, generator=seeded_generator(145), dtype=torch.float64) + 1.0
        b = 0.5 * torch.randn(70, 1, generator=seeded_generator(146), dtype=torch.float64) - 1.0
        expected = float((a.mean() - b.mean()) ** 2 + (a.std() - b.std()) ** 2)
        assert_close_number(student.frechet_distance(a.clone(), b.clone()), expected,
                            "in one dimension d² = (μ_a − μ_b)² + (σ_a − σ_b)² (σ unbiased)", atol=1e-10, rtol=1e-9)

    def distance_singular():
        require(student, "frechet_distance")
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
