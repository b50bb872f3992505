"""Tests of videodiff.interp.probes: linear probes evaluated without leaks.

The data are synthetic matched pairs (one plausible, one impossible video per set-up), with a label
signal planted along a known direction, or none at all, so what an honest evaluation must report is
known in advance: the planted direction back, and chance when there is nothing to find.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from videodiff.interp.probes import (
    accuracy, auroc, choose_l2, control_labels, fit_logistic, fit_logistic_path, fit_ridge, grouped_folds,
    grouped_regression_r2, nested_probe, nested_probe_over_seeds, nested_statistics, pairwise_accuracy,
    permutation_test, permuted_labels, r2_score, selectivity,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def pairs(num_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (2P,) 1, 0, 1, 0, ... and the pair id of each row: twins are adjacent rows."""
    return np.tile([1, 0], num_pairs), np.repeat(np.arange(num_pairs), 2)


def planted(y: np.ndarray, dim: int, strength: float, seed: int, setup_scale: float = 0.0):
    """Features (n, dim): standard noise + strength · (2y - 1) · u for a random unit u, plus a random
    set-up vector shared by the two twins of a pair (scaled by setup_scale). Returns (X, u)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)
    direction /= np.linalg.norm(direction)
    setup = np.repeat(rng.normal(size=(len(y) // 2, dim)), 2, axis=0)
    X = rng.normal(size=(len(y), dim)) + strength * (2 * y[:, None] - 1) * direction + setup_scale * setup
    return X, direction


def objective_gradient(probe, X, y) -> np.ndarray:
    """∂J/∂(w, b) of J = mean log-loss + (λ/2)‖w‖², written out independently of the module."""
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    p = 1 / (1 + np.exp(-(Z @ probe.weight + probe.bias)))
    return np.concatenate([Z.T @ (p - y) / len(y) + probe.l2 * probe.weight, [np.mean(p - y)]])


# ---------------------------------------------------------------------------------------------
#                                       Grouped folds
# ---------------------------------------------------------------------------------------------


def test_grouped_folds_keep_every_group_whole_and_test_every_row_once():
    groups = np.concatenate([np.repeat(np.arange(30), 2), [30, 30, 30, 31, 32]])  # pairs, a triple, singletons
    for seed in range(3):
        folds = grouped_folds(groups, 5, seed=seed)
        tested = np.concatenate([test for _, test in folds])
        assert np.array_equal(np.sort(tested), np.arange(len(groups)))  # each row tested exactly once
        for train, test in folds:
            assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(groups)))
            assert not set(groups[train]) & set(groups[test])  # no group straddles the split
        sizes = [len(test) for _, test in folds]
        assert max(sizes) - min(sizes) <= 3  # dealt to balance: at most one group's worth apart
    assert [t.tolist() for _, t in grouped_folds(groups, 5, 0)] == [t.tolist() for _, t in grouped_folds(groups, 5, 0)]
    assert [t.tolist() for _, t in grouped_folds(groups, 5, 0)] != [t.tolist() for _, t in grouped_folds(groups, 5, 1)]


def test_grouped_folds_of_pairs_are_equal_and_shuffled():
    _, groups = pairs(50)
    folds = grouped_folds(groups, 5, seed=0)
    assert [len(test) for _, test in folds] == [20] * 5
    first = folds[0][1]
    assert not np.array_equal(first, np.arange(20))  # the groups were shuffled, not cut in order


# ---------------------------------------------------------------------------------------------
#                                     The logistic probe
# ---------------------------------------------------------------------------------------------


def test_probe_recovers_a_planted_direction_and_generalises():
    y, _ = pairs(200)
    X, direction = planted(y, dim=20, strength=2.0, seed=0)
    probe = fit_logistic(X[:300], y[:300], l2=1e-2)
    margins = probe.decision(X[300:])
    assert accuracy(margins, y[300:]) > 0.93  # the best possible is Φ(2) ≈ 0.977
    assert auroc(margins, y[300:]) > 0.95
    assert np.array_equal(probe.predict(X[300:]), (margins > 0).astype(int))
    raw_direction = probe.weight / probe.std  # back from standardised units to the features' own
    cosine = raw_direction @ direction / np.linalg.norm(raw_direction)
    assert cosine > 0.9


def test_logistic_fit_is_the_minimum_of_the_stated_objective():
    """The gradient of mean log-loss + (λ/2)‖w‖² (bias unpenalised) vanishes at the fit, and an
    independent optimiser (torch's L-BFGS) lands on the same point."""
    y, _ = pairs(100)
    X, _ = planted(y, dim=10, strength=0.7, seed=1)
    X = X * np.linspace(0.1, 10, 10) + 3.0  # unequal scales and a shift: standardisation matters
    for l2 in (1e-3, 1e-1, 10.0):
        probe = fit_logistic(X, y, l2)
        assert np.abs(objective_gradient(probe, X, y)).max() < 1e-9
    # Nearly collinear features at the weakest λ: the float32 Hessian that steers the steps must not
    # stop the solve short of the float64 minimum.
    rng = np.random.default_rng(3)
    collinear = planted(y, dim=3, strength=0.7, seed=2)[0] @ rng.normal(size=(3, 40)) + 1e-3 * rng.normal(size=(200, 40))
    probe = fit_logistic(collinear, y, 1e-3)
    assert np.abs(objective_gradient(probe, collinear, y)).max() < 1e-9

    l2 = 1e-2
    probe = fit_logistic(X, y, l2)
    Z = torch.from_numpy((X - X.mean(axis=0)) / X.std(axis=0))
    target = torch.from_numpy(y.astype(np.float64))
    theta = torch.zeros(11, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        margins = Z @ theta[:10] + theta[10]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(margins, target) + l2 / 2 * theta[:10].square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    assert np.allclose(probe.weight, theta[:10].detach().numpy(), atol=1e-6)
    assert probe.bias == pytest.approx(theta[10].item(), abs=1e-6)


def test_the_bias_is_not_penalised():
    """Under a crushing λ the weights vanish but the bias still fits the class balance: logit(share of 1)."""
    rng = np.random.default_rng(2)
    y = (np.arange(200) < 60).astype(int)  # 30 % plausible
    probe = fit_logistic(rng.normal(size=(200, 5)), y, l2=1e6)
    assert np.abs(probe.weight).max() < 1e-5
    assert probe.bias == pytest.approx(np.log(0.3 / 0.7), abs=1e-5)


def test_fitting_a_path_equals_fitting_each_l2_alone():
    y, _ = pairs(60)
    X, _ = planted(y, dim=8, strength=0.5, seed=3)
    grid = (1e-3, 1e-1, 10.0)
    for together, l2 in zip(fit_logistic_path(X, y, grid), grid):
        alone = fit_logistic(X, y, l2)
        assert together.l2 == l2
        assert np.allclose(together.weight, alone.weight, atol=1e-10)
    norms = [np.linalg.norm(probe.weight) for probe in fit_logistic_path(X, y, grid)]
    assert norms[0] > norms[1] > norms[2]  # stronger regularisation, smaller weights


def test_standardisation_is_fitted_on_the_training_rows_only():
    y, _ = pairs(50)
    X, _ = planted(y, dim=4, strength=0.5, seed=4)
    X[:, 3] = 7.0  # a constant feature: centred, not divided by zero
    probe = fit_logistic(X[:60], y[:60], l2=0.1)
    assert np.allclose(probe.mean, X[:60].mean(axis=0)) and not np.allclose(probe.mean[:3], X.mean(axis=0)[:3])
    assert np.allclose(probe.std[:3], X[:60].std(axis=0)[:3]) and probe.std[3] == 1.0
    assert np.isfinite(probe.decision(X)).all()


# ---------------------------------------------------------------------------------------------
#                                          Metrics
# ---------------------------------------------------------------------------------------------


def test_auroc_known_values_with_ties_counted_half():
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # the textbook four-point example
    # positives score 1 and 2, negatives 1 and 0: pairs 0.5 (tie) + 1 + 1 + 1 over 4
    assert auroc([1, 1, 2, 0], [1, 0, 1, 0]) == 0.875
    assert auroc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0 and auroc([3, 2, 1, 0], [0, 0, 1, 1]) == 0.0
    assert auroc([5, 5, 5, 5], [1, 0, 1, 0]) == 0.5
    rng = np.random.default_rng(5)
    scores, y = rng.integers(0, 4, size=40), rng.integers(0, 2, size=40)  # many ties
    difference = scores[y == 1][:, None] - scores[y == 0][None, :]
    assert auroc(scores, y) == pytest.approx(np.mean((difference > 0) + 0.5 * (difference == 0)))


def test_pairwise_accuracy_by_hand():
    pair_ids = ["a", "a", "b", "b", "c", "c", "d"]
    y = [1, 0, 0, 1, 1, 0, 1]
    margins = [2.0, 1.0, 0.5, 0.5, -1.0, 3.0, 9.0]
    # a: 2 > 1 counts 1; b: a tie counts 1/2; c: -1 < 3 counts 0; d has no twin and is left out
    assert pairwise_accuracy(margins, y, pair_ids) == 0.5
    assert np.isnan(pairwise_accuracy([1.0, 2.0], [1, 1], ["a", "b"]))
    with pytest.raises(ValueError, match="at most one plausible"):
        pairwise_accuracy([1.0, 2.0, 3.0], [1, 1, 0], ["a", "a", "a"])


def test_accuracy_counts_a_zero_margin_as_impossible():
    assert accuracy([0.0, 0.0, 1.0, -1.0], [0, 1, 1, 1]) == 0.5


# ---------------------------------------------------------------------------------------------
#                                 λ and the cell, chosen honestly
# ---------------------------------------------------------------------------------------------


def test_choose_l2_is_the_best_mean_validation_accuracy_ties_to_the_stronger():
    y, groups = pairs(40)
    X, _ = planted(y, dim=30, strength=0.3, seed=6)
    grid = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0])
    scores = []
    for train, test in grouped_folds(groups, 4, seed=3):  # the same folds, computed by hand
        probes = fit_logistic_path(X[train], y[train], grid)
        scores.append([accuracy(probe.decision(X[test]), y[test]) for probe in probes])
    scores = np.mean(scores, axis=0)
    best_l2, best_score = choose_l2(X, y, groups, grid, num_folds=4, seed=3)
    assert best_score == pytest.approx(scores.max())
    assert best_l2 == grid[np.flatnonzero(scores > scores.max() - 1e-9)].max()  # equal fractions, up to rounding

    separable = (2 * y[:, None] - 1) * np.array([[5.0, 0.0]]) + 0.01 * X[:, :2]  # every λ scores 1
    assert choose_l2(separable, y, groups, grid, num_folds=4, seed=0) == (10.0, 1.0)


