"""Exercise 02 — one step of DDPM sampling (lesson 02).

Sampling runs the forward process backwards.  Given x_t and the network's noise estimate ε̂, one
step of DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) is:

    x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)                             (invert eq. 4)
    μ̃_t = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) · x̂_0  +  sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t   (eq. 7)
    β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)                                    (eq. 7)
    x_{t-1} = μ̃_t + sqrt(β̃_t) z,   z ~ N(0, I),   but no noise at all on the last step, t = 0.

μ̃_t and β̃_t are the mean and variance of the posterior q(x_{t-1} | x_t, x_0): where x_{t-1} was, given
where the point is now and where it started.

Your task: write ``posterior_mean_variance`` and ``ddpm_step``.  Every ``todo(...)`` is an expression
to replace.  What the schedule gives you (all float64, shaped like t):

    schedule.alpha_bar(t)   ᾱ_t;  t may be a tensor, and t - 1 = -1 gives ᾱ_{-1} = 1 (no noise)
    schedule.beta(t)        β_t   (α_t = 1 - β_t)

and ``per_example(values, like)`` turns a (B,) float64 tensor into (B, 1) in the dtype of ``like``.

Check your work (from the repository root):

    cp lessons/exercises/ex02_ddpm_step.py lessons/exercises/ex02_work.py
    python -m lessons.exercises.check 02 lessons/exercises/ex02_work.py

The checker compares you with ``toydiff.samplers.ddpm_step`` and ``NoiseSchedule.posterior_variance``,
including at t = 0 (no noise may be added) and t = T-1.  Reference: ``solutions/ex02_ddpm_step.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1) in like's dtype, so it scales each example's coordinates."""
    return values[:, None].to(like.dtype)


def posterior_mean_variance(schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean μ̃_t (B, D) and variance β̃_t (B,) float64 of q(x_{t-1} | x_t, x_0)  (DDPM eq. 7).

    schedule: a toydiff NoiseSchedule;  x0, x_t: (B, D);  t: (B,) int64 in 0 … T-1.
    """
    a = schedule.alpha_bar(t)           # ᾱ_t,      (B,) float64
    a_prev = schedule.alpha_bar(t - 1)  # ᾱ_{t-1},  (B,) float64; 1 where t = 0
    beta = schedule.beta(t)             # β_t,      (B,) float64
    # 1. The two coefficients of eq. 7, each (B,) float64.
    coef_x0 = todo("sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t)")
    coef_xt = todo("sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t), with α_t = 1 - β_t")
    # 2. μ̃_t = coef_x0 · x_0 + coef_xt · x_t   (use per_example to shape the coefficients).
    mean = todo("the posterior mean")
    # 3. β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t).
    variance = todo("the posterior variance")
    return mean, variance


def ddpm_step(schedule, epsilon: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """One DDPM step x_t -> x_{t-1} from the model's noise estimate.

    epsilon: (B, D) the model's ε̂(x_t, t);  t: (B,) int64;  x_t: (B, D);  noise: (B, D) the z to add.
    Returns x_{t-1}, (B, D), in x_t's dtype.
    """
    a = schedule.alpha_bar(t)  # (B,) float64
    # 1. The clean point the model sees in x_t: x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t).
    x0 = todo("x̂_0 from x_t and ε̂")
    # 2. The posterior of step 1.
    mean, variance = posterior_mean_variance(schedule, x0, x_t, t)
    # 3. Fresh noise scaled by sqrt(β̃_t), except on the last step (t = 0), which returns the mean.
    #    Hint: a (B,) mask (t > 0) turned into float64 multiplies the noise term.  (β̃_0 = 0 already;
    #    the mask states the rule, and keeps it true for DDPM's other choice of variance, β_t.)
    return todo("x_{t-1} = μ̃_t + sqrt(β̃_t) z, with z only where t > 0")
