"""Linear probes of hidden states, evaluated so that the accuracy reported is honest.

A *probe* asks whether a property can be read off a network's hidden states by a linear map: fit a
logistic regression from pooled activations to the label (1 = physically plausible, 0 = impossible)
and see how well it does on videos it was not fitted on. Done naively, each step leaks the test set
into the figure; this module is the list of those leaks, each closed where it happens:

    leak                                              closed by
    a video's impossible twin (same set-up) is in     grouped_folds: a group (pair id) lies wholly in
      training, so the probe matches set-ups            one fold
    feature means and scales computed on all rows     fit_logistic: standardised with the training rows'
                                                        mean and std only
    the L2 strength tuned on the test fold            choose_l2: inner grouped cross-validation on the
                                                        training rows only
    the best of many (site, block, noise level)       nested_probe: the cell chosen on inner folds and
      cells picked by its test accuracy                 scored on outer folds it never saw
    "70 %" without a baseline                          permutation_test (the whole procedure under
                                                        permuted labels); control_labels and selectivity
                                                        (what the probe's capacity alone can decode)

Notation
    X (n, d)      features, one row per video: a pooled hidden state from one *cell*
    y (n,)        labels in {0, 1}
    groups (n,)   rows that must stay on one side of every split (the pair id of matched twins)
    cell          any hashable key naming where features come from, e.g. (site, block, noise_level)
    margin        z = w · (x - μ) / σ + b, the logit of class 1; the probe predicts 1 when z > 0
    l2            λ in the objective  J(w, b) = (1/m) Σᵢ [log(1 + e^{zᵢ}) - yᵢ zᵢ] + (λ/2) ‖w‖²
                  (mean log-loss over the m training rows; the bias b is not penalised)

Everything is float64; numbers in and out are numpy arrays. The solver (Newton's method, batched over
many problems at once) runs in torch, whose batched Cholesky solves make thousands of small fits cheap;
only its Hessian, which steers the steps but does not decide where they stop, is float32.
All randomness comes from numpy Generators built from the ``seed`` arguments.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import numpy as np
import torch

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
RIDGE_L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# A feature whose training std is below this is treated as constant: it is centred but not scaled, so
# that rounding noise in a dead channel is not blown up to unit variance.
MIN_STD = 1e-8
STATISTICS = ("per_video_accuracy", "pairwise_accuracy", "auroc")


# ---------------------------------------------------------------------------------------------
#                                      Checking inputs
# ---------------------------------------------------------------------------------------------


def _as_features(X, num_rows: int | None = None, name: str = "X") -> np.ndarray:
    """X as a finite float64 (n, d) array, or a ValueError that says what is wrong with it."""
    X = X.detach().cpu().double().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (videos, features), got shape {X.shape}; "
                         f"pool the tokens (and frames) into one vector per video first")
    if num_rows is not None and len(X) != num_rows:
        raise ValueError(f"{name} has {len(X)} rows but the labels have {num_rows}: lengths must agree, "
                         f"one row per video")
    if not np.isfinite(X).all():
        bad = np.argwhere(~np.isfinite(X))[0]
        raise ValueError(f"{name} has non-finite values (NaN or inf), the first at row {bad[0]}, column {bad[1]}; "
                         f"a probe needs finite features: check the activations (overflow in float16?)")
    return X


def _as_labels(y, num_rows: int | None = None, name: str = "y") -> np.ndarray:
    """y as an int64 (n,) array of 0s and 1s, or a ValueError."""
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per video), got shape {y.shape}")
    if num_rows is not None and len(y) != num_rows:
        raise ValueError(f"{name} has {len(y)} entries but there are {num_rows} rows of features: lengths "
                         f"must agree")
    if not np.isin(y, (0, 1)).all():
        others = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"{name} must hold only 0 (impossible) and 1 (plausible); found {others.tolist()}")
    return y.astype(np.int64)


def _as_keys(keys, num_rows: int, name: str) -> np.ndarray:
    """Group or pair ids as a 1-D array of the same length as the labels."""
    keys = np.asarray(keys)
    if keys.ndim != 1 or len(keys) != num_rows:
        raise ValueError(f"{name} must be 1-D with one entry per video ({num_rows}), got shape {keys.shape}")
    return keys


def _check_both_classes(y: np.ndarray, where: str = "") -> None:
    if y.min() == y.max():
        raise ValueError(f"the training labels{' ' + where if where else ''} are all {int(y[0])}, one class only: "
                         f"a classifier needs both classes; group the data so that every group holds both (a "
                         f"matched pair does)")


def _as_l2_grid(l2s) -> np.ndarray:
    l2s = np.atleast_1d(np.asarray(l2s, dtype=np.float64))
    if l2s.ndim != 1 or len(l2s) == 0 or not (np.isfinite(l2s) & (l2s > 0)).all():
        raise ValueError(f"l2 must be positive and finite, got {l2s.tolist()}; an unpenalised logistic "
                         f"regression has no solution when the classes are separable, as they often are "
                         f"with more features than videos")
    return l2s


# ---------------------------------------------------------------------------------------------
#                                       Grouped folds
# ---------------------------------------------------------------------------------------------


def grouped_folds(groups, num_folds: int, seed=0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split rows into ``num_folds`` folds so that every group lies wholly in one fold.

    groups (n,) any sortable ids (pair ids). The groups are shuffled by ``seed`` (an int, or a sequence
    of ints, as numpy.random.default_rng takes), then dealt largest first, each to the fold with the
    fewest rows so far: folds of pairs differ by at most one pair.
    Returns a list of (train_idx, test_idx), sorted int64 index arrays; every row is in exactly one
    test_idx.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be 1-D (one id per video), got shape {groups.shape}")
    unique, group_of_row, group_sizes = np.unique(groups, return_inverse=True, return_counts=True)
    group_of_row = group_of_row.reshape(-1)
    num_groups = len(unique)
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2 (a fold to fit on and one to test on), got {num_folds}")
    if num_folds > num_groups:
        raise ValueError(f"num_folds={num_folds} is more than the {num_groups} groups: every fold needs at "
                         f"least one whole group; use at most {num_groups} folds")
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_groups)
    order = order[np.argsort(-group_sizes[order], kind="stable")]  # largest first, random among equals
    fold_of_group = np.empty(num_groups, dtype=np.int64)
    rows_in_fold = np.zeros(num_folds, dtype=np.int64)
    for group in order:
        fold = int(np.argmin(rows_in_fold))  # the emptiest fold, the first of equals
        fold_of_group[group] = fold
        rows_in_fold[fold] += group_sizes[group]
    fold_of_row = fold_of_group[group_of_row]
    return [(np.flatnonzero(fold_of_row != fold), np.flatnonzero(fold_of_row == fold)) for fold in range(num_folds)]


# ---------------------------------------------------------------------------------------------
#                         Logistic probe: standardise, then Newton's method
# ---------------------------------------------------------------------------------------------


@dataclass
class LogisticProbe:
    """A fitted logistic probe; all arrays numpy float64.

    mean, std (d,)  the standardisation, computed on the training rows only
    weight (d,)     w, in standardised units: weight[j] is what one training std of feature j adds
    bias            b;  margin z = ((x - mean) / std) · weight + bias
    l2              the λ it was fitted with
    """

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: float
    l2: float

    def decision(self, X) -> np.ndarray:
        """Margins (n,), the logit of class 1, of features X (n, d)."""
        X = _as_features(X)
        if X.shape[1] != len(self.weight):
            raise ValueError(f"X has {X.shape[1]} features but the probe was fitted on {len(self.weight)}")
        return (X - self.mean) / self.std @ self.weight + self.bias

    def predict(self, X) -> np.ndarray:
        """Predicted labels (n,) int64: 1 where the margin is positive, 0 otherwise (a margin of 0 is 0)."""
        return (self.decision(X) > 0).astype(np.int64)


def standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (d,) of training rows X (m, d); std is the population std (ddof 0), set to 1 where it
    is below MIN_STD so that constant features are centred to 0 instead of divided by 0."""
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    return mean, np.where(std > MIN_STD, std, 1.0)


