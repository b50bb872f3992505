"""Reference answer to exercise 05 — the posterior of the VAE, and the latent scale factor.

    z = μ + σ ε,   σ = exp(½ clamp(log σ²))                    (reparameterisation trick)
    KL(N(μ, σ²) ‖ N(0, 1)) = ½ (μ² + σ² − 1 − log σ²)          (summed over latent dimensions)
    latent_scale = 1 / std(z)                                  (one scalar, unbiased, float64)

The library's versions are ``imagediff.vae.DiagonalGaussian`` (``sample``, ``mode``, ``kl``), which
draws ε itself from a generator, and ``imagediff.vae.latent_scale_of``, which
``VAE.measure_latent_scale`` applies to the latents of images it encodes batch by batch.
"""
import torch


def reparameterised_sample(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor,
                           logvar_min: float = -30.0, logvar_max: float = 20.0) -> torch.Tensor:
    """z = μ + σ ε.  mean, logvar, noise: (B, C, h, w).  Returns (B, C, h, w)."""
    # 1. σ from the clamped log-variance.
    std = torch.exp(0.5 * logvar.clamp(logvar_min, logvar_max))  # (B, C, h, w)
    # 2. The reparameterisation trick.
    return mean + std * noise  # (B, C, h, w)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor,
                          logvar_min: float = -30.0, logvar_max: float = 20.0) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per example.  mean, logvar: (B, ...).  Returns (B,)."""
    # 1. The clamped log-variance, and σ².
    logvar = logvar.clamp(logvar_min, logvar_max)  # (B, ...)
    var = logvar.exp()  # (B, ...)
    # 2. The KL of each dimension.
    per_dimension = 0.5 * (mean.pow(2) + var - 1.0 - logvar)  # (B, ...)
    # 3. Summed over everything but the batch.
    return per_dimension.flatten(start_dim=1).sum(dim=1)  # (B,)


def latent_scale_factor(latents: torch.Tensor) -> float:
    """1 / std of all values.  latents: (N, C, h, w).  Returns a Python float."""
    # 1. One unbiased std over the whole tensor, in float64.
    std = latents.double().std()  # scalar
    # 2. The scale that makes it 1.
    return (1.0 / std).item()
