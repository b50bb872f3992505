"""End to end on the spiral: a small training budget already gives good samples, and guidance works."""
import pytest
import torch

from toydiff.data import make_dataset
from toydiff.experiment import ToyRunConfig, train_noisy_classifier, train_toy_model
from toydiff.metrics import energy_distance, precision
from toydiff.training import TrainConfig


def arm_of(points, reference_points, reference_labels):
    """The arm of each point: the label of its nearest real point."""
    return reference_labels[torch.cdist(points, reference_points).argmin(dim=1)]


@pytest.fixture(scope="module")
def small_run():
    config = ToyRunConfig(train=TrainConfig(steps=800, batch_size=256, progress=False, log_every=100))
    return train_toy_model(config)


@pytest.fixture(scope="module")
def reference():
    return make_dataset("spiral", 4000, seed=123)


def test_small_budget_samples_are_close_to_the_data(small_run, reference):
    fresh, _ = reference
    second, _ = make_dataset("spiral", 2000, seed=124)
    floor = energy_distance(second, fresh)
    gaussian = energy_distance(torch.randn(2000, 2), fresh)
    for sampler in ("ddim", "ddpm"):
        samples = small_run.sample(2000, sampler=sampler, num_steps=50, seed=0)
        distance = energy_distance(samples, fresh)
        # A Gaussian with the data's moments is only ~0.015 away in energy distance, and has precision
        # ~0.78 (share of points on the arms); fresh data has ~0.99.
        assert distance < 0.4 * gaussian, (sampler, distance, gaussian)
        assert distance < 4 * floor, (sampler, distance, floor)
        assert precision(samples, fresh) > 0.85, sampler
        assert samples.norm(dim=1).max() < 4  # no runaway samples


def test_classifier_free_guidance_gives_the_arm_asked_for(small_run, reference):
    points, labels = reference
    for arm in range(3):
        samples = small_run.sample(600, num_steps=30, label=arm, guidance_scale=3.0, seed=arm)
        assert (arm_of(samples, points, labels) == arm).float().mean() > 0.95
    unguided = small_run.sample(1500, num_steps=30, seed=5)
    shares = torch.bincount(arm_of(unguided, points, labels), minlength=3).float() / 1500
    assert shares.min() > 0.2  # the unconditional model keeps all three arms


def test_marginal_samples_draw_the_class_first_and_the_null_pass_is_available(small_run, reference):
    from toydiff.samplers import ddim_sample

    points, labels = reference
    marginal = small_run.sample(1500, num_steps=30, seed=3)
    null_pass = small_run.sample(1500, num_steps=30, seed=3, null_label=True)
    x_T = torch.randn(1500, 2, generator=torch.Generator().manual_seed(3))
    expected = ddim_sample(small_run.denoiser(), x_T, small_run.schedule, num_steps=30,
                           prediction_type=small_run.config.prediction_type)
    assert torch.equal(null_pass, expected)
    # Ancestral y ~ p(y), x ~ p(x | y): at least as close to the data as the null-label pass.
    assert precision(marginal, points) >= precision(null_pass, points) - 0.01
    shares = torch.bincount(arm_of(marginal, points, labels), minlength=3).float() / 1500
    assert (shares - 1 / 3).abs().max() < 0.06


def test_classifier_guidance_steers_an_unconditional_sample(small_run, reference):
    points, labels = reference
    classifier = train_noisy_classifier(small_run.config, TrainConfig(steps=400, batch_size=256, progress=False))
    on_arm = []
    for scale in (0.0, 4.0):
        samples = small_run.sample(600, num_steps=30, label=1, guidance_scale=scale, classifier=classifier, seed=9)
        on_arm.append((arm_of(samples, points, labels) == 1).float().mean().item())
    assert on_arm[0] < 0.5 < 0.85 < on_arm[1]


@pytest.mark.slow
def test_default_recipe_reaches_the_toy_layers_quality_target():
    # The toy layer's quality target (toydiff/bench.py): 4000 DDIM-50 samples within energy distance 0.003 of fresh data.
    run = train_toy_model(ToyRunConfig())
    fresh, _ = make_dataset("spiral", 4000, seed=1001)
    distances = sorted(energy_distance(run.sample(4000, num_steps=50, seed=s), fresh) for s in range(3))
    assert distances[1] <= 0.003, distances
