"""Pitfalls 6 and 12 of docs/pitfalls.md: eps / x0 / v conversions, the score, and the training targets."""
import itertools

import pytest
import torch

from toydiff.parameterisation import (PREDICTION_TYPES, check_prediction_type, convert_prediction,
                                      epsilon_from_score, score_from_epsilon, training_target)
from toydiff.schedules import make_schedule


@pytest.mark.parametrize("t", [0, 1, 500, 998, 999])
@pytest.mark.parametrize("source,target", list(itertools.permutations(PREDICTION_TYPES, 2)))
def test_conversions_round_trip_in_float64_near_both_ends(t, source, target):
    schedule = make_schedule("cosine")
    x_t, output = torch.randn(64, 2, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    there = convert_prediction(schedule, output, t, x_t, source, target)
    back = convert_prediction(schedule, there, t, x_t, target, source)
    torch.testing.assert_close(back, output, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("t", [0, 250, 999])
def test_targets_are_consistent_with_the_forward_process(t):
    # From a known (x0, ε), every target converts to every other exactly.
    schedule = make_schedule("linear")
    x0, noise = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    x_t = schedule.add_noise(x0, noise, t)
    truth = {kind: training_target(schedule, x0, noise, t, kind) for kind in PREDICTION_TYPES}
    a = schedule.alphas_cumprod[t]
    torch.testing.assert_close(truth["v"], a.sqrt() * noise - (1 - a).sqrt() * x0)
    for source, target in itertools.permutations(PREDICTION_TYPES, 2):
        converted = convert_prediction(schedule, truth[source], t, x_t, source, target)
        torch.testing.assert_close(converted, truth[target], rtol=1e-6, atol=1e-6)


def test_score_of_a_gaussian_is_exact():
    # Data N(0, I) noised stays N(0, I) for every t (variance-preserving), whose score is -x.
    schedule = make_schedule("cosine")
    x_t = torch.randn(100, 2, dtype=torch.float64)
    for t in (0, 300, 999):
        a = schedule.alphas_cumprod[t]
        # Ideal ε for standard normal data: E[ε | x_t] = sqrt(1 - ᾱ) x_t
        epsilon = (1 - a).sqrt() * x_t
        torch.testing.assert_close(score_from_epsilon(schedule, epsilon, t), -x_t)
        torch.testing.assert_close(epsilon_from_score(schedule, -x_t, t), epsilon)


def test_epsilon_prediction_on_zero_terminal_snr_is_refused():
    schedule = make_schedule("linear", zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        check_prediction_type("epsilon", schedule)
    check_prediction_type("v", schedule)
    with pytest.raises(ValueError, match="unknown prediction_type"):
        check_prediction_type("noise")