def _softplus(z: torch.Tensor) -> torch.Tensor:
    """log(1 + e^z), exact in float64 for any z (torch's softplus switches to z above 20)."""
    return z.clamp(min=0) + torch.log1p(torch.exp(-z.abs()))


def _newton_logistic(Z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, l2: torch.Tensor,
                     tolerance: float = 1e-12, max_iterations: int = 100) -> torch.Tensor:
    """Minimise B independent objectives J(w, b) at once by Newton's method with backtracking.

    Z (B, m, d) standardised features (padding rows anything), y (B, m) labels as floats, mask (B, m) 1
    for a training row and 0 for padding, l2 (B,). Returns θ = [w, b] (B, d + 1).

    With Ã = [Z, 1] and p = σ(Ã θ), over the masked rows:
        gradient  g = Ãᵀ (p - y) / m + λ [w, 0]
        Hessian   H = Ãᵀ diag(p (1 - p)) Ã / m + λ diag(1, ..., 1, 0)
        step      θ ← θ - t H⁻¹ g, t halved until J decreases enough (Armijo)
    J is strictly convex (λ > 0 on w, and the bias term is convex), so this reaches the unique minimum;
    a problem stops once half its Newton decrement gᵀH⁻¹g (≈ J - J_min) is below ``tolerance``, after
    one last full step.
    """
    B, m, d = Z.shape
    A = torch.cat([Z, Z.new_ones(B, m, 1)], dim=2)  # (B, m, d+1) the bias is a constant last feature
    # The Hessian, most of the work (m (d+1)² per problem and iteration), is formed and factored in
    # float32: it only sets the step's direction. The gradient, the objective and θ stay float64, so the
    # iteration still stops where the float64 gradient vanishes; a Hessian off by float32 rounding slows
    # the last iterations a little, it does not move the minimum.
    A32 = A.float()
    A_T32 = A32.transpose(1, 2).contiguous()  # (B, d+1, m) Ãᵀ, contiguous for the product
    share = mask / mask.sum(dim=1, keepdim=True)  # (B, m) each training row weighs 1/m: the loss is a mean
    penalty = l2[:, None] * torch.cat([Z.new_ones(d), Z.new_zeros(1)])  # (B, d+1) no penalty on the bias
    theta = Z.new_zeros(B, d + 1)
    prior = (share * y).sum(dim=1)  # (B,) the share of class 1
    theta[:, d] = torch.log(prior / (1 - prior))  # start at the intercept-only solution

    def objective(z, y, share, penalty, theta):  # (b,) J at θ, given z = Ã θ (b, m)
        return (share * (_softplus(z) - y * z)).sum(dim=1) + 0.5 * (penalty * theta ** 2).sum(dim=1)

    active = torch.arange(B)
    for _ in range(max_iterations):
        everyone = len(active) == B  # skip the copies while no problem has finished
        A_a, A32_a, A_T32_a, y_a, share_a, penalty_a = (A, A32, A_T32, y, share, penalty) if everyone else \
            (A[active], A32[active], A_T32[active], y[active], share[active], penalty[active])
        theta_a = theta[active]
        z = torch.bmm(A_a, theta_a[..., None])[..., 0]  # (b, m)
        p = torch.sigmoid(z)
        gradient = torch.bmm((share_a * (p - y_a))[:, None, :], A_a)[:, 0] + penalty_a * theta_a  # (b, d+1)
        curvature = share_a * p * (1 - p)  # (b, m)
        hessian = torch.bmm(A_T32_a * curvature.float()[:, None, :], A32_a)  # (b, d+1, d+1) float32
        hessian.diagonal(dim1=1, dim2=2).add_(penalty_a.float())
        cholesky, info = torch.linalg.cholesky_ex(hessian)
        if (info != 0).any():
            raise RuntimeError("the logistic Hessian lost positive definiteness (margins so large that "
                               "p (1 - p) underflows); use a larger l2")
        step = torch.cholesky_solve(gradient.float()[..., None], cholesky)[..., 0].double()  # (b, d+1) H⁻¹ g
        decrement = (gradient * step).sum(dim=1)  # (b,) gᵀ H⁻¹ g
        finished = decrement / 2 < tolerance

        # Backtracking: halve t until J(θ - t step) <= J(θ) - t gᵀH⁻¹g / 4 (finished problems take t = 1).
        t = torch.ones_like(decrement)
        pending = ~finished
        if pending.any():
            current = objective(z, y_a, share_a, penalty_a, theta_a)
            slack = 1e-13 * (1 + current.abs())  # rounding in a sum of m terms
            for _ in range(60):
                trial = theta_a - t[:, None] * step
                z_trial = torch.bmm(A_a, trial[..., None])[..., 0]
                accepted = objective(z_trial, y_a, share_a, penalty_a, trial) <= current - t * decrement / 4 + slack
                pending = pending & ~accepted
                if not pending.any():
                    break
                t = torch.where(pending, t / 2, t)
        theta[active] = theta_a - t[:, None] * step
        active = active[~finished]
        if len(active) == 0:
            return theta
    raise RuntimeError(f"Newton's method did not reach the minimum in {max_iterations} iterations for "
                       f"{len(active)} of {B} problems; the data may need a larger l2")


