"""Pitfalls 3, 4, 5 and 7: sampling timesteps, DDPM's last step, DDIM's σ(η), inversion."""
import pytest
import torch

from toydiff.samplers import (SPACINGS, ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddpm_sample, ddpm_step,
                              sampling_timesteps)
from toydiff.schedules import make_schedule


# ---- which timesteps -----------------------------------------------------------------------------

def test_spacings_match_lin_et_al_table_2():
    assert sampling_timesteps(1000, 10, "leading") == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert sampling_timesteps(1000, 10, "trailing") == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert sampling_timesteps(1000, 10, "linspace") == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("T,N", [(1000, 1), (1000, 7), (1000, 50), (1000, 1000), (10, 10), (37, 5)])
def test_every_spacing_gives_n_distinct_descending_valid_steps(spacing, T, N):
    steps = sampling_timesteps(T, N, spacing)
    assert len(steps) == N
    assert steps == sorted(steps, reverse=True) and len(set(steps)) == N
    assert 0 <= steps[-1] and steps[0] <= T - 1
    if N == T:
        assert steps == list(range(T - 1, -1, -1))


def test_bad_step_counts_are_refused():
    with pytest.raises(ValueError, match="exceeds"):
        sampling_timesteps(100, 101, "trailing")
    with pytest.raises(ValueError, match="positive"):
        sampling_timesteps(100, 0, "trailing")
    with pytest.raises(ValueError, match="unknown timestep spacing"):
        sampling_timesteps(100, 10, "uniform")


