"""Reference answer to exercise 12 — evaluating a probe honestly.

    grouped_folds:      shuffled distinct groups dealt round-robin; each row takes its group's fold
    standardise:        mean and population std of the TRAINING rows, 1 where the std is below MIN_STD,
                        applied to both sets
    pairwise_accuracy:  mean over complete pairs of [plausible > impossible] + ½ [plausible = impossible]

The library's versions are ``videodiff.interp.probes.grouped_folds`` (which deals the largest groups
first, each to the emptiest fold, so that groups of unequal size still give folds of nearly equal
rows), ``standardisation`` (used inside ``fit_logistic``) and ``pairwise_accuracy`` (vectorised, and
refusing a pair with two members of one label).
"""
import numpy as np

MIN_STD = 1e-8  # as videodiff.interp.probes: a training std below this is a constant feature


def grouped_folds(groups: np.ndarray, num_folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds in which every group lies wholly on one side: [(train_rows, test_rows)] per fold."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    # 1. Groups, not rows, are dealt: twins can then never be on both sides of a split.
    shuffled = rng.permutation(np.unique(groups))
    fold_of_group = {group: i % num_folds for i, group in enumerate(shuffled.tolist())}
    # 2. Each row inherits its group's fold.
    fold_of_row = np.array([fold_of_group[group] for group in groups.tolist()])  # (n,)
    # 3. flatnonzero gives sorted indices.
    return [(np.flatnonzero(fold_of_row != k), np.flatnonzero(fold_of_row == k)) for k in range(num_folds)]


def standardise(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled with the training rows' mean and population std: (Z_train, Z_test)."""
    mean = X_train.mean(axis=0)  # (d,) training rows only: the test fold must not shape the probe
    std = X_train.std(axis=0)  # (d,) ddof 0
    std = np.where(std > MIN_STD, std, 1.0)  # a constant feature is centred, not divided by 0
    return (X_train - mean) / std, (X_test - mean) / std


def pairwise_accuracy(margins: np.ndarray, y: np.ndarray, pair_ids: np.ndarray) -> float:
    """The share of complete pairs whose plausible member has the higher margin, ties counted half."""
    margins, y, pair_ids = np.asarray(margins, dtype=np.float64), np.asarray(y), np.asarray(pair_ids)
    wins = []
    for pair in np.unique(pair_ids):
        rows = np.flatnonzero(pair_ids == pair)
        plausible, impossible = margins[rows[y[rows] == 1]], margins[rows[y[rows] == 0]]
        if len(plausible) != 1 or len(impossible) != 1:
            continue  # a pair with a member missing says nothing about "which of the two?"
        wins.append(float(plausible[0] > impossible[0]) + 0.5 * float(plausible[0] == impossible[0]))
    return float(np.mean(wins)) if wins else float("nan")
