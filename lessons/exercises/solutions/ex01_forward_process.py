"""Reference answer to exercise 01 — the forward process.

    α_t = 1 - β_t,     ᾱ_t = α_0 · α_1 · … · α_t
    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε                            (DDPM eq. 4)

The library's version is ``toydiff.schedules.NoiseSchedule`` (``alphas_cumprod`` and ``add_noise``),
which also accepts t = -1 and per-frame timesteps.
"""
import torch


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t for every timestep.  betas: (T,) float64.  Returns (T,) float64."""
    # 1. α_t = 1 - β_t.
    alphas = 1.0 - betas
    # 2. ᾱ_t = Π_{s ≤ t} α_s.
    return torch.cumprod(alphas, dim=0)


def add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.  x0, noise: (B, D); t: (B,) int64.  Returns (B, D)."""
    # 1. ᾱ_t of each example.
    alpha_bar = alphas_cumprod[t]                                   # (B,)
    # 2. (B,) -> (B, 1) in x0's dtype.
    alpha_bar = alpha_bar[:, None].to(x0.dtype)                     # (B, 1)
    # 3. DDPM eq. 4.
    return alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise  # (B, D)