def test_nested_probe_finds_the_cell_with_the_signal_and_reports_it_held_out():
    y, groups = pairs(60)
    features = {("resid", block): planted(y, dim=6, strength=0.0, seed=10 + block)[0] for block in range(3)}
    features[("resid", 3)] = planted(y, dim=6, strength=1.5, seed=20)[0]
    result = nested_probe(features, y, groups, groups, outer_folds=4, inner_folds=3, l2_grid=(1e-2, 1.0))
    assert result.chosen_cells == [("resid", 3)] * 4 and result.best_cell == ("resid", 3)
    assert np.isfinite(result.margins).all()  # every video scored, by the fold that held it out
    assert np.array_equal(np.sort(np.concatenate(result.test_folds)), np.arange(len(y)))
    assert all(np.all(groups[test][0::2] == groups[test][1::2]) for test in result.test_folds)  # twins together
    assert result.per_video_accuracy > 0.85 and result.pairwise_accuracy > 0.9 and result.auroc > 0.9
    assert result.per_video_accuracy == accuracy(result.margins, y)
    # The chosen cell's own heatmap entry is the reported figure; the noise cells sit near chance.
    assert result.cell_accuracy[("resid", 3)] == result.per_video_accuracy
    assert all(abs(result.cell_accuracy[("resid", b)] - 0.5) < 0.15 for b in range(3))
    for train_fold, probe in zip(result.test_folds, result.probes):
        train = np.setdiff1d(np.arange(len(y)), train_fold)
        assert np.allclose(probe.mean, features[("resid", 3)][train].mean(axis=0))  # outer-training rows only


