"""Pitfalls 3, 4, 5 and 7 of docs/pitfalls.md: sampling timesteps, DDPM's last step, DDIM's σ(η), inversion."""
import pytest
import torch

from toydiff.samplers import (SPACINGS, ddim_invert, ddim_sample, ddim_sigma, ddim_step, ddpm_sample, ddpm_step,
                              sampling_timesteps)
from toydiff.schedules import make_schedule

# Small tensors and many sequential steps: a second thread only adds contention (see conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


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


# ---- the Gaussian oracle: a closed form for every step ---------------------------------------

class GaussianData:
    """Data x_0 ~ N(m, diag(s²)), whose exact denoiser and probability-flow map are known in closed form.

    The forward process is linear, so x_t ~ N(√ᾱ m, V) per coordinate with V = ᾱ s² + 1 - ᾱ, and
        E[ε   | x_t] = √(1-ᾱ) (x_t - √ᾱ m) / V
        E[x_0 | x_t] = m + √ᾱ s² (x_t - √ᾱ m) / V
        v            = √ᾱ E[ε | x_t] - √(1-ᾱ) E[x_0 | x_t]
    Deterministic DDIM discretises the probability-flow ODE, which for Gaussian data is the monotone map
    between the marginals:  x at level ᾱ = √ᾱ m + √V (x_0 - m) / s.
    Unlike a single point (a delta distribution), whose exact x̂_0 is that point from anywhere, this
    oracle's x̂_0 depends on x_t, so a step taken from the wrong x_t or with the wrong t shows up.
    Each prediction type is written from its own formula, not through the library's conversions.
    """

    def __init__(self, mean, std):
        self.mean = torch.tensor(mean, dtype=torch.float64)  # (D,)
        self.std = torch.tensor(std, dtype=torch.float64)    # (D,)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        noise = torch.randn(n, self.mean.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        return self.mean + self.std * noise  # (n, D)

    def at_level(self, x_0: torch.Tensor, a) -> torch.Tensor:
        """Where the probability-flow ODE carries x_0 (B, D) at noise level ᾱ = a."""
        return a**0.5 * self.mean + (a * self.std**2 + 1 - a) ** 0.5 * (x_0 - self.mean) / self.std

    def from_level(self, x: torch.Tensor, a) -> torch.Tensor:
        """The inverse map: the x_0 that the ODE carries to x (B, D) at level ᾱ = a."""
        return self.mean + self.std * (x - a**0.5 * self.mean) / (a * self.std**2 + 1 - a) ** 0.5

    def posterior_mean(self, x_t: torch.Tensor, a) -> torch.Tensor:
        """E[x_0 | x_t] at level ᾱ = a (Tweedie)."""
        return self.mean + a**0.5 * self.std**2 * (x_t - a**0.5 * self.mean) / (a * self.std**2 + 1 - a)

    def model(self, schedule, prediction_type: str = "epsilon"):
        """The exact ``model(x_t, t)`` for ``prediction_type``, in float64."""

        def exact(x, t):
            a = schedule.alpha_bar(t).view(-1, *[1] * (x.ndim - 1))  # (B, 1)
            variance = a * self.std**2 + 1 - a                        # (B, D)
            epsilon = (1 - a).sqrt() * (x - a.sqrt() * self.mean) / variance
            x0 = self.mean + a.sqrt() * self.std**2 * (x - a.sqrt() * self.mean) / variance
            return {"epsilon": epsilon, "x0": x0, "v": a.sqrt() * epsilon - (1 - a).sqrt() * x0}[prediction_type]

        return exact


# A mean off the origin and one coordinate wider than N(0, 1): a map that ignored m or s would show.
DATA = GaussianData([0.8, -1.2], [0.5, 1.5])
PREDICTION_TYPES = ("epsilon", "x0", "v")
STEP_COUNTS = (10, 30, 100, 300)


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def assert_first_order_convergence(errors: list[float], label: str) -> None:
    """DDIM is an Euler step of the ODE: the error falls like 1/N. From N = 10 to N = 300 (30 times the
    steps) it must fall at least 15 times and at every refinement; a step that is wrong, not merely
    coarse, leaves an error that does not vanish."""
    assert all(fine < coarse for coarse, fine in zip(errors, errors[1:])), (label, errors)
    assert errors[-1] < errors[0] / 15, (label, errors)


