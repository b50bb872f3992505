"""Reference answer to exercise 02 — one step of DDPM sampling.

    x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)
    μ̃_t = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) · x̂_0 + sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t    (DDPM eq. 7)
    β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)
    x_{t-1} = μ̃_t + sqrt(β̃_t) z,  no noise at t = 0                               (Algorithm 2)

The library's version is ``toydiff.samplers.ddpm_step`` (any prediction type, "small" or "large" variance).
"""
import torch


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1) in like's dtype, so it scales each example's coordinates."""
    return values[:, None].to(like.dtype)


def posterior_mean_variance(schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean μ̃_t (B, D) and variance β̃_t (B,) float64 of q(x_{t-1} | x_t, x_0)  (DDPM eq. 7)."""
    a = schedule.alpha_bar(t)
    a_prev = schedule.alpha_bar(t - 1)
    beta = schedule.beta(t)
    # 1. The two coefficients of eq. 7.
    coef_x0 = a_prev.sqrt() * beta / (1.0 - a)
    coef_xt = (1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a)
    # 2. μ̃_t.
    mean = per_example(coef_x0, x0) * x0 + per_example(coef_xt, x_t) * x_t
    # 3. β̃_t.
    variance = beta * (1.0 - a_prev) / (1.0 - a)
    return mean, variance


def ddpm_step(schedule, epsilon: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One DDPM step x_t -> x_{t-1}.  epsilon, x_t, noise: (B, D); t: (B,) int64.  Returns (B, D)."""
    a = schedule.alpha_bar(t)
    # 1. x̂_0 (eq. 4 solved for x_0).
    x0 = (x_t - per_example((1.0 - a).sqrt(), x_t) * epsilon) / per_example(a.sqrt(), x_t)
    # 2. The posterior.
    mean, variance = posterior_mean_variance(schedule, x0, x_t, t)
    # 3. Noise only where t > 0: the last step returns the mean (β̃_0 = 0 already; the mask also
    #    covers DDPM's other variance choice, β_t, which is not 0 at t = 0).
    not_last = (t > 0).to(torch.float64)
    return mean + per_example(not_last * variance.sqrt(), x_t) * noise
