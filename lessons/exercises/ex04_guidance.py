"""Exercise 04 — guidance (lesson 04).

Two ways to steer a sampler towards a class y, both acting on the model's noise estimate ε̂:

Classifier-free guidance (Ho & Salimans 2022).  One model trained with and without labels gives
ε_cond = ε(x_t, t, y) and ε_uncond = ε(x_t, t, ∅); with guidance scale s

    ε̃ = ε_uncond + s · (ε_cond - ε_uncond)

s = 0 is the unconditional model, s = 1 *exactly* the conditional model, s > 1 sharpens the condition.
"Exactly" is meant bit for bit: ε_uncond + 1 · (ε_cond - ε_uncond) rounds differently from ε_cond in
float32, so write the same formula in a form whose s = 1 case is ε_cond itself (docs/pitfalls.md, pitfall 8).

Classifier guidance (Dhariwal & Nichol 2021).  A classifier p(y | x_t, t) trained on noisy points
adds its gradient to the score, score = -ε / sqrt(1 - ᾱ_t):

    scorẽ = score + s ∇_x log p(y | x_t)     ⇔     ε̃ = ε̂ - s · sqrt(1 - ᾱ_t) · ∇_x log p(y | x_t)

Your task: write both functions.  Every ``todo(...)`` is an expression to replace.
``schedule.alpha_bar(t)`` gives ᾱ_t (float64, shaped like t); ``per_example`` shapes (B,) to (B, 1).

Check your work:  python -m lessons.exercises.check 04 lessons/exercises/ex04_work.py
(compared with ``toydiff.guidance.combine_guidance`` and ``toydiff.guidance.classifier_guidance``).
Reference: ``solutions/ex04_guidance.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1, …, 1) in like's dtype, so it scales each example's entries."""
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̃ = ε_uncond + s (ε_cond - ε_uncond), with s = 1 returning eps_cond bit for bit.

    eps_uncond, eps_cond: (B, ...) the two model outputs, every channel guided alike.  Returns (B, ...).
    """
    # Rewrite ε_uncond + s (ε_cond - ε_uncond) around ε_cond: ε_cond + (s - 1) · (…).
    return todo("the guided ε, exact at s = 1")


def classifier_guided_epsilon(schedule, epsilon: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                              classifier, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̃ = ε̂ - s sqrt(1 - ᾱ_t) ∇_x log p(y | x_t, t).

    epsilon: (B, D) the diffusion model's ε̂(x_t, t);  x_t: (B, D);  t: (B,) int64;
    classifier: ``classifier(x, t) -> logits (B, num_classes)``;  labels: (B,) int64, the classes y.
    Returns (B, D) in epsilon's dtype.
    """
    with torch.enable_grad():  # sampling runs under no_grad; this gradient is part of the sampler
        x = x_t.detach().requires_grad_(True)
        # 1. log p(y | x_t) for every class: the log-softmax of the logits, (B, num_classes).
        log_probs = todo("log_softmax of classifier(x, t) over the classes")
        # 2. Pick each example's own label and sum over the batch (examples do not interact, so the
        #    gradient of the sum is every example's own gradient).  Hint: log_probs.gather(1, …).
        chosen = todo("Σ_b log p(y_b | x_b)")
        # 3. ∇_x log p(y | x_t), (B, D).  Hint: torch.autograd.grad returns a tuple.
        gradient = todo("the gradient of `chosen` with respect to x")
    # 4. ε̃ = ε̂ - s sqrt(1 - ᾱ_t) ∇_x log p(y | x_t).
    noise_scale = per_example((1.0 - schedule.alpha_bar(t)).sqrt(), epsilon)  # (B, 1)
    return todo("the guided ε")
