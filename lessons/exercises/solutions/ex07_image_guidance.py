"""Reference answer to exercise 07 — guidance rescale and the Fréchet distance.

    x_final = φ · x_guided · std(x_cond) / std(x_guided) + (1 − φ) · x_guided     (std per example)
    d² = |μ_a − μ_b|² + tr(Σ_a + Σ_b − 2 (Σ_a^½ Σ_b Σ_a^½)^½)                      (float64, clamped at 0)

The library's versions are ``toydiff.guidance.rescale_guidance`` (which also refuses φ outside
[0, 1] and guards against a guided prediction of zero std) and ``imagediff.metrics.frechet_distance``
with ``gaussian_statistics``.
"""
import torch


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, phi: float) -> torch.Tensor:
    """φ · x_guided · std(x_cond) / std(x_guided) + (1 − φ) · x_guided.  guided, cond: (B, ...)."""
    # 1. Every dimension but the batch.
    dims = tuple(range(1, guided.ndim))
    # 2. Each example's std.
    std_cond = cond.std(dim=dims, keepdim=True)  # (B, 1, ...)
    std_guided = guided.std(dim=dims, keepdim=True)  # (B, 1, ...)
    # 3. Eq. 15.
    rescaled = guided * (std_cond / std_guided)  # (B, ...)
    # 4. Eq. 16.
    return phi * rescaled + (1.0 - phi) * guided  # (B, ...)


def mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """μ (D,) and unbiased Σ (D, D) of features (N, D), in float64."""
    # 1. float64.
    features = features.double()  # (N, D)
    # 2. μ.
    mean = features.mean(dim=0)  # (D,)
    # 3. Σ.
    centred = features - mean  # (N, D)
    covariance = centred.T @ centred / (features.shape[0] - 1)  # (D, D)
    return mean, covariance


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """d² between Gaussians fitted to features_a (N, D) and features_b (M, D).  A Python float ≥ 0."""
    mean_a, covariance_a = mean_and_covariance(features_a)
    mean_b, covariance_b = mean_and_covariance(features_b)
    # 1. Σ_a^½ from the eigendecomposition.
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance_a)  # (D,), (D, D)
    root_a = eigenvectors @ torch.diag(eigenvalues.clamp_min(0.0).sqrt()) @ eigenvectors.T  # (D, D)
    # 2. tr((Σ_a^½ Σ_b Σ_a^½)^½) = Σ √λ_i.
    middle = root_a @ covariance_b @ root_a  # (D, D)
    trace_of_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0.0).sqrt().sum()
    # 3. d².
    distance = (mean_a - mean_b).pow(2).sum() + covariance_a.trace() + covariance_b.trace() - 2.0 * trace_of_root
    # 4. Never below 0.
    return max(0.0, distance.item())