def _fit_folds(X: np.ndarray, y: np.ndarray, train_rows: Sequence[np.ndarray], l2s: np.ndarray,
               where: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit one probe per (training set, l2), all in one batched Newton solve.

    X (n, d), y (n,), train_rows: F index arrays, l2s (L,). Each training set is standardised with its
    own rows' mean and std. Returns mean (F, d), std (F, d), weight (F, L, d), bias (F, L).
    """
    means, stds, weights, biases = _fit_labelings(X, y[None], train_rows, l2s, where)
    return means, stds, weights[0], biases[0]


def _fit_labelings(X: np.ndarray, Y: np.ndarray, train_rows: Sequence[np.ndarray], l2s: np.ndarray,
                   where: str = "", max_problems: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """_fit_folds for P labelings of the same rows at once (the permutation null's relabellings).

    X (n, d), Y (P, n), train_rows: F index arrays, l2s (L,). The standardisation depends on the rows
    only, so it is shared by the labelings. Solved in batches of at most ``max_problems`` problems
    (P·F·L in all), which bounds the memory. Returns mean (F, d), std (F, d), weight (P, F, L, d),
    bias (P, F, L).
    """
    n, d = X.shape
    P, F, L = len(Y), len(train_rows), len(l2s)
    longest = max(len(rows) for rows in train_rows)
    Z = np.zeros((F, longest, d))  # (F, m, d) each fold's standardised rows, zero-padded
    labels = np.zeros((P, F, longest))
    mask = np.zeros((F, longest))
    means, stds = np.empty((F, d)), np.empty((F, d))
    for f, rows in enumerate(train_rows):
        ones = Y[:, rows].sum(axis=1)  # (P,)
        lacking = np.flatnonzero((ones == 0) | (ones == len(rows)))
        if len(lacking):
            _check_both_classes(Y[lacking[0], rows], ", ".join(filter(None, [
                where, f"training set {f}" if F > 1 else "", f"labeling {lacking[0]}" if P > 1 else ""])))
        means[f], stds[f] = standardisation(X[rows])
        Z[f, :len(rows)] = (X[rows] - means[f]) / stds[f]
        labels[:, f, :len(rows)] = Y[:, rows]
        mask[f, :len(rows)] = 1
    theta = np.empty((P, F, L, d + 1))
    Z_t, mask_t = torch.from_numpy(Z), torch.from_numpy(mask)
    per_batch = max(1, max_problems // (F * L))
    for first in range(0, P, per_batch):
        b = min(per_batch, P - first)
        # Problem (p·F + f)·L + j is labeling first + p, training set f, l2s[j].
        theta[first:first + b] = _newton_logistic(
            Z_t[None, :, None].expand(b, F, L, longest, d).reshape(b * F * L, longest, d),
            torch.from_numpy(labels[first:first + b])[:, :, None].expand(b, F, L, longest).reshape(-1, longest),
            mask_t[None, :, None].expand(b, F, L, longest).reshape(-1, longest),
            torch.from_numpy(np.tile(l2s, b * F))).numpy().reshape(b, F, L, d + 1)
    return means, stds, theta[..., :d], theta[..., d]


def fit_logistic_path(X, y, l2s) -> list[LogisticProbe]:
    """One L2-regularised logistic probe per λ in ``l2s``, fitted together in one batched solve.

    X (n, d) features, y (n,) 0/1 labels with both classes present, l2s (L,) positive. The features are
    standardised with X's own mean and std (pass training rows only). Returns L LogisticProbes, in the
    order of ``l2s``, each the minimiser of  (1/n) Σ log-loss + (λ/2) ‖w‖²  to float64 precision.
    """
    y = _as_labels(y)
    X = _as_features(X, len(y))
    l2s = _as_l2_grid(l2s)
    _check_both_classes(y)
    mean, std, weight, bias = _fit_folds(X, y, [np.arange(len(y))], l2s)
    return [LogisticProbe(mean[0], std[0], weight[0, j], float(bias[0, j]), float(l2)) for j, l2 in enumerate(l2s)]


def fit_logistic(X, y, l2: float) -> LogisticProbe:
    """The L2-regularised logistic probe of X (n, d) for labels y (n,) at one λ; see fit_logistic_path."""
    return fit_logistic_path(X, y, [l2])[0]


# ---------------------------------------------------------------------------------------------
#                                          Metrics
# ---------------------------------------------------------------------------------------------


def accuracy(margins, y) -> float:
    """Share of rows where (margin > 0) equals the label. margins (n,), y (n,) 0/1."""
    y = _as_labels(y)
    margins = np.asarray(margins, dtype=np.float64)
    if margins.shape != y.shape:
        raise ValueError(f"margins {margins.shape} and labels {y.shape} must have the same shape")
    return float(np.mean((margins > 0) == (y == 1)))


def auroc(scores, y) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random negative,
    ties counted half (the Mann–Whitney U statistic divided by n₁ n₀). scores (n,), y (n,) 0/1."""
    y = _as_labels(y)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != y.shape:
        raise ValueError(f"scores {scores.shape} and labels {y.shape} must have the same shape")
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs both classes among the labels; they are all "
                         f"{int(y[0]) if len(y) else 'missing'}")
    # Midranks: the tied scores share the mean of the ranks they occupy.
    _, value_of_row, counts = np.unique(scores, return_inverse=True, return_counts=True)
    rank_of_value = np.cumsum(counts) - (counts - 1) / 2  # (values,) ranks 1..n
    rank_sum = rank_of_value[value_of_row.reshape(-1)][y == 1].sum()
    u = rank_sum - positives * (positives + 1) / 2  # pairs (positive, negative) ordered right, ties half
    return float(u / (positives * negatives))


def pairwise_accuracy(margins, y, pair_ids) -> float:
    """Over the pairs whose plausible (y = 1) and impossible (y = 0) members are both present, the share
    where the plausible member's margin is the higher, ties counted half; NaN if no pair is complete.

    The matched-pair question "which of these two is the real one?" is independent of where the
    decision threshold lies, so it is the fairest single number for twins. margins, y, pair_ids (n,).
    """
    y = _as_labels(y)
    margins = np.asarray(margins, dtype=np.float64)
    pair_ids = _as_keys(pair_ids, len(y), "pair_ids")
    if margins.shape != y.shape:
        raise ValueError(f"margins {margins.shape} and labels {y.shape} must have the same shape")
    _, pair_of_row = np.unique(pair_ids, return_inverse=True)
    pair_of_row = pair_of_row.reshape(-1)
    num_pairs = pair_of_row.max() + 1 if len(y) else 0
    margin_of = np.full((2, num_pairs), np.nan)  # [label, pair]
    members = np.zeros((2, num_pairs), dtype=np.int64)
    np.add.at(members, (y, pair_of_row), 1)
    if (members > 1).any():
        label, pair = np.argwhere(members > 1)[0]
        raise ValueError(f"pair {pair_ids[pair_of_row == pair][0]!r} has {members[label, pair]} members "
                         f"labelled {label}; a pair holds at most one plausible and one impossible video")
    margin_of[y, pair_of_row] = margins
    complete = ~np.isnan(margin_of).any(axis=0)
    if not complete.any():
        return float("nan")
    plausible, impossible = margin_of[1, complete], margin_of[0, complete]
    return float(np.mean((plausible > impossible) + 0.5 * (plausible == impossible)))


# ---------------------------------------------------------------------------------------------
#                        The L2 strength, by inner grouped cross-validation
# ---------------------------------------------------------------------------------------------


def _validation_accuracy(X: np.ndarray, y: np.ndarray, folds, l2s: np.ndarray, where: str = "") -> np.ndarray:
    """Mean over ``folds`` of the validation accuracy of a probe fitted on each fold's training rows,
    per λ: (L,). All F·L fits are one batched solve."""
    return _validation_accuracies(X, y[None], folds, l2s, where)[0]


def _validation_accuracies(X: np.ndarray, Y: np.ndarray, folds, l2s: np.ndarray, where: str = "",
                           max_problems: int = 96) -> np.ndarray:
    """_validation_accuracy for P labelings Y (P, n) of the same rows: (P, L)."""
    means, stds, weights, biases = _fit_labelings(X, Y, [train for train, _ in folds], l2s, where, max_problems)
    per_fold = np.empty((len(folds), len(Y), len(l2s)))
    for f, (_, validation) in enumerate(folds):
        standardised = (X[validation] - means[f]) / stds[f]  # (r, d)
        margins = np.einsum("rd,pld->prl", standardised, weights[:, f]) + biases[:, f, None, :]  # (P, r, L)
        per_fold[f] = ((margins > 0) == (Y[:, validation] == 1)[:, :, None]).mean(axis=1)
    return per_fold.mean(axis=0)


def _best_index(scores: np.ndarray, l2s: np.ndarray) -> int:
    """The index of the best score; among equal scores, the one with the largest λ (the simplest probe)."""
    return int(_best_indices(scores[None], l2s)[0])


def _best_indices(scores: np.ndarray, l2s: np.ndarray) -> np.ndarray:
    """_best_index of every row of scores (P, L): (P,)."""
    near_best = scores >= scores.max(axis=1, keepdims=True) - 1e-12  # (P, L)
    return np.where(near_best, l2s[None, :], -np.inf).argmax(axis=1)


def choose_l2(X, y, groups, l2_grid=L2_GRID, num_folds: int = 4, seed=0) -> tuple[float, float]:
    """The λ of ``l2_grid`` with the best mean validation accuracy over grouped folds of (X, y).

    X (n, d), y (n,), groups (n,). Ties go to the stronger regularisation. Returns (best_l2, its mean
    validation accuracy). Call it on training rows only: that is what makes it an *inner* CV.
    """
    y = _as_labels(y)
    X = _as_features(X, len(y))
    groups = _as_keys(groups, len(y), "groups")
    l2_grid = _as_l2_grid(l2_grid)
    scores = _validation_accuracy(X, y, grouped_folds(groups, num_folds, seed), l2_grid)
    best = _best_index(scores, l2_grid)
    return float(l2_grid[best]), float(scores[best])


# ---------------------------------------------------------------------------------------------
#                         Nested cross-validation: choose a cell, report it
# ---------------------------------------------------------------------------------------------


@dataclass
class NestedProbeResult:
    """What nested_probe found.

    The reported figures (per_video_accuracy, pairwise_accuracy, auroc) are those of ``margins``: every
    video scored once, by the probe of the outer fold that held it out, whose cell and λ were chosen
    without it.

    chosen_cells        the cell chosen in each outer fold (on inner validation accuracy)
    chosen_l2s          the λ of that cell in each outer fold
    best_cell           the most often chosen cell (ties: the first in the features' order)
    probes              the probe of each outer fold (the chosen cell, refitted on all its training rows)
    test_folds          the rows each outer fold held out
    margins (n,)        held-out margins of the selected probes
    cell_accuracy       cell -> held-out accuracy of that cell alone (each fold with its inner-chosen λ).
                        A descriptive map of where the information is; NOT the reported figure: the
                        best entry of this map is chosen after looking at the test folds, so it is
                        biased upward, which is what the nested selection avoids
    cell_margins        cell -> (n,) held-out margins behind cell_accuracy
    inner_accuracy      cell -> (outer_folds,) the inner validation accuracy the choice was made on
    """

    chosen_cells: list
    chosen_l2s: list[float]
    best_cell: Hashable
    probes: list[LogisticProbe]
    test_folds: list[np.ndarray]
    margins: np.ndarray
    per_video_accuracy: float
    pairwise_accuracy: float
    auroc: float
    cell_accuracy: dict = field(default_factory=dict)
    cell_margins: dict = field(default_factory=dict)
    inner_accuracy: dict = field(default_factory=dict)


def _check_cells(features: dict, num_rows: int) -> dict:
    if not isinstance(features, dict) or not features:
        raise ValueError("features must be a non-empty dict cell -> (n, d) array, e.g. "
                         "{('resid_post', 3, 500): X}")
    return {cell: _as_features(X, num_rows, name=f"features[{cell!r}]") for cell, X in features.items()}


def _inner_seed(seed, outer_fold: int) -> list[int]:
    """The seed of the inner folds of one outer fold: its own stream, derived from the outer seed."""
    return [*np.atleast_1d(seed).tolist(), 1 + outer_fold]


def nested_probe(features: dict, y, groups, pair_ids, *, outer_folds: int = 5, inner_folds: int = 4,
                 l2_grid=L2_GRID, seed=0) -> NestedProbeResult:
    """Choose the best cell and λ on inner folds, report on outer folds: an honest accuracy for "the best
    place in the network to read the label from".

    features: dict cell -> (n, d_cell) array (d may differ between cells); y (n,) 0/1; groups (n,) kept
    together by every split, outer and inner; pair_ids (n,) for pairwise_accuracy (usually = groups).

    For each of the ``outer_folds`` grouped folds, on its training rows only:
        1. inner grouped folds (the same for every cell, so cells are compared on the same splits)
        2. for every cell, choose_l2 on them: its best λ and inner accuracy
        3. the cell with the best inner accuracy (ties: first in dict order) is chosen
        4. every cell is refitted with its λ on all the outer training rows and scores the held-out
           rows: the chosen cell's margins are the reported ones, all of them make cell_accuracy
    """
    y = _as_labels(y)
    n = len(y)
    groups = _as_keys(groups, n, "groups")
    pair_ids = _as_keys(pair_ids, n, "pair_ids")
    cells = _check_cells(features, n)
    l2_grid = _as_l2_grid(l2_grid)
    outer = grouped_folds(groups, outer_folds, seed)

    margins = np.full(n, np.nan)
    cell_margins = {cell: np.full(n, np.nan) for cell in cells}
    inner_accuracy = {cell: np.empty(outer_folds) for cell in cells}
    chosen_cells, chosen_l2s, probes = [], [], []
    for k, (train, test) in enumerate(outer):
        try:
            inner = grouped_folds(groups[train], inner_folds, _inner_seed(seed, k))
        except ValueError as error:
            raise ValueError(f"inner folds of outer fold {k}: {error}") from None
        best_cell, best_score, fold_probes = None, -np.inf, {}
        for cell, X in cells.items():
            scores = _validation_accuracy(X[train], y[train], inner, l2_grid, f"in outer fold {k}")
            j = _best_index(scores, l2_grid)
            inner_accuracy[cell][k] = scores[j]
            fold_probes[cell] = fit_logistic(X[train], y[train], l2_grid[j])
            cell_margins[cell][test] = fold_probes[cell].decision(X[test])
            if scores[j] > best_score + 1e-12:  # strictly better (beyond rounding): ties keep the earlier cell
                best_cell, best_score = cell, scores[j]
        chosen_cells.append(best_cell)
        chosen_l2s.append(fold_probes[best_cell].l2)
        probes.append(fold_probes[best_cell])
        margins[test] = cell_margins[best_cell][test]

    counts = Counter(chosen_cells)
    best_cell = next(cell for cell in cells if counts[cell] == max(counts.values()))
    return NestedProbeResult(
        chosen_cells=chosen_cells, chosen_l2s=chosen_l2s, best_cell=best_cell, probes=probes,
        test_folds=[test for _, test in outer], margins=margins,
        per_video_accuracy=accuracy(margins, y), pairwise_accuracy=pairwise_accuracy(margins, y, pair_ids),
        auroc=auroc(margins, y),
        cell_accuracy={cell: accuracy(cell_margins[cell], y) for cell in cells},
        cell_margins=cell_margins, inner_accuracy=inner_accuracy,
    )


def nested_probe_over_seeds(features: dict, y, groups, pair_ids, seeds=(0, 1, 2), **nested_kw) -> dict:
    """nested_probe once per seed (each seed a different split into folds), and the spread of its figures.

    Returns {"results": [NestedProbeResult per seed], and for each of per_video_accuracy,
    pairwise_accuracy, auroc: "<name>_mean", "<name>_std"}. The std is that of the seeds run (ddof 0):
    how much the figure moves with the split, not a standard error of the mean.
    """
    results = [nested_probe(features, y, groups, pair_ids, seed=seed, **nested_kw) for seed in seeds]
    summary: dict = {"results": results}
    for name in STATISTICS:
        values = np.array([getattr(result, name) for result in results])
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_std"] = float(values.std())
    return summary


# ---------------------------------------------------------------------------------------------
#                             The permutation null of the whole procedure
# ---------------------------------------------------------------------------------------------


def permuted_labels(y, groups, rng: np.random.Generator) -> np.ndarray:
    """Labels (n,) shuffled in a way that keeps the structure of the real ones.

    - in a group holding both labels (a matched pair: one plausible, one impossible), the labels are
      shuffled within the group; for a pair that is a swap with probability 1/2, so every pair still
      holds one of each, as the real labels do;
    - a group whose members all share one label (a singleton, say) trades that label, whole, with the
      other such groups of its size, so unpaired data get an ordinary permutation.
    Under "the features say nothing about the label" these relabellings are as likely as the real one.
    y (n,) 0/1, groups (n,), rng a numpy Generator. Returns the permuted labels (n,) int64.
    """
    y = _as_labels(y)
    groups = _as_keys(groups, len(y), "groups")
    _, group_of_row = np.unique(groups, return_inverse=True)
    group_of_row = group_of_row.reshape(-1)
    n = len(y)
    # Within groups: sort rows by (group, random key) and hand them the labels of the rows sorted by
    # (group, position): a uniform random permutation inside every group at once.
    by_position = np.lexsort((np.arange(n), group_of_row))
    by_random_key = np.lexsort((rng.random(n), group_of_row))
    permuted = np.empty_like(y)
    permuted[by_position] = y[by_random_key]
    # Between the groups of one label: trade whole-group labels among groups of equal size.
    sizes = np.bincount(group_of_row)
    ones = np.bincount(group_of_row, weights=y).astype(np.int64)
    uniform = (ones == 0) | (ones == sizes)
    for size in np.unique(sizes[uniform]):
        same = np.flatnonzero(uniform & (sizes == size))
        label_of_group = np.zeros(len(sizes), dtype=np.int64)
        label_of_group[same] = rng.permutation((ones[same] > 0).astype(np.int64))
        rows = np.isin(group_of_row, same)
        permuted[rows] = label_of_group[group_of_row[rows]]
    return permuted


def permutation_test(features: dict, y, groups, pair_ids, *, num_permutations: int = 199, seed=0,
                     statistic: str = "per_video_accuracy", **nested_kw) -> tuple[float, np.ndarray, float]:
    """Is the nested figure better than the same procedure gives for labels the features cannot know?

    Re-runs the whole of nested_probe (cell selection and λ choice included, on the same folds) for
    ``num_permutations`` relabellings from permuted_labels, and compares ``statistic`` (one of
    per_video_accuracy, pairwise_accuracy, auroc). ``nested_kw`` go to nested_probe: a smaller
    ``l2_grid``, fewer ``outer_folds``/``inner_folds``, or ``features`` holding the selected site's cells
    only, make the null affordable; the experiment says which it used, since a null over fewer cells
    has less selection in it than the search over all of them.

    Returns (observed, null (num_permutations,), p_value), p = (1 + #{null >= observed}) / (1 + N):
    the smallest possible is 1 / (1 + N).
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    if num_permutations < 1:
        raise ValueError(f"num_permutations must be at least 1, got {num_permutations}")
    observed = getattr(nested_probe(features, y, groups, pair_ids, seed=seed, **nested_kw), statistic)
    rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), 0])  # a stream apart from the folds'
    relabelled = np.stack([permuted_labels(y, groups, rng) for _ in range(num_permutations)])  # (N, n)
    null = nested_statistics(features, relabelled, groups, pair_ids, seed=seed, statistic=statistic, **nested_kw)
    p_value = (1 + np.sum(null >= observed)) / (1 + num_permutations)
    return float(observed), null, float(p_value)


def nested_statistics(features: dict, Y, groups, pair_ids, *, outer_folds: int = 5, inner_folds: int = 4,
                      l2_grid=L2_GRID, seed=0, statistic: str = "per_video_accuracy",
                      max_problems: int = 96) -> np.ndarray:
    """nested_probe's reported ``statistic`` for each of P labelings Y (P, n) of the same videos: (P,).

    The same procedure, fold for fold (the folds depend on the groups and the seed, not the labels):
    per outer fold, each labeling chooses its λ per cell and then its cell on the inner folds, and only
    the chosen (cell, λ) is refitted on the outer training rows (nested_probe also refits every other
    cell, for its descriptive map). Every labeling's fits share the standardisation and run batched
    together, which is what makes a permutation null of hundreds of relabellings affordable;
    ``max_problems`` logistic fits at a time bound the memory.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    Y = np.stack([_as_labels(row) for row in np.atleast_2d(np.asarray(Y))])  # (P, n)
    P, n = Y.shape
    groups = _as_keys(groups, n, "groups")
    pair_ids = _as_keys(pair_ids, n, "pair_ids")
    cells = list(_check_cells(features, n).values())
    l2_grid = _as_l2_grid(l2_grid)
    margins = np.full((P, n), np.nan)
    for k, (train, test) in enumerate(grouped_folds(groups, outer_folds, seed)):
        try:
            inner = grouped_folds(groups[train], inner_folds, _inner_seed(seed, k))
        except ValueError as error:
            raise ValueError(f"inner folds of outer fold {k}: {error}") from None
        best_cell, best_l2, best_score = np.zeros(P, np.int64), np.zeros(P, np.int64), np.full(P, -np.inf)
        for c, X in enumerate(cells):
            scores = _validation_accuracies(X[train], Y[:, train], inner, l2_grid, f"in outer fold {k}",
                                            max_problems)  # (P, L)
            j = _best_indices(scores, l2_grid)
            score = scores[np.arange(P), j]
            better = score > best_score + 1e-12  # strictly better: ties keep the earlier cell, as nested_probe
            best_cell[better], best_l2[better], best_score[better] = c, j[better], score[better]
        for c, j in sorted(set(zip(best_cell.tolist(), best_l2.tolist()))):
            chosen = np.flatnonzero((best_cell == c) & (best_l2 == j))
            X = cells[c]
            mean, std, weight, bias = _fit_labelings(X[train], Y[chosen][:, train], [np.arange(len(train))],
                                                     l2_grid[[j]], max_problems=max_problems)
            # (r, d) @ (d, p) -> (r, p): the held-out margins of each labeling's probe
            held_out = (X[test] - mean[0]) / std[0] @ weight[:, 0, 0].T + bias[:, 0, 0]
            margins[np.ix_(chosen, test)] = held_out.T
    if statistic == "per_video_accuracy":
        return np.array([accuracy(margins[p], Y[p]) for p in range(P)])
    if statistic == "pairwise_accuracy":
        return np.array([pairwise_accuracy(margins[p], Y[p], pair_ids) for p in range(P)])
    return np.array([auroc(margins[p], Y[p]) for p in range(P)])


# ---------------------------------------------------------------------------------------------
#                                      The control task
# ---------------------------------------------------------------------------------------------


def control_labels(attribute, seed=0) -> np.ndarray:
    """A control task (Hewitt and Liang 2019, "Designing and Interpreting Probes with Control Tasks"): a
    random 0/1 label per distinct value of a nuisance attribute, the same for every video sharing it.

    attribute (n,) any sortable values, or (n, k) rows (each distinct row is one value). The values are
    dealt largest first (random among equal counts) to the class with fewer videos so far, a coin
    deciding ties, so the classes are as balanced in videos as the values allow. Returns (n,) int64.

    A probe that scores well on these labels does so by memorising value -> label, which is capacity,
    not knowledge of physics; ``selectivity`` subtracts it. The values must recur across groups (number
    of balls, colours, occluder): a value confined to one pair is never seen in training when its pair
    is held out, so its control label is unpredictable by construction.
    """
    attribute = np.asarray(attribute)
    if attribute.ndim not in (1, 2):
        raise ValueError(f"attribute must be (n,) or (n, k), got shape {attribute.shape}")
    _, value_of_row, counts = np.unique(attribute, return_inverse=True, return_counts=True,
                                        axis=0 if attribute.ndim == 2 else None)
    value_of_row = value_of_row.reshape(-1)
    if len(counts) < 2:
        raise ValueError("the attribute takes a single value; a control task needs at least two values to "
                         "give both labels")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-counts[order], kind="stable")]
    label_of_value = np.empty(len(counts), dtype=np.int64)
    videos = [0, 0]
    for value in order:
        label = int(rng.integers(2)) if videos[0] == videos[1] else int(videos[1] < videos[0])
        label_of_value[value] = label
        videos[label] += counts[value]
    return label_of_value[value_of_row]


