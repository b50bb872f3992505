"""Exercise 01 — the forward process (lesson 01).

Lesson 01 noised the spiral one small step at a time, x_t = sqrt(1 - β_t) x_{t-1} + sqrt(β_t) ε_t, and
then jumped straight to any t with the closed form the library uses:

    α_t = 1 - β_t,     ᾱ_t = α_0 · α_1 · … · α_t                      (the running product)
    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,   ε ~ N(0, I)              (DDPM, Ho et al. 2020, eq. 4)

Your task: write the two functions below.  Every ``todo(...)`` is an expression for you to replace;
the comment above it says which equation it is.  Everything else is given.

Check your work (from the repository root):

    cp lessons/exercises/ex01_forward_process.py lessons/exercises/ex01_work.py   # edit the copy
    python -m lessons.exercises.check 01 lessons/exercises/ex01_work.py
    make check EX=01 FILE=lessons/exercises/ex01_work.py                          # the same

The checker compares your functions with ``toydiff.schedules.NoiseSchedule`` on random inputs and on
the edge cases t = 0 and t = T-1.  A reference answer is in ``solutions/ex01_forward_process.py``:
try first.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    """ᾱ_t for every timestep of a schedule.

    betas: (T,) float64, the variance β_t added at each step.
    Returns (T,) float64 with entries ᾱ_0 = 1 - β_0, …, ᾱ_{T-1} = Π_{s ≤ T-1} (1 - β_s).
    """
    # 1. α_t = 1 - β_t: the fraction of the variance of x_{t-1} that step t keeps.
    alphas = todo("alphas = 1 - betas")
    # 2. ᾱ_t = Π_{s ≤ t} α_s, the running product (hint: torch.cumprod along dim 0).
    return todo("the running product of the alphas")


def add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) in one jump:  x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.

    alphas_cumprod: (T,) float64, the table ᾱ_t;
    x0, noise:      (B, D) clean points and the Gaussian noise ε to add (same shape);
    t:              (B,) int64, one timestep in 0 … T-1 per point.
    Returns x_t of shape (B, D) and the dtype of x0.
    """
    # 1. ᾱ_t of each example, shape (B,): index the table with t.
    alpha_bar = todo("alphas_cumprod at each example's timestep")
    # 2. Shape it (B,) -> (B, 1), so that it scales every coordinate of its own example, and cast it
    #    to x0's dtype (the table is float64, the points are usually float32).
    alpha_bar = todo("a trailing axis, and x0's dtype")
    # 3. DDPM eq. 4: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.
    return todo("the forward process")
