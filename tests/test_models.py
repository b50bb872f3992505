"""Pitfall 14 (docs/pitfalls.md) and the MLP's contract: the output depends on t and on the label;
shapes; bad input."""
import math

import pytest
import torch

from toydiff.models import MLPConfig, MLPDenoiser, NoisyClassifier, timestep_embedding


def test_timestep_embedding_is_sinusoidal_and_distinct():
    e = timestep_embedding(torch.tensor([0, 1, 999]), 64)
    assert e.shape == (3, 64)
    torch.testing.assert_close(e[0], torch.cat([torch.ones(32), torch.zeros(32)]))
    assert (e[1] - e[2]).abs().max() > 0.1
    # Integer timesteps, not t / T: the fastest pair is (cos t, sin t) itself, the slowest turns by
    # about 1/10000 of that per step (max_period 10000).
    assert e[1, 0].item() == pytest.approx(math.cos(1.0), abs=1e-6)
    assert e[1, 32].item() == pytest.approx(math.sin(1.0), abs=1e-6)
    assert 5e-5 < math.atan2(e[1, 63].item(), e[1, 31].item()) < 2e-4


def test_timestep_embedding_inner_products_depend_only_on_the_time_difference():
    # [cos(t f), sin(t f)] · [cos(s f), sin(s f)] = Σ cos((t - s) f): the same for every shift, and
    # largest at t = s (each cos and sin of one frequency must pair up for this to hold).
    e = timestep_embedding(torch.arange(1000), 64).double()
    gram = e @ e.T  # (1000, 1000)
    for difference in (0, 1, 7, 100):
        diagonal = torch.diagonal(gram, offset=difference)
        torch.testing.assert_close(diagonal, torch.full_like(diagonal, diagonal[0].item()), rtol=0, atol=2e-3)
    assert gram[500, 500] == pytest.approx(32.0, abs=1e-4)
    assert gram[500].argmax().item() == 500


def test_model_output_changes_with_t_and_label():
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2, num_classes=3))
    # A trained model's output layer is far from zero; give it weights so the test sees the dependence.
    x = torch.randn(8, 2)
    a = model(x, torch.full((8,), 10), torch.zeros(8, dtype=torch.int64))
    b = model(x, torch.full((8,), 900), torch.zeros(8, dtype=torch.int64))
    c = model(x, torch.full((8,), 10), torch.ones(8, dtype=torch.int64))
    assert (a - b).abs().max() > 1e-4
    assert (a - c).abs().max() > 1e-4
    # No labels means the null label (index num_classes).
    torch.testing.assert_close(model(x, torch.full((8,), 10)), model(x, torch.full((8,), 10), torch.full((8,), 3)))


def test_gradients_reach_every_parameter():
    model = MLPDenoiser(MLPConfig(hidden_dim=32, num_blocks=2, num_classes=3, fourier_frequencies=4))
    model(torch.randn(8, 2), torch.randint(0, 1000, (8,)), torch.randint(0, 4, (8,))).square().sum().backward()
    for name, parameter in model.named_parameters():
        if name.startswith("label_embedding"):
            continue  # rows not used in this batch get no gradient
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_bad_inputs_are_refused_with_clear_errors():
    model = MLPDenoiser(MLPConfig(hidden_dim=16, num_blocks=1))
    with pytest.raises(ValueError, match=r"expected points of shape \(B, 2\)"):
        model(torch.randn(4, 3), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(4, 2), torch.zeros(4, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))


def test_noisy_classifier_outputs_logits_per_class():
    classifier = NoisyClassifier(MLPConfig(hidden_dim=16, num_blocks=1, num_classes=3))
    assert classifier(torch.randn(5, 2), torch.zeros(5, dtype=torch.int64)).shape == (5, 3)
    with pytest.raises(ValueError, match="num_classes"):
        NoisyClassifier(MLPConfig(num_classes=0))