# ---- inversion ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_inversion_follows_the_probability_flow_of_gaussian_data(prediction_type, spacing):
    # Pitfall 7. Inversion of x_0 must land where the ODE carries it: the closed form at the highest
    # visited timestep; and sampling back from there must return x_0. Both errors shrink with N.
    schedule = make_schedule("cosine")
    model = DATA.model(schedule, prediction_type)
    x_0 = DATA.sample(256)
    inversion_errors, round_trip_errors = [], []
    for num_steps in STEP_COUNTS:
        top = sampling_timesteps(schedule.num_timesteps, num_steps, spacing)[0]
        exact_noise = DATA.at_level(x_0, schedule.alpha_bar(top))  # (256, 2)
        noise = ddim_invert(model, x_0, schedule, num_steps=num_steps, spacing=spacing,
                            prediction_type=prediction_type)
        back = ddim_sample(model, noise, schedule, num_steps=num_steps, spacing=spacing,
                           prediction_type=prediction_type)
        inversion_errors.append(max_error(noise, exact_noise))
        round_trip_errors.append(max_error(back, x_0))
    assert_first_order_convergence(inversion_errors, "inversion")
    assert_first_order_convergence(round_trip_errors, "round trip")
    # At 300 steps: within 3 % (inversion) and 5 % (round trip) of the data's largest spread s = 1.5.
    assert inversion_errors[-1] < 0.045 and round_trip_errors[-1] < 0.075, (inversion_errors, round_trip_errors)


def test_ddim_inversion_reports_every_step_going_up():
    schedule = make_schedule("cosine")
    states = []
    x_0 = DATA.sample(8)
    ddim_invert(DATA.model(schedule, "v"), x_0, schedule, num_steps=5, prediction_type="v", callback=states.append)
    ascending = sampling_timesteps(1000, 5, "trailing")[::-1]
    assert [(s.t, s.t_next) for s in states] == list(zip([-1] + ascending[:-1], ascending))
    torch.testing.assert_close(states[0].pred_x0, x_0)  # at the clean start x̂_0 is x_0 itself


# ---- sampling from noise -------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddim_sampling_follows_the_probability_flow_of_gaussian_data(prediction_type):
    # From x_T, deterministic DDIM must reach the x_0 that the ODE map gives, closer with more steps.
    schedule = make_schedule("linear")
    model = DATA.model(schedule, prediction_type)
    x_T = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = DATA.from_level(x_T, schedule.alphas_cumprod[-1])  # trailing spacing starts at T - 1
    errors = [max_error(ddim_sample(model, x_T, schedule, num_steps=n, prediction_type=prediction_type), exact)
              for n in STEP_COUNTS]
    assert_first_order_convergence(errors, prediction_type)
    assert errors[-1] < 0.045, errors


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_ddpm_on_gaussian_data_gives_gaussian_samples(prediction_type):
    # Ancestral sampling is stochastic: its samples must have the data's moments, per coordinate.
    schedule = make_schedule("linear")
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(20_000, 2, dtype=torch.float64, generator=generator)
    samples = ddpm_sample(DATA.model(schedule, prediction_type), x_T, schedule, prediction_type=prediction_type,
                          generator=generator)
    # Standard errors: s / √N ≤ 0.011 for the mean, about s / √(2N) ≤ 0.008 for the std.
    torch.testing.assert_close(samples.mean(0), DATA.mean, rtol=0, atol=0.04)
    torch.testing.assert_close(samples.std(0), DATA.std, rtol=0.03, atol=0)
    # Independent coordinates stay independent.
    assert abs(torch.corrcoef(samples.T)[0, 1].item()) < 0.03