def test_no_fit_of_a_fold_depends_on_its_held_out_rows():
    """Rewrite fold 0's held-out rows (features of every cell, and labels swapped within each pair):
    fold 0's inner scores, choice of cell and λ and fitted probe must not move at all."""
    y, groups = pairs(50)
    features = {"weak": planted(y, dim=5, strength=0.5, seed=30)[0],
                "strong": planted(y, dim=5, strength=1.0, seed=31)[0],
                "noise": planted(y, dim=5, strength=0.0, seed=32)[0]}
    options = dict(outer_folds=5, inner_folds=3, l2_grid=(1e-2, 1.0))
    before = nested_probe(features, y, groups, groups, **options)
    test = before.test_folds[0]
    rng = np.random.default_rng(33)
    rewritten = {cell: X.copy() for cell, X in features.items()}
    for X in rewritten.values():
        X[test] = 5 * rng.normal(size=(len(test), X.shape[1]))
    flipped = y.copy()
    flipped[test] = 1 - y[test]
    after = nested_probe(rewritten, flipped, groups, groups, **options)
    assert after.chosen_cells[0] == before.chosen_cells[0] == "strong"
    assert after.chosen_l2s[0] == before.chosen_l2s[0]
    assert all(after.inner_accuracy[cell][0] == before.inner_accuracy[cell][0] for cell in features)
    for field in ("mean", "std", "weight"):
        assert np.allclose(getattr(after.probes[0], field), getattr(before.probes[0], field), rtol=0, atol=1e-12)
    assert np.allclose(after.margins[test], before.probes[0].decision(rewritten["strong"][test]))