class RecordingModel:
    """A model that returns zeros and records which timesteps it was asked about."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, t):
        self.seen.append(int(t[0]))
        return torch.zeros_like(x)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("num_steps", [1, 10, 1000])
def test_ddim_visits_the_list_and_lands_on_alpha_bar_one(spacing, num_steps):
    # Pitfall 3: t_prev is the next entry of the list (not t - T//N) and the last step goes to ᾱ = 1.
    schedule = make_schedule("linear")
    model, states = RecordingModel(), []
    x = torch.randn(4, 2, dtype=torch.float64)
    out = ddim_sample(model, x, schedule, num_steps=num_steps, spacing=spacing, callback=states.append)
    steps = sampling_timesteps(1000, num_steps, spacing)
    assert model.seen == steps
    assert [s.t_next for s in states] == steps[1:] + [-1]
    # With ε̂ = 0 the last step returns x̂_0 itself (ᾱ_prev = 1, no noise direction).
    a = schedule.alphas_cumprod[steps[-1]]
    x_before_last = states[-2].x if num_steps > 1 else x
    torch.testing.assert_close(out, x_before_last / a.sqrt())


# ---- DDPM -------------------------------------------------------------------------------------

def test_ddpm_adds_no_noise_at_the_last_step():
    # Pitfall 4: at t = 0 the output is the posterior mean whatever the noise.
    schedule = make_schedule("linear")
    x, out = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    a = ddpm_step(schedule, out, 0, x, noise=torch.randn(8, 2, dtype=torch.float64))
    b = ddpm_step(schedule, out, 0, x, noise=torch.randn(8, 2, dtype=torch.float64))
    torch.testing.assert_close(a, b)
    # ... but per example: only the rows with t = 0 are noise-free.
    t = torch.tensor([0, 5, 0, 5, 0, 5, 0, 5])
    c = ddpm_step(schedule, out, t, x, noise=torch.zeros(8, 2, dtype=torch.float64))
    d = ddpm_step(schedule, out, t, x, noise=torch.ones(8, 2, dtype=torch.float64))
    assert torch.equal(c[t == 0], d[t == 0]) and not torch.allclose(c[t == 5], d[t == 5])


def test_ddpm_posterior_mean_matches_equation_7():
    schedule = make_schedule("cosine")
    x0, noise = torch.randn(16, 2, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    t = 300
    x_t = schedule.add_noise(x0, noise, t)
    # An oracle x0-prediction: the step's mean must be μ̃(x_t, x0) from the paper.
    mean = ddpm_step(schedule, x0, t, x_t, noise=torch.zeros_like(x0), prediction_type="x0")
    a, a_prev, beta = schedule.alphas_cumprod[t], schedule.alphas_cumprod[t - 1], schedule.betas[t]
    expected = a_prev.sqrt() * beta / (1 - a) * x0 + (1 - beta).sqrt() * (1 - a_prev) / (1 - a) * x_t
    torch.testing.assert_close(mean, expected)


def test_ddpm_variances_small_and_large():
    schedule = make_schedule("linear")
    x, out = torch.zeros(200_000, 1, dtype=torch.float64), torch.zeros(200_000, 1, dtype=torch.float64)
    noise = torch.randn(200_000, 1, dtype=torch.float64)
    for variance, expected in (("small", schedule.posterior_variance(500)), ("large", schedule.betas[500])):
        step = ddpm_step(schedule, out, 500, x, noise=noise, variance=variance)
        assert step.var().item() == pytest.approx(expected.item(), rel=0.02)


# ---- DDIM -------------------------------------------------------------------------------------

@pytest.mark.parametrize("eta", [0.0, 0.3, 0.7, 1.0])
def test_ddim_sigma_stays_real_for_eta_in_unit_interval(eta):
    # Pitfall 5: 1 - ᾱ_prev - σ² ≥ 0 for every pair of visited steps.
    schedule = make_schedule("cosine")
    for spacing in SPACINGS:
        steps = sampling_timesteps(1000, 20, spacing)
        for t, t_prev in zip(steps, steps[1:] + [-1]):
            sigma = ddim_sigma(schedule, t, t_prev, eta)
            assert 1 - schedule.alpha_bar(t_prev) - sigma**2 >= -1e-15
    with pytest.raises(ValueError, match="eta"):
        ddim_step(schedule, torch.zeros(1, 2), 10, 5, torch.zeros(1, 2), eta=1.5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "x0", "v"])
def test_ddim_eta_one_over_all_steps_equals_ddpm_posterior(prediction_type):
    schedule = make_schedule("linear")
    x, out = torch.randn(32, 2, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    z = torch.randn(32, 2, dtype=torch.float64)
    for t in (999, 500, 1, 0):
        a = ddpm_step(schedule, out, t, x, noise=z, prediction_type=prediction_type)
        b = ddim_step(schedule, out, t, t - 1, x, eta=1.0, noise=z, prediction_type=prediction_type)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_ddim_step_broadcasts_per_frame_timesteps():
    # The rule the video layer relies on: one noise level per frame, (B, F) against (B, F, C, H, W).
    schedule = make_schedule("linear")
    x, out = torch.randn(2, 3, 4, 2, 2, dtype=torch.float64), torch.randn(2, 3, 4, 2, 2, dtype=torch.float64)
    t, t_prev = torch.tensor([[900, 500, 0], [10, 10, 10]]), torch.tensor([[800, 400, -1], [5, 5, 5]])
    together = ddim_step(schedule, out, t, t_prev, x)
    for b in range(2):
        for f in range(3):
            alone = ddim_step(schedule, out[b, f], int(t[b, f]), int(t_prev[b, f]), x[b, f])
            torch.testing.assert_close(together[b, f], alone)


# ---- oracle models and inversion -------------------------------------------------------------

def delta_oracle(schedule, x_star):
    """The exact ε-prediction when the data is the single point x_star (per example)."""

    def model(x, t):
        a = schedule.alpha_bar(t).view(-1, *[1] * (x.ndim - 1))
        return (x - a.sqrt() * x_star) / (1 - a).sqrt()

    return model


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("num_steps", [1, 10, 50])
def test_ddim_inversion_then_sampling_returns_the_input(spacing, num_steps):
    # Pitfall 7, with an oracle: exact up to float64 rounding.
    schedule = make_schedule("cosine")
    x_star = torch.randn(16, 2, dtype=torch.float64)
    model = delta_oracle(schedule, x_star)
    noise = ddim_invert(model, x_star, schedule, num_steps=num_steps, spacing=spacing)
    back = ddim_sample(model, noise, schedule, num_steps=num_steps, spacing=spacing)
    torch.testing.assert_close(back, x_star, rtol=0, atol=1e-9)


def test_samplers_recover_the_point_of_a_delta_distribution():
    schedule = make_schedule("linear")
    x_star = torch.tensor([[1.5, -0.5]], dtype=torch.float64).repeat(8, 1)
    model = delta_oracle(schedule, x_star)
    x_T = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ddim_sample(model, x_T, schedule, num_steps=20), x_star)
    generator = torch.Generator().manual_seed(2)
    torch.testing.assert_close(ddpm_sample(model, x_T, schedule, generator=generator), x_star)


def test_ddpm_on_gaussian_data_gives_gaussian_samples():
    # For data N(m, s²) the exact ε is linear in x_t; DDPM samples must have the data's moments.
    schedule = make_schedule("linear")
    m, s = 1.0, 0.5

    def model(x, t):
        a = schedule.alpha_bar(t).view(-1, 1).to(x.dtype)
        variance = a * s**2 + (1 - a)
        # E[ε | x_t] = sqrt(1-ᾱ) (x_t - sqrt(ᾱ) m) / Var(x_t)
        return (1 - a).sqrt() * (x - a.sqrt() * m) / variance

    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(20_000, 1, dtype=torch.float64, generator=generator)
    samples = ddpm_sample(model, x_T, schedule, generator=generator)
    assert samples.mean().item() == pytest.approx(m, abs=0.02)
    assert samples.std().item() == pytest.approx(s, rel=0.03)
    # Deterministic DDIM follows the probability-flow ODE, which for Gaussian data is the linear map
    # x_T -> m + s x_T. Few steps under-disperse (discretisation error); many steps converge.
    coarse = ddim_sample(model, x_T, schedule, num_steps=10)
    fine = ddim_sample(model, x_T, schedule, num_steps=1000)
    torch.testing.assert_close(fine, m + s * x_T, rtol=0, atol=0.02)
    assert (fine - (m + s * x_T)).abs().max() < (coarse - (m + s * x_T)).abs().max()


def test_callback_reports_every_step_with_pred_x0():
    schedule = make_schedule("linear")
    states = []
    x_star = torch.randn(4, 2, dtype=torch.float64)
    ddim_sample(delta_oracle(schedule, x_star), torch.randn(4, 2, dtype=torch.float64), schedule, num_steps=5,
                callback=states.append)
    assert [s.step for s in states] == list(range(5))
    for state in states:
        torch.testing.assert_close(state.pred_x0, x_star)


def test_samplers_refuse_epsilon_on_zero_terminal_snr():
    schedule = make_schedule("linear", zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        ddim_sample(lambda x, t: x, torch.zeros(2, 2), schedule, num_steps=5)


def test_v_prediction_on_zero_terminal_snr_samples_cleanly():
    schedule = make_schedule("cosine", zero_terminal_snr=True)
    x_star = torch.randn(4, 2, dtype=torch.float64)

    def v_oracle(x, t):
        a = schedule.alpha_bar(t).view(-1, 1)
        epsilon = (x - a.sqrt() * x_star) / (1 - a).sqrt()
        return a.sqrt() * epsilon - (1 - a).sqrt() * x_star

    out = ddim_sample(v_oracle, torch.randn(4, 2, dtype=torch.float64), schedule, num_steps=10,
                      prediction_type="v")
    torch.testing.assert_close(out, x_star)