def selectivity(task_accuracy: float, control_accuracy: float) -> float:
    """Task accuracy minus control-task accuracy: how much of the probe's accuracy comes from the task
    rather than from its capacity to decode arbitrary labels of the same data. Near 0 means the probe
    could have learnt anything of that shape; a large value means the representation makes this label
    (and not just any label) linearly easy."""
    return float(task_accuracy - control_accuracy)


# ---------------------------------------------------------------------------------------------
#                                  Linear regression probes
# ---------------------------------------------------------------------------------------------


@dataclass
class RidgeProbe:
    """A fitted ridge probe; all arrays numpy float64.

    mean, std (d,)  the standardisation of the training rows
    weight (d, k)   W in standardised units;  prediction = ((x - mean) / std) @ weight + bias
    bias (k,)       the training targets' mean (features are centred, so the intercept is that)
    l2              the λ of  (1/2m) ‖Z W + b - T‖² + (λ/2) ‖W‖²
    """

    mean: np.ndarray
    std: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    l2: float

    def predict(self, X) -> np.ndarray:
        """Predicted targets (n, k) of features X (n, d) (k = 1 for a 1-D target)."""
        X = _as_features(X)
        if X.shape[1] != len(self.weight):
            raise ValueError(f"X has {X.shape[1]} features but the probe was fitted on {len(self.weight)}")
        return (X - self.mean) / self.std @ self.weight + self.bias


