"""Exercise 07 — guidance rescale, and the Fréchet distance that grades generated images.

Guidance rescale (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
section 3.4, eq. 15–16).  Classifier-free guidance with a large scale s pushes the prediction far
from the conditional one, and inflates its standard deviation: images come out over-exposed, too
saturated.  The fix rescales each example's guided prediction back to the std of its conditional
prediction, then blends the two with a factor φ in [0, 1]:

    x_rescaled = x_guided · std(x_cond) / std(x_guided)
    x_final    = φ · x_rescaled + (1 − φ) · x_guided

The std is taken PER EXAMPLE, over every other dimension (all channels and positions of that one
image): each image is rescaled by its own factor.  φ = 0 is plain guidance, x_guided itself, bit for
bit; φ = 1 gives every example exactly the std of its conditional prediction.  (Whether you take
the biased or the unbiased std does not matter: the ratio is the same.)

The Fréchet distance (Heusel et al. 2017, the recipe of FID).  Is a whole set of generated images
distributed like the real ones?  Embed both sets with a classifier, fit a Gaussian to each set of
features, and take the Fréchet (2-Wasserstein) distance between the two Gaussians, which has a
closed form (Dowson & Landau 1982):

    μ = mean of the features,   Σ = their covariance (unbiased: divide by N − 1)
    d² = |μ_a − μ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½)

(FID reports d², and so do we.)  Everything in float64.  Two matrix square roots appear, and both
are of symmetric positive semi-definite matrices, so neither needs a general matrix square root:

- Σ^½ = V diag(√λ) Vᵀ, from the eigendecomposition Σ = V diag(λ) Vᵀ (``torch.linalg.eigh``);
- tr(M^½) = Σ_i √λ_i(M), the sum of the square roots of M's eigenvalues (``torch.linalg.eigvalsh``).

Rounding makes eigenvalues that should be 0 come out as −1e-17, and √(−1e-17) is NaN: clamp them
at 0 first.  That happens every time there are fewer samples than features (a singular Σ).  For the
same reason the final d² can come out as −1e-12 for two identical sets: clamp it at 0 too.

Your task: write the three functions.  Every ``todo(...)`` is an expression to replace.

Check your work:  python -m lessons.exercises.check 07 lessons/exercises/ex07_work.py
(compared with ``toydiff.guidance.rescale_guidance`` and ``imagediff.metrics.gaussian_statistics`` /
``frechet_distance``).  Reference: ``solutions/ex07_image_guidance.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """Guidance rescale: x_final = φ · x_guided · std(x_cond) / std(x_guided) + (1 − φ) · x_guided.

    guided, cond: (B, ...) the guided and the conditional predictions; phi in [0, 1].
    Returns (B, ...); phi = 0 returns ``guided`` bit for bit.
    """
    # 1. Every dimension but the batch: (1, 2, …, ndim − 1).
    dims = todo("the non-batch dimensions, a tuple")
    # 2. Each example's std over those dimensions, kept as (B, 1, …, 1) so it broadcasts.
    std_cond = todo("std of cond per example (keepdim=True)")
    std_guided = todo("std of guided per example (keepdim=True)")
    # 3. Eq. 15: the guided prediction with its std brought back to that of the conditional one.
    rescaled = todo("x_rescaled")
    # 4. Eq. 16: blend with φ.
    return todo("x_final")


def mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ and Σ of a set of features, in float64.

    features: (N, D), one row per sample, N ≥ 2.  Returns mean (D,) and covariance (D, D), unbiased.
    """
    # 1. Work in float64.
    features = todo("features as float64")
    # 2. μ: the mean over the N rows.
    mean = todo("the mean, (D,)")
    # 3. Σ = (X − μ)ᵀ (X − μ) / (N − 1).
    centred = features - mean  # (N, D)
    covariance = todo("the unbiased covariance, (D, D)")
    return mean, covariance


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """d² = |μ_a − μ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½), a Python float ≥ 0.

    features_a: (N, D), features_b: (M, D), the same D.
    """
    mean_a, covariance_a = mean_and_covariance(features_a)
    mean_b, covariance_b = mean_and_covariance(features_b)
    # 1. Σ_a^½ = V diag(√λ) Vᵀ, with λ clamped at 0 before the square root.
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance_a)  # (D,), (D, D)
    root_a = todo("Σ_a^½, (D, D)")
    # 2. tr((Σ_a^½ Σ_b Σ_a^½)^½): M is symmetric in exact arithmetic; make it so in floating point
    #    too, (M + Mᵀ) / 2, then sum the square roots of its eigenvalues, clamped at 0.
    middle = root_a @ covariance_b @ root_a  # (D, D)
    trace_of_root = todo("Σ √λ_i(M)")
    # 3. d² = |μ_a − μ_b|² + tr Σ_a + tr Σ_b − 2 tr((…)^½).
    distance = todo("d²")
    # 4. Clamp at 0 (rounding) and return a Python float.
    return todo("max(0, d²) as a float")
