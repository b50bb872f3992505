"""Reference answer to exercise 04 — guidance.

    classifier-free:  ε̃ = ε_uncond + s (ε_cond - ε_uncond) = ε_cond + (s - 1)(ε_cond - ε_uncond)
    classifier:       ε̃ = ε̂ - s sqrt(1 - ᾱ_t) ∇_x log p(y | x_t)

The library's versions are ``toydiff.guidance.combine_guidance`` / ``classifier_free_guidance`` and
``toydiff.guidance.classifier_guidance``, written as model wrappers any sampler accepts.
"""
import torch


def per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 -> (B, 1, …, 1) in like's dtype, so it scales each example's entries."""
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̃ = ε_cond + (s - 1)(ε_cond - ε_uncond): at s = 1 the second term is exactly 0."""
    return eps_cond + (scale - 1.0) * (eps_cond - eps_uncond)


def classifier_guided_epsilon(schedule, epsilon: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                              classifier, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̃ = ε̂ - s sqrt(1 - ᾱ_t) ∇_x log p(y | x_t, t).  epsilon, x_t: (B, D).  Returns (B, D)."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        # 1. log p(y | x_t) for every class.
        log_probs = torch.log_softmax(classifier(x, t), dim=-1)         # (B, C)
        # 2. Each example's own label, summed over the batch.
        chosen = log_probs.gather(1, labels.view(-1, 1)).sum()
        # 3. ∇_x log p(y | x_t).
        (gradient,) = torch.autograd.grad(chosen, x)                     # (B, D)
    # 4. The guided ε.
    noise_scale = per_example((1.0 - schedule.alpha_bar(t)).sqrt(), epsilon)
    return epsilon - scale * noise_scale * gradient
