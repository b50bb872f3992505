"""Checks of exercise 05, the VAE's posterior and the latent scale factor.

Compared with ``imagediff.vae.DiagonalGaussian`` (sample with a seeded generator, mode, kl) and with
``imagediff.vae.latent_scale_of`` (the function ``VAE.measure_latent_scale`` takes its scale from),
on random inputs, on log-variances far outside the clamp range, on the prior itself, and through the
gradients that train the encoder."""
from __future__ import annotations

import math
from typing import Callable

import torch

from imagediff.vae import DiagonalGaussian, latent_scale_of

from .assertions import CheckFailed, as_number, assert_close, assert_close_number, require
from .inputs import seeded_generator

TOPIC = "the VAE: reparameterised sample, KL to N(0, I), latent scale factor"
LIBRARY = "imagediff.vae"


def _posterior(shape: tuple[int, ...], seed: int, dtype=torch.float64, logvar_low: float = -3.0,
               logvar_high: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, logvar) of a posterior: mean ~ 1.5 N(0, 1), logvar uniform in [logvar_low, logvar_high]."""
    generator = seeded_generator(seed)
    mean = 1.5 * torch.randn(shape, generator=generator, dtype=dtype)
    logvar = logvar_low + (logvar_high - logvar_low) * torch.rand(shape, generator=generator, dtype=dtype)
    return mean, logvar


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def sample_random():
        require(student, "reparameterised_sample")
        for seed, shape in ((70, (4, 4, 8, 8)), (72, (3, 2, 4, 6))):
            mean, logvar = _posterior(shape, seed)
            noise = torch.randn(shape, generator=seeded_generator(seed + 1), dtype=torch.float64)  # what sample() draws
            expected = DiagonalGaussian(mean, logvar).sample(seeded_generator(seed + 1))
            assert_close(student.reparameterised_sample(mean, logvar, noise), expected,
                         f"z = μ + σ ε of a posterior of shape {shape}", atol=1e-12, rtol=1e-12)

    def sample_clamped():
        require(student, "reparameterised_sample")
        mean, logvar = _posterior((4, 4, 8, 8), 74, torch.float32, logvar_low=-80.0, logvar_high=80.0)
        noise = torch.randn(mean.shape, generator=seeded_generator(75), dtype=torch.float32)
        for low, high in ((-30.0, 20.0), (-4.0, 2.0)):
            expected = DiagonalGaussian(mean, logvar, low, high).sample(seeded_generator(75))
            assert_close(student.reparameterised_sample(mean, logvar, noise, low, high), expected,
                         f"z with log σ² in [-80, 80] and the clamp [{low:g}, {high:g}] (clamp log σ² before exp)",
                         atol=1e-5, rtol=1e-5)

    def sample_without_noise_is_mode():
        require(student, "reparameterised_sample")
        mean, logvar = _posterior((4, 4, 8, 8), 76)
        z = student.reparameterised_sample(mean, logvar, torch.zeros_like(mean))
        assert_close(z, DiagonalGaussian(mean, logvar).mode(), "with ε = 0 the sample must be the mode μ itself",
                     atol=0.0, rtol=0.0)

    def sample_gradients():
        require(student, "reparameterised_sample")
        # Some log-variances lie outside the clamp [-30, 20]: there the gradient must be 0, as the library's.
        mean, logvar = _posterior((3, 4, 4, 4), 77, logvar_low=-40.0, logvar_high=30.0)
        noise = torch.randn(mean.shape, generator=seeded_generator(78), dtype=torch.float64)
        weights = torch.randn(mean.shape, generator=seeded_generator(79), dtype=torch.float64)  # loss = Σ w · z
        mean_reference, logvar_reference = mean.clone().requires_grad_(), logvar.clone().requires_grad_()
        (DiagonalGaussian(mean_reference, logvar_reference).sample(seeded_generator(78)) * weights).sum().backward()
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
        require(student, "kl_to_standard_normal")
        for seed, shape in ((80, (4, 4, 8, 8)), (81, (5, 16))):
            mean, logvar = _posterior(shape, seed)
            assert_close(student.kl_to_standard_normal(mean, logvar), DiagonalGaussian(mean, logvar).kl(),
                         f"KL per example, posterior of shape {shape} (summed over every non-batch dimension)",
                         atol=1e-10, rtol=1e-12)

    def kl_of_prior_is_zero():
        require(student, "kl_to_standard_normal")
        zeros = torch.zeros(6, 4, 2, 2, dtype=torch.float64)
        assert_close(student.kl_to_standard_normal(zeros, zeros), torch.zeros(6, dtype=torch.float64),
                     "KL of N(0, I) to itself (μ = 0, log σ² = 0) must be 0 for each of the 6 examples", atol=1e-15)

    def kl_clamped():
        require(student, "kl_to_standard_normal")
        mean, logvar = _posterior((4, 4, 8, 8), 82, torch.float32, logvar_low=-80.0, logvar_high=80.0)
        for low, high in ((-30.0, 20.0), (-4.0, 2.0)):
            assert_close(student.kl_to_standard_normal(mean, logvar, low, high),
                         DiagonalGaussian(mean, logvar, low, high).kl(),
                         f"KL with log σ² in [-80, 80] and the clamp [{low:g}, {high:g}] (clamp log σ² first, "
                         "and use the clamped value in both σ² and log σ²)", atol=1e-3, rtol=1e-5)

    def latent_scale_random():
        require(student, "latent_scale_factor")
        latents = 0.3 + 2.5 * torch.randn(64, 4, 8, 8, generator=seeded_generator(83))  # float32, like a VAE's output
        assert_close_number(student.latent_scale_factor(latents.clone()), latent_scale_of(latents),
                            "1 / std of 64 latents (4, 8, 8)", rtol=1e-10, atol=0.0)

    def latent_scale_one_unbiased_scalar():
        require(student, "latent_scale_factor")
        # 8 values, the two channels of very different spread: per-channel and biased answers are far off.
        latents = torch.randn(2, 2, 1, 2, generator=seeded_generator(84), dtype=torch.float64)
        latents[:, 1] = 5.0 * latents[:, 1] + 1.0
        expected = latent_scale_of(latents)
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
        require(student, "latent_scale_factor")
        latents = 3.0 + 0.7 * torch.randn(256, 4, 8, 8, generator=seeded_generator(85))  # 65 536 float32 values
        assert_close_number(student.latent_scale_factor(latents.clone()), latent_scale_of(latents),
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