def test_a_cell_that_carries_the_label_only_on_held_out_rows_is_not_chosen():
    """"leak" holds the label on fold 0's held-out rows (half the videos) and noise elsewhere: fold 0 can
    find it only by looking at those rows while fitting, standardising or choosing. Fold 1, whose
    training rows they are, rightly finds it (and is then at chance on its own held-out rows)."""
    y, groups = pairs(80)
    test = grouped_folds(groups, 2, seed=0)[0][1]  # the outer folds nested_probe will use
    leak = planted(y, dim=4, strength=0.0, seed=40)[0]
    leak[test, 0] = 3.0 * (2 * y[test] - 1)
    features = {"real": planted(y, dim=4, strength=0.5, seed=41)[0], "leak": leak}
    result = nested_probe(features, y, groups, groups, outer_folds=2, inner_folds=3, l2_grid=(1e-2, 1.0))
    assert result.chosen_cells == ["real", "leak"]
    assert result.inner_accuracy["leak"][0] < 0.6 < result.inner_accuracy["real"][0]
    assert np.array_equal(result.margins[test], result.cell_margins["real"][test])
    held_out_of_fold_1 = result.test_folds[1]
    assert abs(accuracy(result.margins[held_out_of_fold_1], y[held_out_of_fold_1]) - 0.5) < 0.15


def test_the_best_of_many_noise_cells_is_reported_at_chance():
    """Twenty cells of pure noise: picking the best on the test folds would report ~0.65; choosing on
    inner folds and reporting on outer ones stays at chance."""
    y, groups = pairs(100)
    features = {cell: planted(y, dim=5, strength=0.0, seed=100 + cell, setup_scale=1.0)[0] for cell in range(20)}
    result = nested_probe(features, y, groups, groups, outer_folds=5, inner_folds=3, l2_grid=(1e-2, 1.0))
    assert abs(result.per_video_accuracy - 0.5) < 0.06
    assert max(result.cell_accuracy.values()) > result.per_video_accuracy  # the heatmap's max is biased up


def test_nested_probe_over_seeds_summarises_its_results():
    y, groups = pairs(30)
    features = {"a": planted(y, dim=4, strength=0.8, seed=50)[0]}
    summary = nested_probe_over_seeds(features, y, groups, groups, seeds=(0, 1, 2), outer_folds=3,
                                      inner_folds=2, l2_grid=(0.1,))
    values = [result.per_video_accuracy for result in summary["results"]]
    assert summary["per_video_accuracy_mean"] == pytest.approx(np.mean(values))
    assert summary["per_video_accuracy_std"] == pytest.approx(np.std(values))
    assert summary["auroc_mean"] == pytest.approx(np.mean([result.auroc for result in summary["results"]]))
    folds = [[t.tolist() for t in result.test_folds] for result in summary["results"]]
    assert folds[0] != folds[1]  # each seed is another split


# ---------------------------------------------------------------------------------------------
#                                 Permutation null and control task
# ---------------------------------------------------------------------------------------------


