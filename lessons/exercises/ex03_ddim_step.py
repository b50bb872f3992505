"""Exercise 03 — one DDIM step (lesson 03).

DDIM (Song et al. 2021) samples the *same* trained model as DDPM, through a non-Markovian forward
process with the same marginals q(x_t | x_0).  One step from timestep t to an earlier t_prev (any
earlier one: that is how DDIM skips steps) is eq. 12 of the paper, written in our ᾱ notation:

    x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)                                   "predicted x_0"
    σ_t(η) = η · sqrt((1 - ᾱ_prev) / (1 - ᾱ_t)) · sqrt(1 - ᾱ_t / ᾱ_prev)            (eq. 16)
    x_prev = sqrt(ᾱ_prev) x̂_0  +  sqrt(1 - ᾱ_prev - σ²) ε̂  +  σ z                (eq. 12)

η = 0 is the deterministic DDIM sampler; η = 1 with t_prev = t - 1 is exactly the DDPM step.
(The DDIM paper writes ᾱ as α; same quantity.)  The same formula with t_prev > t moves *up* the
noise levels: that is DDIM inversion, which starts from clean data at t = -1 (ᾱ = 1).

Your task: write ``ddim_sigma`` and ``ddim_step``.  Two numerical traps (docs/pitfalls.md, pitfall 5):
- with η = 0, σ must be exactly 0 even where 1 - ᾱ_t = 0 (t = -1): 0 / 0 is NaN, 0 · NaN too;
- 1 - ᾱ_prev - σ² can come out as -1e-17 from rounding: clamp it at 0 before the square root.

What the schedule gives you: ``schedule.alpha_bar(t)`` (float64, shaped like t; t = -1 gives 1), and
``per_example(values, like)`` turns (B,) float64 into (B, 1) in like's dtype.

Check your work:  python -m lessons.exercises.check 03 lessons/exercises/ex03_work.py
(compared with ``toydiff.samplers.ddim_step`` / ``ddim_sigma`` and ``ddpm_step``).
Reference: ``solutions/ex03_ddim_step.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1) in like's dtype, so it scales each example's coordinates."""
    return values[:, None].to(like.dtype)


def ddim_sigma(schedule, t: torch.Tensor, t_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """σ_t(η) of DDIM eq. 16, (B,) float64.  t, t_prev: (B,) int64 in -1 … T-1."""
    a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    if eta == 0.0:
        # 1. Deterministic DDIM: exactly zero (and no 0/0 at t = -1).
        return todo("a (B,) float64 tensor of zeros")
    # 2. η · sqrt((1 - ᾱ_prev) / (1 - ᾱ_t)) · sqrt(1 - ᾱ_t / ᾱ_prev); clamp the product at 0 before
    #    its square root, rounding can make it a hair negative.
    return todo("σ_t(η), eq. 16")


def ddim_step(schedule, epsilon: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, x_t: torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One DDIM step from t to t_prev (eq. 12).

    epsilon: (B, D) the model's ε̂(x_t, t);  t, t_prev: (B,) int64 in -1 … T-1;  x_t: (B, D);
    eta in [0, 1];  noise: (B, D) the z of the step (needed only when η > 0).
    Returns x_{t_prev}, (B, D), in x_t's dtype.
    """
    a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)  # (B,) float64 each
    # 1. x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t).
    x0 = todo("the predicted x_0")
    # 2. σ_t(η) and the coefficient sqrt(1 - ᾱ_prev - σ²) of "the direction pointing to x_t" (clamp at 0).
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    direction = todo("sqrt(1 - ᾱ_prev - σ²), (B,) float64")
    # 3. x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε̂, plus σ z when η > 0.
    x_prev = todo("the deterministic part of eq. 12")
    if eta > 0.0:
        x_prev = todo("add σ z")
    return x_prev
