"""Checks of exercise 12: grouped folds, standardisation on the training fold, pairwise accuracy.

Folds are checked by their properties (the library's ``grouped_folds`` deals groups differently, largest
first, so its folds are not the exercise's): every row tested once, no group on both sides of a split,
nearly equal folds, shuffled by the seed, any kind of group id.  Standardisation is compared with
``videodiff.interp.probes.standardisation`` on test rows drawn far from the training rows, so that
statistics taken from the wrong rows show, and each way of taking them from the wrong rows is named.
Pairwise accuracy is compared with ``videodiff.interp.probes.pairwise_accuracy``, on margins with ties."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from videodiff.interp.probes import pairwise_accuracy, standardisation

from .assertions import CheckFailed, assert_close_number, require

TOPIC = "probing honestly: grouped folds, standardisation on the training fold, pairwise accuracy"
LIBRARY = "videodiff.interp.probes (grouped_folds' properties, standardisation, pairwise_accuracy)"


def _pairs(num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair ids and labels (2P,), rows in a shuffled order: twins are not neighbours."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(2 * num_pairs)
    return np.repeat(np.arange(num_pairs), 2)[order], np.tile([1, 0], num_pairs)[order]


def _as_index(array, what: str, num_rows: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 1 or (len(array) and not np.issubdtype(array.dtype, np.integer)):
        raise CheckFailed(f"{what} must be a 1-D array of row indices (np.flatnonzero gives one), got "
                          f"{array.dtype} of shape {array.shape}")
    if len(array) and (array.min() < 0 or array.max() >= num_rows):
        raise CheckFailed(f"{what} holds indices outside 0..{num_rows - 1}")
    return array


def _folds(student, groups, num_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    require(student, "grouped_folds")
    folds = student.grouped_folds(groups, num_folds, seed)
    if not isinstance(folds, (list, tuple)) or len(folds) != num_folds:
        raise CheckFailed(f"grouped_folds must return a list of {num_folds} (train_rows, test_rows) pairs, got "
                          f"{type(folds).__name__}" + (f" of length {len(folds)}" if hasattr(folds, '__len__') else ""))
    checked = []
    for k, fold in enumerate(folds):
        if not isinstance(fold, (list, tuple)) or len(fold) != 2:
            raise CheckFailed(f"fold {k} is not a (train_rows, test_rows) pair")
        checked.append((_as_index(fold[0], f"the training rows of fold {k}", len(groups)),
                        _as_index(fold[1], f"the test rows of fold {k}", len(groups))))
    return checked


def _check_partition(folds, num_rows: int) -> None:
    tested = np.concatenate([test for _, test in folds])
    counts = np.bincount(tested, minlength=num_rows)
    if (counts != 1).any():
        row = int(np.flatnonzero(counts != 1)[0])
        raise CheckFailed(f"row {row} is in the test rows of {counts[row]} folds: every row is tested exactly once")
    for k, (train, test) in enumerate(folds):
        expected = np.setdiff1d(np.arange(num_rows), test)
        if not np.array_equal(np.sort(train), expected):
            raise CheckFailed(f"fold {k}'s training rows are not all the rows outside its test rows (did you swap "
                              "train and test?)")


def _check_no_straddle(folds, groups) -> None:
    for k, (train, test) in enumerate(folds):
        shared = set(groups[train].tolist()) & set(groups[test].tolist())
        if shared:
            group = sorted(shared, key=str)[0]
            inside = int(test[groups[test] == group][0])
            outside = int(train[groups[train] == group][0])
            raise CheckFailed(f"pair {group!r} has row {inside} in the test rows of fold {k} and row {outside} in its "
                              f"training rows: a twin leaks (the probe can score by recognising the set-up); deal "
                              f"whole groups to the folds and give each row its group's fold")


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def partition():
        groups, _ = _pairs(20, 0)
        _check_partition(_folds(student, groups, 5, 0), len(groups))

    def no_pair_straddles():
        for num_pairs, num_folds, seed in ((20, 5, 0), (13, 4, 1), (6, 2, 2)):
            groups, _ = _pairs(num_pairs, seed)
            _check_no_straddle(_folds(student, groups, num_folds, seed), groups)

    def balanced():
        groups, _ = _pairs(22, 3)
        folds = _folds(student, groups, 5, 3)
        sizes = [len(set(groups[test].tolist())) for _, test in folds]
        if max(sizes) - min(sizes) > 1:
            raise CheckFailed(f"the folds hold {sizes} pairs: deal the pairs round-robin so that folds differ by at "
                              "most one pair")

    def seeded_and_shuffled():
        groups, _ = _pairs(20, 4)
        tests = {seed: [tuple(test.tolist()) for _, test in _folds(student, groups, 5, seed)] for seed in range(4)}
        again = [tuple(test.tolist()) for _, test in _folds(student, groups, 5, 0)]
        if again != tests[0]:
            raise CheckFailed("the same seed gave different folds: draw every random number from "
                              "np.random.default_rng(seed)")
        if len({tuple(value) for value in tests.values()}) == 1:
            raise CheckFailed("every seed gives the same folds: shuffle the groups with the seed "
                              "(rng.permutation) before dealing them, so that another seed is another split")

    def any_group_ids():
        rng = np.random.default_rng(5)
        ids = [f"set-up {i}" for i in range(9)] + ["triple"]  # one group of three rows: not only pairs
        groups = np.array([name for name in ids for _ in range(3 if name == "triple" else 2)])[rng.permutation(21)]
        folds = _folds(student, groups, 3, 5)
        _check_partition(folds, len(groups))
        _check_no_straddle(folds, groups)

    def standardise(X_train, X_test):
        require(student, "standardise")
        given_train, given_test = X_train.copy(), X_test.copy()
        result = student.standardise(given_train, given_test)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise CheckFailed(f"standardise must return (Z_train, Z_test), got {type(result).__name__}")
        if not (np.array_equal(given_train, X_train) and np.array_equal(given_test, X_test)):
            raise CheckFailed("standardise changed its inputs in place; return new arrays")
        Z_train, Z_test = (np.asarray(z, dtype=np.float64) for z in result)
        for z, x, what in ((Z_train, X_train, "Z_train"), (Z_test, X_test, "Z_test")):
            if z.shape != x.shape:
                raise CheckFailed(f"{what} has shape {z.shape}, expected {x.shape}")
        return Z_train, Z_test

    def expected(X_train, X_test):
        mean, std = standardisation(X_train)
        return (X_train - mean) / std, (X_test - mean) / std

    def data(seed: int):
        rng = np.random.default_rng(seed)
        X_train = rng.normal(size=(40, 6)) * rng.uniform(0.5, 3.0, size=6) + rng.normal(size=6)
        X_test = rng.normal(size=(15, 6)) * 4.0 + 6.0  # far from the training rows: wrong statistics show
        return X_train, X_test

    def training_statistics_only():
        X_train, X_test = data(6)
        Z_train, Z_test = standardise(X_train, X_test)
        if not np.isfinite(Z_train).all() or not np.isfinite(Z_test).all():
            raise CheckFailed("the standardised features hold NaN or inf (a division by a zero std?)")
        m = len(X_train)
        train_mean, train_std = Z_train.mean(axis=0), Z_train.std(axis=0)
        if np.abs(train_mean).max() > 1e-9:
            raise CheckFailed(f"the training rows come out with mean {train_mean[0]:.3g} (feature 0), not 0: the mean "
                              "was taken over other rows than the training ones; the test rows must not enter it "
                              "(that leaks the test fold into the probe)")
        if np.allclose(train_std, math.sqrt((m - 1) / m), atol=1e-9):
            raise CheckFailed(f"the training rows come out with std √((m − 1)/m) = {math.sqrt((m - 1) / m):.4f}: "
                              "you divided by the sample std (ddof = 1); the library uses the population std, ddof = 0")
        if np.abs(train_std - 1).max() > 1e-9:
            raise CheckFailed(f"the training rows come out with std {train_std[0]:.3g} (feature 0), not 1: the std was "
                              "taken over other rows than the training ones; the test rows must not enter it")
        if np.abs(Z_test.mean(axis=0)).max() < 1e-9 and np.abs(Z_test.std(axis=0) - 1).max() < 1e-9:
            raise CheckFailed("the test rows come out with mean 0 and std 1: they were standardised with their own "
                              "mean and std; scale them with the TRAINING rows' mean and std, the same map as the "
                              "training rows")
        want_train, want_test = expected(X_train, X_test)
        for actual, wanted, what in ((Z_train, want_train, "Z_train"), (Z_test, want_test, "Z_test")):
            worst = np.abs(actual - wanted).max()
            if worst > 1e-9:
                raise CheckFailed(f"{what} differs from (X − training mean) / training std by up to {worst:.3g}")

    def constant_feature():
        X_train, X_test = data(7)
        X_train[:, 0] = 3.0  # constant in the training rows
        X_train[:, 1] = 2.0 + 1e-12 * np.arange(len(X_train))  # constant up to rounding
        Z_train, Z_test = standardise(X_train, X_test)
        if not np.isfinite(Z_train).all() or not np.isfinite(Z_test).all():
            raise CheckFailed("feature 0 is constant in the training rows (std 0) and the result holds NaN or inf: use "
                              "1 instead of a std below MIN_STD, so that a constant feature is centred, not divided")
        want_train, want_test = expected(X_train, X_test)
        worst = max(np.abs(Z_train[:, :2] - want_train[:, :2]).max(), np.abs(Z_test[:, :2] - want_test[:, :2]).max())
        if worst > 1e-6:
            raise CheckFailed(f"features 0 (constant in the training rows) and 1 (std 1e-12, below MIN_STD) should "
                              f"come out as (x − training mean) / 1; they are off by up to {worst:.3g}")

    def pairwise(margins, y, pair_ids):
        require(student, "pairwise_accuracy")
        return student.pairwise_accuracy(np.array(margins, dtype=np.float64), np.array(y), np.array(pair_ids))

    def pairwise_random():
        pair_ids, y = _pairs(30, 8)
        margins = np.random.default_rng(8).normal(size=len(y))
        assert_close_number(pairwise(margins, y, pair_ids), pairwise_accuracy(margins, y, pair_ids),
                            "pairwise accuracy of 30 pairs, rows shuffled", atol=1e-12)

    def ties_count_half():
        pair_ids, y = _pairs(40, 9)
        margins = np.round(np.random.default_rng(9).normal(size=len(y)))  # whole numbers: many ties
        expected_value = pairwise_accuracy(margins, y, pair_ids)
        plausible = np.array([margins[(pair_ids == p) & (y == 1)][0] for p in range(40)])
        impossible = np.array([margins[(pair_ids == p) & (y == 0)][0] for p in range(40)])
        ties = int((plausible == impossible).sum())
        actual = pairwise(margins, y, pair_ids)
        for value, mistake in ((np.mean(plausible > impossible), "counted as a loss"),
                               (np.mean(plausible >= impossible), "counted as a win")):
            if isinstance(actual, (int, float, np.floating)) and abs(float(actual) - value) < 1e-12:
                raise CheckFailed(f"{ties} of the 40 pairs tie and each tie was {mistake}: a tie counts half (the "
                                  "probe cannot tell the twins apart; a coin would be right half the time)")
        assert_close_number(actual, expected_value, f"pairwise accuracy with {ties} ties among 40 pairs", atol=1e-12)

    def by_hand():
        # pairs 7: win, 3: loss, 5: tie, 1: win (labels out of row order)  ->  (1 + 0 + 0.5 + 1) / 4
        margins = [2.0, -1.0, 0.0, 0.5, 0.3, 0.3, -2.0, 1.0]
        y = [1, 0, 1, 0, 0, 1, 0, 1]
        pair_ids = [7, 7, 3, 3, 5, 5, 1, 1]
        assert_close_number(pairwise(margins, y, pair_ids), 0.625, "win, loss, tie, win", atol=1e-12)

    def incomplete_pairs():
        margins = [1.0, 0.0, 5.0, -3.0, 2.0]
        y = [1, 0, 1, 1, 0]  # pair 0 complete (win); pair 1 has no impossible member; pair 2 no plausible one
        pair_ids = [0, 0, 1, 1, 2]
        assert_close_number(pairwise(margins, y, pair_ids), 1.0, "only pair 0 is complete", atol=1e-12)
        none = pairwise([1.0, 2.0], [1, 1], [0, 1])
        if not (isinstance(none, (float, np.floating)) and math.isnan(none)):
            raise CheckFailed(f"with no complete pair the pairwise accuracy is undefined: return NaN, got {none!r}")

    return [("grouped_folds: every row tested exactly once, trained on in every other fold", partition),
            ("grouped_folds: no pair has a twin on each side of a split", no_pair_straddles),
            ("grouped_folds: the folds differ by at most one pair", balanced),
            ("grouped_folds: the same seed, the same folds; another seed, another split", seeded_and_shuffled),
            ("grouped_folds: string ids, shuffled rows and a group of three", any_group_ids),
            ("standardise: the training rows' mean and population std, applied to both sets", training_statistics_only),
            ("standardise: a constant training feature is centred, not divided by 0", constant_feature),
            ("pairwise_accuracy equals the library on 30 shuffled pairs", pairwise_random),
            ("pairwise_accuracy: ties count half", ties_count_half),
            ("pairwise_accuracy by hand: win, loss, tie, win = 0.625", by_hand),
            ("pairwise_accuracy skips incomplete pairs, NaN when none is complete", incomplete_pairs)]