def test_permuted_labels_keep_one_of_each_in_every_pair():
    y, groups = pairs(200)
    permuted = permuted_labels(y, groups, np.random.default_rng(0))
    assert np.array_equal(np.bincount(groups, weights=permuted), np.ones(200))  # one plausible per pair
    swapped = np.mean(permuted[::2] != y[::2])
    assert 0.4 < swapped < 0.6  # each pair swapped with probability 1/2
    singletons = np.arange(100)
    labels = (singletons < 50).astype(int)
    shuffled = permuted_labels(labels, singletons, np.random.default_rng(0))  # no pairs: a plain shuffle
    assert shuffled.sum() == 50 and 0.3 < np.mean(shuffled != labels) < 0.7


def test_probe_stays_at_chance_on_random_labels():
    rng = np.random.default_rng(60)
    X = rng.normal(size=(600, 10))
    y = rng.integers(0, 2, size=600)
    probe = fit_logistic(X[:300], y[:300], l2=1e-2)
    assert abs(accuracy(probe.decision(X[300:]), y[300:]) - 0.5) < 0.07


def test_permutation_p_value_is_small_for_a_signal_and_not_for_none():
    y, groups = pairs(30)
    options = dict(num_permutations=199, outer_folds=3, inner_folds=2, l2_grid=(1.0,))
    signal = {"cell": planted(y, dim=3, strength=1.5, seed=70)[0]}
    observed, null, p_value = permutation_test(signal, y, groups, groups, seed=0, **options)
    assert observed > 0.8 and p_value == 1 / 200 and p_value < 0.01
    assert null.shape == (199,) and abs(null.mean() - 0.5) < 0.05  # the null sits at chance
    nothing = {"cell": planted(y, dim=3, strength=0.0, seed=71)[0]}
    _, _, p_value = permutation_test(nothing, y, groups, groups, seed=0, **options)
    assert p_value > 0.1


def test_the_batched_null_is_nested_probe_run_once_per_labeling():
    """nested_statistics (all labelings in batched solves, only the chosen cell refitted) reports for
    each labeling what nested_probe reports for it alone: same folds, same choices, same margins."""
    y, groups = pairs(40)
    # Cells of different strength and width, so that labelings choose different cells and λ.
    features = {("a", 0): planted(y, dim=4, strength=0.6, seed=90)[0],
                ("b", 1): planted(y, dim=6, strength=0.3, seed=91, setup_scale=1.0)[0],
                ("c", 2): planted(y, dim=3, strength=0.0, seed=92)[0]}
    rng = np.random.default_rng(5)
    labelings = np.stack([y] + [permuted_labels(y, groups, rng) for _ in range(11)])
    options = dict(outer_folds=4, inner_folds=3, l2_grid=(1e-2, 0.1, 1.0), seed=3)
    alone = [nested_probe(features, labels, groups, groups, **options) for labels in labelings]
    assert len({tuple(map(str, result.chosen_cells)) for result in alone}) > 1  # the choices differ
    for statistic in ("per_video_accuracy", "pairwise_accuracy", "auroc"):
        batched = nested_statistics(features, labelings, groups, groups, statistic=statistic, **options)
        np.testing.assert_allclose(batched, [getattr(result, statistic) for result in alone], rtol=0, atol=1e-12)
    # Batches smaller than the labelings (7 fits at a time) give the same figures.
    again = nested_statistics(features, labelings, groups, groups, max_problems=7, **options)
    np.testing.assert_allclose(again, [result.per_video_accuracy for result in alone], rtol=0, atol=1e-12)


def test_control_labels_are_one_per_value_and_balanced():
    rng = np.random.default_rng(80)
    attribute = rng.permutation(np.repeat(np.arange(10), 6))  # 10 values, 6 videos each
    labels = control_labels(attribute, seed=0)
    for value in range(10):
        assert len(set(labels[attribute == value])) == 1  # consistent across the value's videos
    assert labels.sum() == 30  # 5 values each way
    assert not np.array_equal(labels, control_labels(attribute, seed=1))
    uneven = np.repeat(np.arange(4), [10, 6, 3, 1])  # largest first: 10 | 6 + 3 + 1 is as even as can be
    assert sorted(np.bincount(control_labels(uneven, seed=2))) == [10, 10]
    rows = np.array([[0, 1], [0, 1], [1, 0], [1, 0]])  # (n, k): each distinct row is one value
    assert control_labels(rows, seed=0)[0] == control_labels(rows, seed=0)[1]
    assert selectivity(0.8, 0.6) == pytest.approx(0.2)