def test_ddim_eta_one_with_skipped_steps_has_the_forward_process_conditional_variance():
    # DDIM with η = 1 samples q(x_prev | x_t, x_0) of the Markov forward process also when it skips
    # steps. That variance follows from Gaussian conditioning of the joint (x_prev, x_t) given x_0:
    # Var(x_prev) = 1 - ᾱ_prev, Var(x_t) = 1 - ᾱ_t, Cov = √(ᾱ_t / ᾱ_prev) (1 - ᾱ_prev).
    schedule = make_schedule("cosine")
    for t, t_prev in ((999, 899), (500, 400), (300, 0), (50, 49)):
        a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
        covariance = (a / a_prev).sqrt() * (1 - a_prev)
        conditional_variance = (1 - a_prev) - covariance**2 / (1 - a)
        torch.testing.assert_close(ddim_sigma(schedule, t, t_prev, 1.0) ** 2, conditional_variance,
                                   rtol=1e-9, atol=1e-15)


def test_callback_reports_every_step_with_pred_x0():
    # The x̂_0 of each state is the model's estimate at the x the step started from and its t.
    schedule = make_schedule("linear")
    states = []
    x_T = torch.randn(4, 2, dtype=torch.float64)
    out = ddim_sample(DATA.model(schedule, "v"), x_T, schedule, num_steps=5, prediction_type="v",
                      callback=states.append)
    steps = sampling_timesteps(1000, 5, "trailing")
    assert [s.step for s in states] == list(range(5)) and all(s.num_steps == 5 for s in states)
    assert [(s.t, s.t_next) for s in states] == list(zip(steps, steps[1:] + [-1]))
    starts = [x_T] + [s.x for s in states[:-1]]
    for state, x_t in zip(states, starts):
        torch.testing.assert_close(state.pred_x0, DATA.posterior_mean(x_t, schedule.alpha_bar(state.t)))
    assert torch.equal(states[-1].x, out)


def test_samplers_refuse_epsilon_on_zero_terminal_snr():
    schedule = make_schedule("linear", zero_terminal_snr=True)
    with pytest.raises(ValueError, match="zero-terminal-SNR"):
        ddim_sample(lambda x, t: x, torch.zeros(2, 2), schedule, num_steps=5)


@pytest.mark.parametrize("prediction_type", ["v", "x0"])
def test_zero_terminal_snr_samples_follow_the_probability_flow(prediction_type):
    # At ᾱ_T = 0 the start is pure noise and x̂_0 = m exactly; the ODE map is then x_0 = m + s x_T.
    schedule = make_schedule("cosine", zero_terminal_snr=True)
    model = DATA.model(schedule, prediction_type)
    x_T = torch.randn(256, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    errors = [max_error(ddim_sample(model, x_T, schedule, num_steps=n, prediction_type=prediction_type),
                        DATA.mean + DATA.std * x_T)
              for n in STEP_COUNTS]
    assert_first_order_convergence(errors, prediction_type)
    assert errors[-1] < 0.045, errors


def test_self_conditioned_sampling_passes_each_steps_estimate_to_the_next():
    from toydiff.parameterisation import predict_x0
    from toydiff.samplers import SelfConditioned

    schedule = make_schedule("linear", 100)
    seen = []

    def network(x_t, t, previous_x0=None):
        seen.append((previous_x0, x_t, t))
        return 0.3 * x_t + (0.0 if previous_x0 is None else 0.1 * previous_x0)

    model = SelfConditioned(network, schedule, "v")
    ddim_sample(model, torch.randn(5, 2), schedule, num_steps=4, prediction_type="v")
    assert len(seen) == 4 and seen[0][0] is None
    for before, after in zip(seen, seen[1:]):
        previous_x0, x_t, t = before
        output = 0.3 * x_t + (0.0 if previous_x0 is None else 0.1 * previous_x0)
        assert torch.allclose(after[0], predict_x0(schedule, output, t, x_t, "v").float())
    model(torch.randn(3, 2), torch.full((3,), 50))  # another batch shape: no stale estimate
    assert seen[-1][0] is None
