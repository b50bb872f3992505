"""Exercise 12 — evaluating a probe honestly (videodiff.interp.probes, lesson 12).

The physics probe reads "plausible or impossible" off pooled hidden states of matched pairs: each
plausible video has an impossible twin with the same set-up.  Three pieces of its evaluation, each of
which leaks the test set into the figure when written the obvious way:

Part 1 — grouped folds.  Cross-validation deals the rows into folds; each fold is tested once by a probe
fitted on the others.  If a video is in a test fold while its twin is in the training folds, the probe
can score by recognising the set-up instead of the physics.  So whole *groups* (pair ids) are dealt:
shuffle the distinct groups with the seed, deal them round-robin to the folds, and give each row the
fold of its group.

    grouped_folds(groups (n,), num_folds, seed) -> [(train_rows, test_rows), …]   sorted int64 index arrays

Part 2 — standardisation.  A logistic probe works on features scaled to mean 0 and std 1.  The mean
and std must come from the *training* rows only, and the test rows are scaled with those same numbers
(not their own, and not the statistics of all rows together: either way the test fold shapes what the
probe sees).  The std is the population std (ddof 0), as the library's; a feature whose training std
is below MIN_STD is constant there, and is centred but not divided (by 0).

    standardise(X_train (m, d), X_test (r, d)) -> (Z_train (m, d), Z_test (r, d))

Part 3 — pairwise accuracy.  For matched twins the fairest single number asks, of each complete pair,
"is the plausible video (y = 1) given the higher margin than its impossible twin (y = 0)?"; a tie counts
half (the probe cannot tell them apart: a coin would be right half the time).  Pairs with a member
missing are skipped; with no complete pair the answer is NaN.

    pairwise_accuracy(margins (n,), y (n,), pair_ids (n,)) -> float

Your task: write the three functions.  Every ``todo(...)`` is an expression to replace.

Check your work:  python -m lessons.exercises.check 12 lessons/exercises/ex12_work.py
(compared with ``videodiff.interp.probes.grouped_folds`` (its properties), ``standardisation`` and
``pairwise_accuracy``).  Reference: ``solutions/ex12_probe_honestly.py``.
"""
import numpy as np

MIN_STD = 1e-8  # as videodiff.interp.probes: a training std below this is a constant feature


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def grouped_folds(groups: np.ndarray, num_folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds in which every group lies wholly on one side: [(train_rows, test_rows)] per fold."""
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    # 1. The distinct groups, in an order shuffled by the seed, dealt round-robin: group i of them to fold i % k.
    shuffled = rng.permutation(np.unique(groups))
    fold_of_group = {group: i % num_folds for i, group in enumerate(shuffled.tolist())}
    # 2. Every row goes where its group went: (n,).
    fold_of_row = todo("the fold of each row's group, as an array (n,)")
    # 3. Fold k tests its own rows and trains on all the others.
    return [(todo("the rows not in fold k (np.flatnonzero)"), todo("the rows in fold k (np.flatnonzero)"))
            for k in range(num_folds)]


def standardise(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled with the training rows' mean and population std: (Z_train, Z_test)."""
    mean = todo("the mean of each feature over the training rows only, (d,)")
    std = todo("the population std (ddof 0) of each feature over the training rows only, (d,)")
    std = todo("std, with 1 where it is below MIN_STD (np.where)")
    return todo("(X_train − mean) / std and (X_test − mean) / std, as a tuple")


def pairwise_accuracy(margins: np.ndarray, y: np.ndarray, pair_ids: np.ndarray) -> float:
    """The share of complete pairs whose plausible member has the higher margin, ties counted half."""
    margins, y, pair_ids = np.asarray(margins, dtype=np.float64), np.asarray(y), np.asarray(pair_ids)
    wins = []
    for pair in np.unique(pair_ids):
        rows = np.flatnonzero(pair_ids == pair)
        plausible, impossible = margins[rows[y[rows] == 1]], margins[rows[y[rows] == 0]]
        if len(plausible) != 1 or len(impossible) != 1:
            continue  # a pair with a member missing says nothing about "which of the two?"
        wins.append(todo("1 if plausible[0] is the higher margin, 0 if the lower, 0.5 if they are equal"))
    return todo("the mean of wins as a float, or NaN when no pair is complete")