def _as_targets(targets, num_rows: int) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.float64)
    targets = targets[:, None] if targets.ndim == 1 else targets
    return _as_features(targets, num_rows, name="targets")


def _ridge_path(X: np.ndarray, targets: np.ndarray, l2s: np.ndarray):
    """Ridge solutions for every λ from one eigendecomposition. X (m, d), targets (m, k), l2s (L,).

    On standardised Z and centred T the normal equations are (ZᵀZ/m + λ I) W = ZᵀT/m; with
    ZᵀZ/m = V diag(e) Vᵀ, W(λ) = V diag(1 / (e + λ)) Vᵀ ZᵀT/m.
    Returns mean, std (d,), weights (L, d, k), bias (k,).
    """
    mean, std = standardisation(X)
    Z = (X - mean) / std  # (m, d)
    bias = targets.mean(axis=0)  # (k,)
    m = len(X)
    eigenvalues, V = np.linalg.eigh(Z.T @ Z / m)  # (d,), (d, d)
    projected = V.T @ (Z.T @ (targets - bias) / m)  # (d, k)
    weights = np.einsum("de,lek->ldk", V, projected[None] / (eigenvalues[None, :, None] + l2s[:, None, None]))
    return mean, std, weights, bias


def fit_ridge(X, targets, l2: float) -> RidgeProbe:
    """The ridge probe of X (n, d) for targets (n, k) or (n,) at one λ > 0, in closed form on
    standardised features; the intercept is unpenalised."""
    X = _as_features(X)
    targets = _as_targets(targets, len(X))
    l2s = _as_l2_grid(l2)
    mean, std, weights, bias = _ridge_path(X, targets, l2s)
    return RidgeProbe(mean, std, weights[0], bias, float(l2s[0]))


