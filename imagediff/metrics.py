"""How good are generated images? Three numbers, each reported next to the value real images get.

    psnr                reconstruction quality of the VAE, in dB (higher is better)
    accuracy            the share of generated images an evaluation classifier assigns to the class
                        that was asked for (does guidance steer to the right class?)
    frechet_distance    the distance between two Gaussians fitted to classifier features of generated
                        and of real images (Heusel et al. 2017, the "FID" recipe, here with our own
                        small classifier instead of Inception): is the whole distribution right?

The evaluation classifier (imagediff.classifier.EvaluationClassifier) is trained on real images only
and never used for guidance: a sampler steered by the same network that grades it would be graded on
whether it fooled that network, not on whether its images are right.
"""

from __future__ import annotations

import torch


def psnr(reconstructions: torch.Tensor, images: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each image, in dB: 10 log10(range² / MSE).

    reconstructions, images: (N, C, H, W) in [-1, 1] (so data_range = 2; reconstructions are clamped
    to the range first, as they would be when saved). Returns (N,) float64; report its mean.
    """
    if reconstructions.shape != images.shape:
        raise ValueError(f"psnr: reconstructions {tuple(reconstructions.shape)} and images "
                         f"{tuple(images.shape)} must have the same shape")
    low, high = -data_range / 2, data_range / 2
    error = (reconstructions.clamp(low, high).double() - images.double()).pow(2)
    mse = error.flatten(1).mean(dim=1).clamp_min(1e-20)  # (N,); a perfect image gives 10 log10(4e20) ≈ 206 dB, not inf
    return 10.0 * torch.log10(data_range**2 / mse)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of rows whose largest logit is at the requested label. logits (N, K); labels (N,)."""
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"accuracy expects logits (N, K) and labels (N,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    return (logits.argmax(dim=1) == labels.to(logits.device)).double().mean().item()


def gaussian_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Fréchet statistics need features (N, D) with N >= 2, got {tuple(features.shape)}")
    features = features.double()
    mean = features.mean(dim=0)
    centred = features - mean
    return mean, centred.T @ centred / (features.shape[0] - 1)


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The square root of a symmetric positive semi-definite matrix, via its eigendecomposition."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return eigenvectors @ torch.diag(eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """The Fréchet (2-Wasserstein) distance between Gaussians fitted to two sets of features.

        d² = |μ_a - μ_b|² + tr(Σ_a + Σ_b - 2 (Σ_a^½ Σ_b Σ_a^½)^½)

    features_a: (N, D), features_b: (M, D). Computed in float64. The trace of the matrix square root is
    the sum of the square roots of the eigenvalues of Σ_a^½ Σ_b Σ_a^½, which is symmetric, so no
    general (and numerically fragile) matrix square root is needed. Returns d² as FID does.
    Like FID, it is biased upwards for small N: compare numbers computed with the same N.
    """
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"frechet_distance needs two feature sets (N, D) and (M, D) with the same D, got "
                         f"{tuple(features_a.shape)} and {tuple(features_b.shape)}")
    mean_a, covariance_a = gaussian_statistics(features_a)
    mean_b, covariance_b = gaussian_statistics(features_b)
    root_a = _symmetric_sqrt(covariance_a)
    middle = root_a @ covariance_b @ root_a
    trace_of_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (mean_a - mean_b).pow(2).sum() + covariance_a.trace() + covariance_b.trace() - 2 * trace_of_root
    if not torch.isfinite(distance):
        raise ValueError("frechet_distance: the features contain NaN or inf (did the sampler diverge?)")
    return max(0.0, distance.item())  # rounding can leave -1e-12 for identical sets


def summarise_psnr(values: torch.Tensor) -> str:
    """'31.2 dB (median 31.5, 5th percentile 27.9)' for a (N,) tensor of per-image PSNRs."""
    return (f"{values.mean().item():.2f} dB (median {values.median().item():.2f}, 5th percentile "
            f"{values.quantile(0.05).item():.2f})")