# ---------------------------------------------------------------------------------------------
#                                   Linear regression probes
# ---------------------------------------------------------------------------------------------


def test_ridge_is_the_minimum_of_its_objective_and_r2_known_values():
    rng = np.random.default_rng(90)
    X = rng.normal(size=(50, 6)) * 4 + 1
    targets = rng.normal(size=(50, 2))
    probe = fit_ridge(X, targets, l2=0.5)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    residual = Z @ probe.weight + probe.bias - targets
    assert np.abs(Z.T @ residual / 50 + 0.5 * probe.weight).max() < 1e-12  # ∂/∂W
    assert np.abs(residual.mean(axis=0)).max() < 1e-12  # ∂/∂b: the intercept is free
    per_output, mean = r2_score(targets, targets)
    assert np.array_equal(per_output, [1.0, 1.0]) and mean == 1.0
    assert r2_score(np.broadcast_to(targets.mean(axis=0), targets.shape), targets)[1] == pytest.approx(0.0)
    per_output, mean = r2_score(np.zeros((3, 2)), np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]))
    assert per_output[0] == pytest.approx(1 - 14 / 2) and np.isnan(per_output[1]) and mean == per_output[0]


def test_grouped_regression_r2_of_a_planted_map_and_of_noise():
    rng = np.random.default_rng(91)
    _, groups = pairs(80)
    X = rng.normal(size=(160, 12))
    mapped = X @ rng.normal(size=(12, 3)) + 0.05 * rng.normal(size=(160, 3))
    result = grouped_regression_r2(X, mapped, groups, folds=4, inner_folds=3)
    assert result["r2_mean"] > 0.99 and (result["r2_per_output"] > 0.99).all()
    noise = grouped_regression_r2(X, rng.normal(size=160), groups, folds=4, inner_folds=3)
    assert noise["r2_mean"] < 0.05


# ---------------------------------------------------------------------------------------------
#                                     Errors that say why
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_raise_errors_that_name_the_problem():
    y, groups = pairs(10)
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="both classes"):
        fit_logistic(X, np.ones(20, dtype=int), l2=1.0)
    with pytest.raises(ValueError, match="non-finite"):
        fit_logistic(np.where(np.eye(20, 3) > 0, np.nan, X), y, l2=1.0)
    with pytest.raises(ValueError, match="lengths must agree"):
        fit_logistic(X[:19], y, l2=1.0)
    with pytest.raises(ValueError, match="only 0"):
        fit_logistic(X, 2 * y, l2=1.0)
    with pytest.raises(ValueError, match="positive"):
        fit_logistic(X, y, l2=0.0)
    with pytest.raises(ValueError, match="more than the 10 groups"):
        grouped_folds(groups, 11)
    with pytest.raises(ValueError, match="at least 2"):
        grouped_folds(groups, 1)
    with pytest.raises(ValueError, match=r"features\['b'\]"):
        nested_probe({"a": X, "b": X[:18]}, y, groups, groups, outer_folds=2, inner_folds=2)
    with pytest.raises(ValueError, match="one class only"):  # the fold that holds group 0 trains on 0s alone
        choose_l2(X[:6], [1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 2, 2], (1.0,), num_folds=3)
    with pytest.raises(ValueError, match="single value"):
        control_labels(np.zeros(5))


# ------------------------------------------------------------------------------------- the experiment's settings


def test_the_held_history_is_the_runs_own_unless_given_and_must_leave_a_frame():
    from types import SimpleNamespace

    from videodiff.interp.experiment import ProbeExperimentConfig, held_history_frames

    def run(trained_history):
        return SimpleNamespace(window=8, config=SimpleNamespace(history_frames=lambda: trained_history))

    assert held_history_frames(run(4), ProbeExperimentConfig()) == 4       # None: what the run trained with
    assert held_history_frames(run(None), ProbeExperimentConfig()) == 0    # a run with no fixed clean history
    assert held_history_frames(run(4), ProbeExperimentConfig(history_frames=0)) == 0
    assert held_history_frames(run(4), ProbeExperimentConfig(history_frames=7)) == 7
    with pytest.raises(ValueError, match="must leave a frame of the model's window of 8"):
        held_history_frames(run(4), ProbeExperimentConfig(history_frames=8))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="history_frames must be None"):
            ProbeExperimentConfig(history_frames=bad)
