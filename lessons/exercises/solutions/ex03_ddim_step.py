"""Reference answer to exercise 03 — one DDIM step.

    x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)
    σ_t(η) = η sqrt((1 - ᾱ_prev) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_prev)                    (DDIM eq. 16)
    x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε̂ + σ z                         (DDIM eq. 12)

The library's version is ``toydiff.samplers.ddim_step`` (any prediction type, per-frame timesteps,
optional clipping of x̂_0).
"""
import torch


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1) in like's dtype, so it scales each example's coordinates."""
    return values[:, None].to(like.dtype)


def ddim_sigma(schedule, t: torch.Tensor, t_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """σ_t(η) of DDIM eq. 16, (B,) float64."""
    a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    if eta == 0.0:
        # 1. Exactly zero, also at t = -1 where the formula would be 0/0.
        return torch.zeros_like(a)
    # 2. Eq. 16, clamped against rounding before the square root.
    return eta * ((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)).clamp_min(0.0).sqrt()


def ddim_step(schedule, epsilon: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, x_t: torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step from t to t_prev (eq. 12).  epsilon, x_t, noise: (B, D); t, t_prev: (B,).  Returns (B, D)."""
    a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    # 1. x̂_0.
    x0 = (x_t - per_example((1.0 - a).sqrt(), x_t) * epsilon) / per_example(a.sqrt(), x_t)
    # 2. σ and the direction coefficient, real for η in [0, 1].
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    direction = (1.0 - a_prev - sigma**2).clamp_min(0.0).sqrt()
    # 3. Eq. 12.
    x_prev = per_example(a_prev.sqrt(), x_t) * x0 + per_example(direction, x_t) * epsilon
    if eta > 0.0:
        x_prev = x_prev + per_example(sigma, x_t) * noise
    return x_prev
