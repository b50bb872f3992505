"""Pitfalls 1, 2, 6, 12, 13 of docs/pitfalls.md for the noise schedules."""
import math

import pytest
import torch

from toydiff.schedules import SCHEDULE_KINDS, NoiseSchedule, broadcast_to_sample, make_schedule


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_every_named_schedule_reaches_noise_at_its_default_length(kind):
    # Pitfall 1: ᾱ_T must be near zero or x_T is far from N(0, I) and sampling starts off-distribution.
    schedule = make_schedule(kind)
    assert schedule.alphas_cumprod.dtype == torch.float64
    assert schedule.alphas_cumprod[-1] < 5e-3
    assert torch.all(schedule.alphas_cumprod[1:] < schedule.alphas_cumprod[:-1])  # strictly losing signal


def test_short_linear_schedule_is_rescaled_to_still_reach_noise():
    # The DDPM betas over only 50 steps would leave ᾱ_T ≈ 0.6; scaling by 1000/T keeps it near zero.
    assert make_schedule("linear", 50).alphas_cumprod[-1] < 1e-3
    unscaled = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 50, dtype=torch.float64), 0)[-1]
    assert unscaled > 0.5


def test_linear_schedule_matches_ddpm_paper():
    schedule = make_schedule("linear", 1000)
    assert schedule.betas[0].item() == pytest.approx(1e-4)
    assert schedule.betas[-1].item() == pytest.approx(0.02)
    # Linear in between: equal increments (a geometric or cosine ramp between the same ends is not).
    increments = schedule.betas.diff()
    torch.testing.assert_close(increments, torch.full_like(increments, (0.02 - 1e-4) / 999), rtol=1e-9, atol=0)


def test_scaled_linear_schedule_has_stable_diffusions_published_terminal_signal():
    # Lin et al. 2024, sec. 3.1: Stable Diffusion's schedule (linear in sqrt(β) from 0.00085 to 0.012,
    # T = 1000) ends at sqrt(ᾱ_T) = 0.068265, SNR 0.004682. Betas linear in β itself end near 0.04.
    schedule = make_schedule("scaled_linear")
    assert schedule.alphas_cumprod[-1].sqrt().item() == pytest.approx(0.068265, abs=5e-7)
    assert schedule.snr(999).item() == pytest.approx(0.004682, abs=5e-7)


def test_linear_schedule_for_tiny_T_is_refused_with_a_clear_error():
    # Pitfall 2: 1000/T scaling gives β_end = 0.02 * 1000 / 10 = 2 > 1.
    with pytest.raises(ValueError, match="beta"):
        make_schedule("linear", 10)


@pytest.mark.parametrize("T", [1000, 20, 4])
def test_cosine_betas_are_clipped_at_0_999(T):
    schedule = make_schedule("cosine", T)
    assert schedule.betas.max() <= 0.999 + 1e-15
    assert (schedule.betas > 0).all()


def test_cosine_matches_its_closed_form():
    schedule, s, T = make_schedule("cosine", 1000), 0.008, 1000
    t = 500
    expected = math.cos(((t + 1) / T + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    assert schedule.alphas_cumprod[t].item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
def test_zero_terminal_snr_rescaling(kind):
    original = make_schedule(kind)
    rescaled = make_schedule(kind, zero_terminal_snr=True)
    assert rescaled.alphas_cumprod[-1].item() == 0.0
    assert rescaled.has_zero_terminal_snr and not original.has_zero_terminal_snr
    assert rescaled.alphas_cumprod[0].item() == pytest.approx(original.alphas_cumprod[0].item(), rel=1e-12)
    assert (rescaled.betas > 0).all() and (rescaled.betas <= 1).all()
    # Lin et al. 2024, Algorithm 1 moves sqrt(ᾱ), not ᾱ, by one affine map: every point of the new
    # sqrt(ᾱ) curve lies on the line through (old, new) at the first and the last step.
    old, new = original.alphas_cumprod.sqrt(), rescaled.alphas_cumprod.sqrt()
    slope = (new[0] - new[-1]) / (old[0] - old[-1])
    torch.testing.assert_close(new, new[-1] + slope * (old - old[-1]), rtol=0, atol=1e-12)


def test_minus_one_means_clean_and_out_of_range_is_refused():
    schedule = make_schedule("linear")
    assert schedule.alpha_bar(-1).item() == 1.0
    assert schedule.alpha_bar(torch.tensor([-1, 0, 999])).tolist()[1] == schedule.alphas_cumprod[0].item()
    with pytest.raises(ValueError, match="timesteps must lie in"):
        schedule.alpha_bar(1000)
    with pytest.raises(ValueError, match="timesteps must lie in"):
        schedule.alpha_bar(-2)


def test_float_timesteps_are_refused():
    # Pitfall 13: a timestep rounded through bf16 (e.g. 999 -> 1000) must never be used silently.
    schedule = make_schedule("linear")
    with pytest.raises(TypeError, match="int64"):
        schedule.alpha_bar(torch.tensor([999.0], dtype=torch.bfloat16))


def test_add_noise_matches_the_forward_process_and_broadcasts_per_example():
    schedule = make_schedule("cosine")
    x0, noise = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    x_t = schedule.add_noise(x0, noise, t)
    for i in range(3):
        a = schedule.alphas_cumprod[t[i]]
        torch.testing.assert_close(x_t[i], a.sqrt() * x0[i] + (1 - a).sqrt() * noise[i])
    # Statistics: at the last step x_t is (almost) pure noise.
    big = schedule.add_noise(torch.ones(100_000, 1), torch.randn(100_000, 1), 999)
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02


def test_timesteps_per_frame_broadcast_against_video_shaped_samples():
    t = torch.tensor([[0, 5, 9], [1, 2, 3]])  # (B, F)
    x = torch.zeros(2, 3, 4, 8, 8)             # (B, F, C, H, W)
    assert broadcast_to_sample(t, x).shape == (2, 3, 1, 1, 1)
    with pytest.raises(ValueError, match="do not broadcast"):
        broadcast_to_sample(torch.zeros(3), x)


def test_invalid_betas_and_options_are_refused():
    with pytest.raises(ValueError, match="float64"):
        NoiseSchedule(torch.full((10,), 0.1, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        NoiseSchedule(torch.tensor([0.1, -0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="bad option"):
        make_schedule("cosine", s_typo=0.1)
    with pytest.raises(ValueError, match="positive integer"):
        make_schedule("cosine", 0)


def test_posterior_variance_is_gaussian_conditioning_and_zero_at_t0():
    # Pitfall 4: β̃_0 = 0 exactly, so the last DDPM step adds no noise.
    schedule = make_schedule("linear")
    assert schedule.posterior_variance(0).item() == 0.0
    # Given x_0, (x_{t-1}, x_t) is jointly Gaussian with Var x_{t-1} = 1 - ᾱ_{t-1}, Var x_t = 1 - ᾱ_t and
    # Cov = sqrt(α_t)(1 - ᾱ_{t-1}); conditioning on x_t leaves Var - Cov² / Var x_t.
    t = torch.arange(1, 1000)
    a, a_prev, alpha = schedule.alphas_cumprod[t], schedule.alphas_cumprod[t - 1], 1 - schedule.betas[t]
    conditioned = (1 - a_prev) - alpha * (1 - a_prev) ** 2 / (1 - a)
    torch.testing.assert_close(schedule.posterior_variance(t), conditioned, rtol=1e-9, atol=1e-15)