def r2_score(prediction, target) -> tuple[np.ndarray, float]:
    """Coefficient of determination 1 - SSE / SST per output, SST about the mean of ``target`` (the rows
    scored). prediction, target (n, k) or (n,). Returns (per_output (k,), mean over outputs). An output
    whose target is constant has no SST: its R² is NaN and the mean is taken over the others (NaN if
    none). Predicting the scored rows' own mean gives 0; below 0 is worse than that."""
    target = np.asarray(target, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} must have the same shape")
    target = target[:, None] if target.ndim == 1 else target
    prediction = prediction[:, None] if prediction.ndim == 1 else prediction
    sse = ((prediction - target) ** 2).sum(axis=0)
    sst = ((target - target.mean(axis=0)) ** 2).sum(axis=0)
    per_output = np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1), np.nan)
    finite = per_output[~np.isnan(per_output)]
    return per_output, float(finite.mean()) if len(finite) else float("nan")


def grouped_regression_r2(X, targets, groups, *, folds: int = 5, inner_folds: int = 4, l2_grid=RIDGE_L2_GRID,
                          seed=0) -> dict:
    """Held-out R² of a ridge probe from X (n, d) to targets (n, k) or (n,), over grouped folds.

    In each outer fold λ is the one with the best mean inner R² (mean over outputs, then over inner
    grouped folds of the training rows; ties to the larger λ), and the probe refitted on all the
    training rows predicts the held-out rows. Returns {"r2_per_output" (k,), "r2_mean": R² of the pooled
    held-out predictions (every row predicted once) averaged over outputs, "predictions" (n, k),
    "l2_per_fold" [float]}.
    """
    X = _as_features(X)
    n = len(X)
    targets = _as_targets(targets, n)
    groups = _as_keys(groups, n, "groups")
    l2_grid = _as_l2_grid(l2_grid)
    constant = np.flatnonzero(np.ptp(targets, axis=0) == 0)
    if len(constant):
        raise ValueError(f"target column {constant[0]} is constant: R² (1 - SSE / SST) is undefined without "
                         f"variance; drop it")
    predictions = np.full(targets.shape, np.nan)
    l2_per_fold = []
    for k, (train, test) in enumerate(grouped_folds(groups, folds, seed)):
        inner_scores = []
        for inner_train, validation in grouped_folds(groups[train], inner_folds, _inner_seed(seed, k)):
            mean, std, weights, bias = _ridge_path(X[train][inner_train], targets[train][inner_train], l2_grid)
            Z = (X[train][validation] - mean) / std
            inner_scores.append([r2_score(Z @ W + bias, targets[train][validation])[1] for W in weights])
        j = _best_index(np.nanmean(np.array(inner_scores), axis=0), l2_grid)
        predictions[test] = fit_ridge(X[train], targets[train], l2_grid[j]).predict(X[test])
        l2_per_fold.append(float(l2_grid[j]))
    per_output, mean_r2 = r2_score(predictions, targets)
    return {"r2_per_output": per_output, "r2_mean": mean_r2, "predictions": predictions, "l2_per_fold": l2_per_fold}
