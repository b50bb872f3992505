"""clip_x0 in the samplers: clamping x̂_0 is the same as a model that predicts the clamped x̂_0, and every
sampler entry point passes it on."""
import pytest
import torch

from toydiff.parameterisation import predict_x0
from toydiff.samplers import ddim_sample, ddim_step, ddpm_sample, ddpm_step, sample
from toydiff.schedules import make_schedule

SCHEDULE = make_schedule("cosine", 50)


def far_out_batch(seed: int):
    """x_t (8, 2) and an ε-output whose x̂_0 falls partly outside [-1, 1], at t = 20 (ᾱ ≈ 0.6)."""
    generator = torch.Generator().manual_seed(seed)
    x_t = 2.5 * torch.randn(8, 2, generator=generator, dtype=torch.float64)
    epsilon = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    return x_t, epsilon, torch.full((8,), 20)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_step_with_clip_x0_is_the_step_of_a_model_predicting_the_clamped_x0(eta):
    x_t, epsilon, t = far_out_batch(0)
    x0 = predict_x0(SCHEDULE, epsilon, t, x_t, "epsilon")
    clamped = x0.clamp(-1.0, 1.0)
    assert (x0 != clamped).any() and (x0 == clamped).any()  # the clamp bites on some entries only
    noise = torch.randn(8, 2, dtype=torch.float64)
    clipped = ddim_step(SCHEDULE, epsilon, t, 10, x_t, eta=eta, noise=noise, clip_x0=1.0)
    # An x0-model that answers the clamped x̂_0 implies ε̂ = (x_t - √ᾱ x̂_0) / √(1 - ᾱ): the DDIM path
    # through the clamped point. Clamping x̂_0 but keeping the model's own ε̂ would leave that path.
    expected = ddim_step(SCHEDULE, clamped, t, 10, x_t, eta=eta, noise=noise, prediction_type="x0")
    torch.testing.assert_close(clipped, expected, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(clipped, ddim_step(SCHEDULE, epsilon, t, 10, x_t, eta=eta, noise=noise))


def test_ddpm_step_with_clip_x0_uses_the_clamped_x0_in_the_posterior_mean():
    x_t, epsilon, t = far_out_batch(1)
    clamped = predict_x0(SCHEDULE, epsilon, t, x_t, "epsilon").clamp(-1.0, 1.0)
    noise = torch.randn(8, 2, dtype=torch.float64)
    for variance in ("small", "large"):
        clipped = ddpm_step(SCHEDULE, epsilon, t, x_t, noise=noise, variance=variance, clip_x0=1.0)
        expected = ddpm_step(SCHEDULE, clamped, t, x_t, noise=noise, variance=variance, prediction_type="x0")
        torch.testing.assert_close(clipped, expected, rtol=1e-12, atol=1e-12)
        assert not torch.allclose(clipped, ddpm_step(SCHEDULE, epsilon, t, x_t, noise=noise, variance=variance))


def far_out_model(x, t):  # an x0-model that always answers 5, far outside [-1, 1]
    return torch.full_like(x, 5.0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_passes_clip_x0_on_to_every_sampler(sampler):
    # The last step lands on x̂_0 itself (DDIM: ᾱ_prev = 1; DDPM at t = 0: the posterior mean is x̂_0 and
    # no noise is added), so the sample is exactly the bound when clipping reaches the steps, and 5 if not.
    x_T = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    options = dict(prediction_type="x0", generator=torch.Generator().manual_seed(3))
    clipped = sample(far_out_model, x_T, SCHEDULE, sampler=sampler, num_steps=10, eta=0.5, clip_x0=0.75, **options)
    torch.testing.assert_close(clipped, torch.full_like(x_T, 0.75), rtol=0, atol=1e-12)
    unclipped = sample(far_out_model, x_T, SCHEDULE, sampler=sampler, num_steps=10, **options)
    torch.testing.assert_close(unclipped, torch.full_like(x_T, 5.0), rtol=0, atol=1e-12)


def test_clip_x0_must_be_a_positive_bound():
    x_t, epsilon, t = far_out_batch(4)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="clip_x0 must be a positive bound"):
            ddim_step(SCHEDULE, epsilon, t, 10, x_t, clip_x0=bad)
        with pytest.raises(ValueError, match="clip_x0 must be a positive bound"):
            ddpm_step(SCHEDULE, epsilon, t, x_t, clip_x0=bad)
    x_T = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="clip_x0"):
        ddim_sample(far_out_model, x_T, SCHEDULE, num_steps=5, prediction_type="x0", clip_x0=0)
    with pytest.raises(ValueError, match="clip_x0"):
        ddpm_sample(far_out_model, x_T, SCHEDULE, prediction_type="x0", clip_x0=-2)


def test_clip_x0_at_the_clean_end_gives_a_finite_step():
    # t = -1 (ᾱ = 1) is where DDIM inversion starts; recovering ε from a clipped x̂_0 there divides by
    # √(1 - ᾱ) = 0 unless the step keeps the model's own ε.
    from toydiff.samplers import ddim_step
    from toydiff.schedules import make_schedule

    schedule = make_schedule("linear", 1000)
    x = 3 * torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    step = ddim_step(schedule, torch.randn(4, 2), torch.full((4,), -1), torch.full((4,), 10), x,
                     prediction_type="epsilon", clip_x0=1.0)
    assert torch.isfinite(step).all()
