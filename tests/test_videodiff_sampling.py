"""Diffusion-forcing sampling of videos (videodiff.sampling): the schedule invariants of docs/pitfalls.md,
pitfall 15, per-frame DDIM steps, history guidance and the sliding-window rollout.

Two closed-form oracles stand in for a trained video model:
- ``IndependentFrames``: every frame is its own draw from N(m, s²). The exact denoiser of a frame ignores
  the other frames, so whatever the schedule, each frame must follow the deterministic DDIM map.
- ``StaticVideo``: one draw x_0 ~ N(m, s²) repeated in every frame. The exact denoiser pools what all frames
  say about x_0, so it depends on the history, and every sample must be a constant video equal to its
  context frame: a schedule that loses the history, or a history that is not fed back, shows up.
"""
import math

import pytest
import torch

from toydiff.samplers import ddim_sample, ddim_step, ddpm_step, sampling_timesteps
from toydiff.schedules import make_schedule
from videodiff.sampling import (CLEAN_LEVEL, SCHEDULING_KINDS, HistoryGuidance, anchored, check_timestep_matrix, in_front,
                                memory_indices, per_branch,
                                history_guided_prediction, rollout, sample_window, scheduling_matrix,
                                timesteps_from_indices)

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = make_schedule("cosine")   # T = 1000
T = SCHEDULE.num_timesteps
PREDICTION_TYPES = ("epsilon", "x0", "v")
MEAN, STD = torch.tensor([0.8, -1.2], dtype=torch.float64), torch.tensor([0.5, 1.5], dtype=torch.float64)


# ---- oracles -------------------------------------------------------------------------------------

def _alpha_bar(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ᾱ_t shaped against x: t (B, F) or (B,), x (B, F, C, H, W) or (B, C)."""
    return SCHEDULE.alpha_bar(t).view(*t.shape, *[1] * (x.ndim - t.ndim))


def _channels(values: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A per-channel (C,) tensor shaped against x, whose channels follow t's dims."""
    return values.view(-1, *[1] * (x.ndim - t.ndim - 1))


def _output(x0, epsilon, a, prediction_type):
    return {"epsilon": epsilon, "x0": x0, "v": a.sqrt() * epsilon - (1 - a).sqrt() * x0}[prediction_type]


def independent_frames(prediction_type: str):
    """The exact denoiser of frames drawn independently from N(m, diag(s²)), one channel at a time."""

    def exact(x, t):
        a, m, s = _alpha_bar(t, x), _channels(MEAN, x, t), _channels(STD, x, t)
        variance = a * s**2 + 1 - a
        epsilon = (1 - a).sqrt() * (x - a.sqrt() * m) / variance
        x0 = m + a.sqrt() * s**2 * (x - a.sqrt() * m) / variance
        return _output(x0, epsilon, a, prediction_type)

    return exact


def ddim_map(x_T: torch.Tensor, a: float) -> torch.Tensor:
    """Where the probability-flow ODE of N(m, s²) carries x_T (at level ᾱ = a) back to data."""
    m, s = MEAN.view(-1, 1, 1), STD.view(-1, 1, 1)
    return m + s * (x_T - a**0.5 * m) / (a * s**2 + 1 - a) ** 0.5


def static_video(prediction_type: str):
    """The exact denoiser of a video whose frames all equal one x_0 ~ N(m, diag(s²)).

    Frame f is an observation y_f = √ᾱ_f x_0 + √(1-ᾱ_f) ε_f, so the posterior of x_0 pools the frames:
        precision  = 1/s² + Σ_f ᾱ_f / (1 - ᾱ_f)
        E[x_0 | y] = (m/s² + Σ_f √ᾱ_f y_f / (1 - ᾱ_f)) / precision
        E[ε_f | y] = (y_f - √ᾱ_f E[x_0 | y]) / √(1 - ᾱ_f)
    """

    def exact(x, t):
        a, m, s = _alpha_bar(t, x), _channels(MEAN, x, t), _channels(STD, x, t)   # (B, F, 1, 1, 1), (C, 1, 1)
        precision = 1 / s**2 + (a / (1 - a)).sum(dim=1, keepdim=True)            # (B, 1, C, 1, 1)
        x0 = (m / s**2 + (a.sqrt() * x / (1 - a)).sum(dim=1, keepdim=True)) / precision
        epsilon = (x - a.sqrt() * x0) / (1 - a).sqrt()                             # (B, F, C, H, W)
        return _output(x0.expand_as(x), epsilon, a, prediction_type)

    return exact


class Recorder:
    """Wraps a denoiser and keeps a copy of every (x, t) it was called with."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, x, t):
        self.calls.append((x.clone(), t.clone()))
        return self.model(x, t)


def noise(*shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def static_frames(batch: int, num_frames: int, seed=0) -> torch.Tensor:
    """(B, F, 2, 1, 1) videos of the static-video data: one draw repeated in every frame."""
    x0 = MEAN.view(1, 1, 2, 1, 1) + STD.view(1, 1, 2, 1, 1) * noise(batch, 1, 2, 1, 1, seed=seed)
    return x0.expand(batch, num_frames, 2, 1, 1).clone()


def window_timesteps(kind, num_frames, num_steps, context=0, spacing="trailing"):
    return timesteps_from_indices(scheduling_matrix(kind, num_frames, num_steps, context), T, num_steps, spacing)


# ---- 1. scheduling matrices ------------------------------------------------------------------------

CONTEXTS = [(1, 1, 0), (5, 4, 0), (6, 3, 2), (5, 4, torch.tensor([False, True, False, True, False]))]


@pytest.mark.parametrize("kind", SCHEDULING_KINDS)
@pytest.mark.parametrize("num_frames,num_steps,context", CONTEXTS)
def test_scheduling_matrices_keep_the_invariants_of_pitfall_15(kind, num_frames, num_steps, context):
    matrix = scheduling_matrix(kind, num_frames, num_steps, context)
    is_context = context if isinstance(context, torch.Tensor) else torch.arange(num_frames) < context
    generated = int((~is_context).sum())
    lag = {"full_sequence": 0, "pyramid": 1, "autoregressive": num_steps}[kind]
    assert matrix.dtype == torch.int64 and matrix.shape == (num_steps + (generated - 1) * lag + 1, num_frames)
    steps = matrix[1:] - matrix[:-1]                                    # (rows - 1, F)
    assert (steps <= 0).all(), "a level rose"
    assert ((steps == 0) | (steps == -1)).all(), "a frame skipped a level"
    assert (steps.sum(dim=1) < 0).all(), "a row where nothing moves costs a model call for nothing"
    assert (matrix[0, ~is_context] == num_steps).all() and (matrix[-1] == 0).all()
    assert (matrix[:, is_context] == 0).all(), "context must stay clean"


def _first_row_below(column: torch.Tensor, level: int) -> int:
    return int((column < level).nonzero()[0]) if level > 0 else int((column == 0).nonzero()[0])


@pytest.mark.parametrize("num_steps", [1, 3, 6])
def test_pyramid_lags_one_step_and_autoregressive_finishes_frames_in_order(num_steps):
    frames = 5
    starts, ends = {}, {}
    for kind in SCHEDULING_KINDS:
        matrix = scheduling_matrix(kind, frames, num_steps)
        starts[kind] = [_first_row_below(matrix[:, f], num_steps) for f in range(frames)]   # first row below N
        ends[kind] = [_first_row_below(matrix[:, f], 0) for f in range(frames)]             # first clean row
    assert starts["full_sequence"] == [1] * frames and ends["full_sequence"] == [num_steps] * frames
    # Pyramid: each frame starts and ends exactly one row after the previous one, and is never cleaner than it.
    assert starts["pyramid"] == [1 + f for f in range(frames)]
    assert ends["pyramid"] == [num_steps + f for f in range(frames)]
    pyramid = scheduling_matrix("pyramid", frames, num_steps)
    assert (pyramid[:, 1:] >= pyramid[:, :-1]).all()
    # Autoregressive: frame f takes its first step on the row after frame f - 1 becomes clean.
    assert starts["autoregressive"][1:] == [end + 1 for end in ends["autoregressive"][:-1]]
    assert ends["autoregressive"] == [num_steps * (f + 1) for f in range(frames)]


@pytest.mark.parametrize("spacing", ["trailing", "leading", "linspace"])
def test_indices_map_onto_toydiffs_ladder_with_zero_clean(spacing):
    ladder = sampling_timesteps(T, 10, spacing)                       # descending
    timesteps = timesteps_from_indices(torch.arange(11), T, 10, spacing)
    assert timesteps.tolist() == [-1] + ladder[::-1]
    assert timesteps[10] == ladder[0] and (timesteps[1:] > timesteps[:-1]).all()
    with pytest.raises(ValueError, match="0..10"):
        timesteps_from_indices(torch.tensor([11]), T, 10)
    with pytest.raises(ValueError, match="0..10"):
        timesteps_from_indices(torch.tensor([-1]), T, 10)


def test_scheduling_matrix_refuses_bad_arguments():
    with pytest.raises(ValueError, match="full_sequence, pyramid, autoregressive"):
        scheduling_matrix("trapezoid", 4, 10)
    with pytest.raises(ValueError, match="nothing to generate"):
        scheduling_matrix("pyramid", 3, 10, context=3)
    with pytest.raises(ValueError, match="num_steps"):
        scheduling_matrix("pyramid", 3, 0)
    with pytest.raises(ValueError, match="bool tensor of shape"):
        scheduling_matrix("pyramid", 3, 10, context=torch.tensor([1, 0, 0]))


def test_broken_schedules_are_refused_before_sampling():
    good = window_timesteps("pyramid", 4, 5, context=1)
    check_timestep_matrix(good, 1, SCHEDULE)
    rising = good.clone()
    rising[3, 2] = rising[2, 2] + 1
    x = noise(1, 4, 2, 1, 1)
    model = Recorder(independent_frames("epsilon"))
    with pytest.raises(ValueError, match="frame 2's noise level rises"):
        sample_window(model, x, 1, SCHEDULE, rising)
    unfinished = good.clone()
    unfinished[-1, 3] = 0
    with pytest.raises(ValueError, match=r"frames \[3\] are not clean"):
        sample_window(model, x, 1, SCHEDULE, unfinished)
    with pytest.raises(ValueError, match=r"context frames \[1\] are not clean"):
        sample_window(model, x, 2, SCHEDULE, good)
    assert model.calls == []


# ---- 2. one window -------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_per_frame_timesteps_step_each_frame_as_a_frame_by_frame_loop_would(prediction_type):
    model = Recorder(static_video(prediction_type))                   # depends on every frame: a fair test
    timesteps = torch.tensor([[-1, 999, 500, 500, 200],
                              [-1, 800, 500, 300, -1],
                              [-1, -1, -1, -1, -1]])
    x = torch.cat([static_frames(3, 1), noise(3, 4, 2, 1, 1, seed=1)], dim=1)   # (3, 5, 2, 1, 1)
    after_first_row = []
    sample_window(model, x, 1, SCHEDULE, timesteps, prediction_type=prediction_type,
                  callback=lambda row, t, state: after_first_row.append(state) if row == 1 else None)
    x_t, t_model = model.calls[0]
    assert t_model.tolist() == [[0, 999, 500, 500, 200]] * 3          # clean context is shown at CLEAN_LEVEL
    assert torch.equal(x_t, x)
    prediction = static_video(prediction_type)(x, t_model)
    state = after_first_row[0]
    for b in range(3):
        for f in (1, 3, 4):
            alone = ddim_step(SCHEDULE, prediction[b, f], int(timesteps[0, f]), int(timesteps[1, f]), x[b, f],
                              prediction_type=prediction_type)
            torch.testing.assert_close(state[b, f], alone, rtol=1e-12, atol=1e-12)
    assert torch.equal(state[:, 2], x[:, 2]) and torch.equal(state[:, 0], x[:, 0])   # standing frames untouched


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_full_sequence_from_pure_noise_is_the_deterministic_ddim_map(prediction_type):
    model = independent_frames(prediction_type)
    x_T = noise(64, 3, 2, 1, 1, seed=2)
    exact = ddim_map(x_T, SCHEDULE.alphas_cumprod[-1].item())      # trailing spacing starts at t = T - 1
    errors = []
    for num_steps in (10, 100):
        video = sample_window(model, x_T, 0, SCHEDULE, window_timesteps("full_sequence", 3, num_steps),
                              prediction_type=prediction_type)
        # toydiff's own DDIM sampler, frame by frame as (B·F, C) points: the same map.
        frames = ddim_sample(model, x_T.reshape(-1, 2), SCHEDULE, num_steps=num_steps, prediction_type=prediction_type)
        torch.testing.assert_close(video.reshape(-1, 2), frames, rtol=1e-12, atol=1e-12)
        errors.append((video - exact).abs().max().item())
    # ... which approaches the exact ODE map at first order (10 times the steps: about a tenth of the error),
    # within 5 % of the widest spread s = 1.5 at 100 steps.
    assert errors[1] < errors[0] / 8 and errors[1] < 0.075, errors


@pytest.mark.parametrize("kind", ["pyramid", "autoregressive"])
def test_every_schedule_gives_independent_frames_the_same_ddim_map(kind):
    # Each frame still visits every level of the ladder, only at other rows; its exact denoiser ignores
    # the other frames, so it must land where full-sequence sampling lands it. A skipped level would not.
    model = independent_frames("v")
    x = torch.cat([static_frames(16, 1), noise(16, 4, 2, 1, 1, seed=3)], dim=1)   # (16, 5, 2, 1, 1), 1 context
    reference = sample_window(model, x, 1, SCHEDULE, window_timesteps("full_sequence", 5, 12, context=1),
                              prediction_type="v")
    video = sample_window(model, x, 1, SCHEDULE, window_timesteps(kind, 5, 12, context=1), prediction_type="v")
    torch.testing.assert_close(video, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", SCHEDULING_KINDS)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_every_schedule_ends_on_the_support_of_static_videos(kind, prediction_type):
    # With one clean context frame every generated frame must become that frame; without context the
    # frames must still agree with each other. (Not to 1e-12: shown at t = 0, ᾱ_0 = 1 - 4e-5, the context
    # frame is an almost but not perfectly sure observation, and the exact posterior weighs it so.)
    model = static_video(prediction_type)
    context = static_frames(8, 1, seed=4)
    x = torch.cat([context, noise(8, 4, 2, 1, 1, seed=5)], dim=1)
    video = sample_window(model, x, 1, SCHEDULE, window_timesteps(kind, 5, 10, context=1),
                          prediction_type=prediction_type)
    assert (video[:, 1:] - context).abs().max() < 5e-3
    free = sample_window(model, x[:, 1:], 0, SCHEDULE, window_timesteps(kind, 4, 10), prediction_type=prediction_type)
    assert (free - free[:, :1]).abs().max() < 5e-3
    assert free.std(dim=0).min() > 0.3                                 # distinct videos, not one collapsed point


def test_context_frames_come_back_bit_for_bit_whatever_the_model_says():
    def wild(x, t):
        return 1e3 * x + t.view(*t.shape, 1, 1, 1)

    x = torch.cat([static_frames(2, 2), noise(2, 3, 2, 1, 1)], dim=1)
    context = torch.tensor([True, False, True, False, False])
    out = sample_window(wild, x, context, SCHEDULE, window_timesteps("pyramid", 5, 4, context=context),
                        prediction_type="x0")
    assert torch.equal(out[:, context], x[:, context])
    video = rollout(wild, x[:, :2], 5, 4, SCHEDULE, num_steps=3, prediction_type="x0", stabilization_level=50,
                    guidance=HistoryGuidance("vanilla", 2.0))
    assert torch.equal(video[:, :2], x[:, :2])


def test_ddpm_is_ancestral_sampling_over_consecutive_timesteps():
    schedule = make_schedule("linear", 50)
    model = independent_frames("epsilon")

    def exact(x, t):  # the oracle, on this schedule
        a = schedule.alpha_bar(t).view(*t.shape, 1, 1, 1)
        m, s = MEAN.view(-1, 1, 1), STD.view(-1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * m) / (a * s**2 + 1 - a)

    x_T = noise(3, 2, 2, 1, 1)
    timesteps = timesteps_from_indices(scheduling_matrix("full_sequence", 2, 50), 50, 50)
    video = sample_window(exact, x_T, 0, schedule, timesteps, sampler="ddpm",
                          generator=torch.Generator().manual_seed(7))
    generator, x = torch.Generator().manual_seed(7), x_T
    torch.randn(x.shape, generator=generator, dtype=x.dtype)  # the window's history noise, always drawn first
    for t in range(49, -1, -1):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = ddpm_step(schedule, exact(x, torch.full((3, 2), t)), torch.full((3, 2), t), x, noise=z)
    torch.testing.assert_close(video, x, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="eta = 1"):
        sample_window(model, x_T, 0, SCHEDULE, window_timesteps("full_sequence", 2, 5), sampler="ddpm", eta=0.5)


# ---- 3. history guidance ---------------------------------------------------------------------------

HISTORY = torch.tensor([True, True, False, False])


def guidance_inputs(seed=0):
    """A half-denoised static video: two clean history frames and two frames at t = 600."""
    clean = static_frames(4, 4, seed=seed)
    x = clean.clone()
    x[:, 2:] = SCHEDULE.add_noise(clean[:, 2:], noise(4, 2, 2, 1, 1, seed=seed + 1), 600)
    t = torch.tensor([[0, 0, 600, 600]] * 4)
    return x, t, noise(4, 4, 2, 1, 1, seed=seed + 2)


def shown(x, levels, history_noise):
    """x with history frames 0 and 1 shown at the given levels (0: clean, T - 1: pure noise)."""
    x = x.clone()
    for f, level in enumerate(levels):
        if level == T - 1:
            x[:, f] = history_noise[:, f]
        elif level > 0:
            x[:, f] = SCHEDULE.add_noise(x[:, f], history_noise[:, f], level)
    return x


def call(model, x, t, levels, history_noise):
    t = t.clone()
    t[:, :2] = torch.tensor(levels)
    return model(shown(x, levels, history_noise), t)


@pytest.mark.parametrize("guidance", [
    None,
    HistoryGuidance(),
    HistoryGuidance("vanilla", 1.0),
    HistoryGuidance("fractional", 1.0, fractional_level=300),
    HistoryGuidance("temporal", 1.0, temporal_windows=(None,), temporal_weights=(2.5,)),
], ids=["default", "none", "vanilla", "fractional", "temporal"])
def test_guidance_scale_one_is_the_conditional_prediction_exactly(guidance):
    model = Recorder(static_video("v"))
    x, t, history_noise = guidance_inputs()
    guided = history_guided_prediction(model, x, t, HISTORY, SCHEDULE, guidance, history_noise=history_noise)
    assert torch.equal(guided, static_video("v")(x, t))
    assert len(model.calls) == 1 and model.calls[0][0].shape[0] == 4   # one branch, one call


def test_vanilla_guidance_is_scale_times_conditional_minus_unconditional():
    model = Recorder(static_video("epsilon"))
    x, t, history_noise = guidance_inputs()
    guided = history_guided_prediction(model, x, t, HISTORY, SCHEDULE, HistoryGuidance("vanilla", 2.0),
                                       history_noise=history_noise)
    cond = call(static_video("epsilon"), x, t, [0, 0], history_noise)
    uncond = call(static_video("epsilon"), x, t, [T - 1, T - 1], history_noise)
    assert (cond - uncond)[:, 2:].abs().max() > 0.1                    # the history matters to this model
    torch.testing.assert_close(guided, 2 * cond - uncond, rtol=1e-12, atol=1e-12)
    assert len(model.calls) == 1 and model.calls[0][0].shape[0] == 8   # both branches in one call


def test_fractional_guidance_shows_history_at_k_H_in_its_extra_branch():
    model = Recorder(static_video("x0"))
    x, t, history_noise = guidance_inputs(seed=3)
    levels = torch.tensor([0, 500, 0, 0])                              # frame 1 is stabilised history at 500
    guidance = HistoryGuidance("fractional", 3.0, fractional_level=300)
    guided = history_guided_prediction(model, x, t, HISTORY, SCHEDULE, guidance, history_levels=levels,
                                       history_noise=history_noise)
    (inputs, times), = model.calls
    branch_levels = sorted(times.view(-1, 4, 4)[:, 0, :2].tolist())  # history levels of each branch
    assert branch_levels == [[0, 500], [300, 500], [T - 1, T - 1]]   # k_H, but never below a stabilised level
    assert (times[:, 2:] == 600).all()                                 # the frames to generate, in every branch
    cond = call(static_video("x0"), x, t, [0, 500], history_noise)
    fractional = call(static_video("x0"), x, t, [300, 500], history_noise)
    uncond = call(static_video("x0"), x, t, [T - 1, T - 1], history_noise)
    assert any(torch.equal(branch, shown(x, [300, 500], history_noise)) for branch in inputs.split(4))
    torch.testing.assert_close(guided, cond + 2.0 * (fractional - uncond), rtol=1e-12, atol=1e-12)


def test_temporal_guidance_weighs_its_history_windows():
    x, t, history_noise = guidance_inputs(seed=5)
    model = static_video("epsilon")
    guidance = HistoryGuidance("temporal", 2.0, temporal_windows=(None, 1), temporal_weights=(1.0, 3.0))
    guided = history_guided_prediction(model, x, t, HISTORY, SCHEDULE, guidance, history_noise=history_noise)
    everything = call(model, x, t, [0, 0], history_noise)
    last_only = call(model, x, t, [T - 1, 0], history_noise)          # the most recent history frame only
    uncond = call(model, x, t, [T - 1, T - 1], history_noise)
    # u + Σ_i w_i (c_i - u), with weights w = 2.0 · (1, 3) / 4 summing to the scale.
    expected = uncond + 0.5 * (everything - uncond) + 1.5 * (last_only - uncond)
    torch.testing.assert_close(guided, expected, rtol=1e-12, atol=1e-12)
    # One window holding all the history is vanilla guidance, to the bit.
    single = HistoryGuidance("temporal", 2.0, temporal_windows=(None,), temporal_weights=(0.7,))
    assert torch.equal(history_guided_prediction(model, x, t, HISTORY, SCHEDULE, single, history_noise=history_noise),
                       history_guided_prediction(model, x, t, HISTORY, SCHEDULE, HistoryGuidance("vanilla", 2.0),
                                                 history_noise=history_noise))


def test_guidance_reaches_generated_history_in_a_long_rollout():
    # K = 1, window 3, one new frame per window: from the third window on, all history is generated.
    model = Recorder(static_video("epsilon"))
    context = static_frames(2, 1)
    rollout(model, context, 4, 3, SCHEDULE, frames_per_window=1, num_steps=4, prediction_type="epsilon",
            guidance=HistoryGuidance("vanilla", 2.0), stabilization_level=30)
    assert len(model.calls) == 4 * 4
    for i, (x, t) in enumerate(model.calls):
        history = min(2, 1 + i // 4)                                   # known frames in this window, at most 2
        cond_t, uncond_t = t[:2, :history], t[2:, :history]
        assert (uncond_t == T - 1).all(), f"call {i}: a history frame kept its information in the unconditional branch"
        real = 1 if i < 8 else 0                                        # window 3 on: the real frame has slid out
        assert (cond_t[:, :real] == CLEAN_LEVEL).all() and (cond_t[:, real:] == 30).all()


def test_frames_finished_inside_a_window_become_guided_and_stabilised_history():
    # Autoregressive: frame 1 is clean after the first 3 rows, then conditions frame 2 as history does.
    model = Recorder(static_video("v"))
    x = torch.cat([static_frames(2, 1), noise(2, 2, 2, 1, 1)], dim=1)
    sample_window(model, x, 1, SCHEDULE, window_timesteps("autoregressive", 3, 3, context=1), prediction_type="v",
                  guidance=HistoryGuidance("vanilla", 2.0), stabilization_level=25)
    assert len(model.calls) == 6
    for i, (_, t) in enumerate(model.calls):
        cond_t, uncond_t = t[:2], t[2:]
        assert (cond_t[:, 0] == CLEAN_LEVEL).all() and (uncond_t[:, 0] == T - 1).all()
        if i >= 3:                                                     # frame 1 is now generated history
            assert (cond_t[:, 1] == 25).all() and (uncond_t[:, 1] == T - 1).all()
        else:                                                          # frame 1 is still being denoised
            assert torch.equal(cond_t[:, 1], uncond_t[:, 1]) and (cond_t[:, 1] < T).all()


def test_bad_guidance_is_refused_with_the_allowed_values():
    with pytest.raises(ValueError, match="none, vanilla, fractional, temporal"):
        HistoryGuidance("cfg", 2.0)
    for scale in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="finite number >= 0"):
            HistoryGuidance("vanilla", scale)
    with pytest.raises(ValueError, match="has no scale"):
        HistoryGuidance("none", 2.0)
    with pytest.raises(ValueError, match="fractional_level"):
        HistoryGuidance("fractional", 2.0)
    with pytest.raises(ValueError, match="mode 'fractional' only"):
        HistoryGuidance("vanilla", 2.0, fractional_level=100)
    with pytest.raises(ValueError, match="one weight per history window"):
        HistoryGuidance("temporal", 2.0, temporal_windows=(None, 2), temporal_weights=(1.0,))
    with pytest.raises(ValueError, match="number >= 1 of most recent"):
        HistoryGuidance("temporal", 2.0, temporal_windows=(0,), temporal_weights=(1.0,))
    with pytest.raises(ValueError, match="finite numbers > 0"):
        HistoryGuidance("temporal", 2.0, temporal_windows=(None,), temporal_weights=(0.0,))
    x, t, history_noise = guidance_inputs()
    with pytest.raises(ValueError, match="0..999"):
        history_guided_prediction(static_video("v"), x, t, HISTORY, SCHEDULE,
                                  HistoryGuidance("fractional", 2.0, fractional_level=T))


# ---- 4. rollout ------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_context,length,frames_per_window", [
    (1, 1, None), (1, 5, None), (2, 7, None), (1, 7, 2), (3, 4, 2), (2, 6, 1),
])
def test_rollout_slides_its_window_over_any_length(num_context, length, frames_per_window):
    window, num_steps = 4, 3
    model = Recorder(static_video("v"))
    context = static_frames(2, num_context, seed=6)
    video = rollout(model, context, length, window, SCHEDULE, frames_per_window=frames_per_window,
                    num_steps=num_steps, prediction_type="v")
    assert video.shape == (2, num_context + length, 2, 1, 1)
    assert torch.equal(video[:, :num_context], context)
    new = window - num_context if frames_per_window is None else frames_per_window
    calls = iter(model.calls[::num_steps])                             # the first call of every window
    known = num_context
    while known < num_context + length:
        history, kept = min(window - new, known), min(new, num_context + length - known)
        x, t = next(calls)
        assert x.shape[1] == history + new <= window       # the last window padded to n_new new frames too
        assert torch.equal(x[:, :history], video[:, known - history:known])   # the last known frames, clean
        assert (t[:, :history] == CLEAN_LEVEL).all() and (t[:, history:] == T - 1).all()
        known += kept
    assert next(calls, None) is None
    # History carried through every window: the whole video is its first frame, repeated.
    assert (video - context[:, :1]).abs().max() < 1e-3


@pytest.mark.parametrize("length,frames_per_window", [(2, None), (4, None), (7, None), (9, 1), (6, 3)])
def test_a_rollout_from_no_real_frame_draws_its_first_window_whole_then_slides(length, frames_per_window):
    window, num_steps = 4, 3
    model = Recorder(static_video("v"))
    nothing = torch.zeros(2, 0, 2, 1, 1, dtype=torch.float64)
    video = rollout(model, nothing, length, window, SCHEDULE, frames_per_window=frames_per_window,
                    num_steps=num_steps, prediction_type="v", generator=torch.Generator().manual_seed(4))
    assert video.shape == (2, length, 2, 1, 1)
    new = window // 2 if frames_per_window is None else frames_per_window   # default: half the window as history
    calls = iter(model.calls[::num_steps])                             # the first call of every window
    x, t = next(calls)
    assert x.shape[1] == window and (t == T - 1).all()                 # a whole window of noise, no history
    known = min(window, length)
    while known < length:
        history, kept = window - new, min(new, length - known)
        x, t = next(calls)
        assert x.shape[1] == window and torch.equal(x[:, :history], video[:, known - history:known])
        assert (t[:, :history] == CLEAN_LEVEL).all() and (t[:, history:] == T - 1).all()
        known += kept
    assert next(calls, None) is None
    # The first window is one draw: the static-video denoiser makes all its frames the same, and later windows
    # carry them on.
    assert (video - video[:, :1]).abs().max() < 1e-3 and video[:, 0].abs().max() > 0.1
    # A shorter video from nothing is the start of a longer one drawn with the same seed.
    shorter = rollout(static_video("v"), nothing, length - 1, window, SCHEDULE, frames_per_window=frames_per_window,
                      num_steps=num_steps, prediction_type="v", generator=torch.Generator().manual_seed(4))
    assert torch.equal(shorter, video[:, :length - 1])
    with pytest.raises(ValueError, match="with no real context frame the first window has none"):
        rollout(model, nothing, length, window, SCHEDULE, memory_frames=2)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_shorter_rollout_is_the_start_of_a_longer_one_its_last_window_padded(sampler):
    # The static-video denoiser pools every frame of its window, so a last window cut short (2 new frames
    # instead of 3) would denoise differently; padded, it draws and denoises what the longer rollout does.
    context = static_frames(2, 2, seed=11)
    videos = {length: rollout(static_video("v"), context, length, 5, SCHEDULE, num_steps=4, prediction_type="v",
                              sampler=sampler, generator=torch.Generator().manual_seed(3))
              for length in (5, 6)}
    assert videos[5].shape[1] == 2 + 5
    assert torch.equal(videos[5], videos[6][:, :2 + 5])


def test_stabilised_history_is_shown_noised_at_its_level_and_returned_clean():
    model = Recorder(static_video("v"))
    context = static_frames(2, 1, seed=8)
    video = rollout(model, context, 2, 3, SCHEDULE, frames_per_window=1, num_steps=3, prediction_type="v",
                    stabilization_level=40)
    second_window = model.calls[3:]                                    # history: the context, then frame 1
    for x, t in second_window:
        assert (t[:, 0] == CLEAN_LEVEL).all() and torch.equal(x[:, 0], context[:, 0])
        assert (t[:, 1] == 40).all() and not torch.equal(x[:, 1], video[:, 1])
        assert torch.equal(x[:, 1], second_window[0][0][:, 1])        # noised once, the same in every row
    assert (video - context).abs().max() < 1e-2


def test_rollout_refuses_bad_arguments_naming_what_was_wrong():
    model, context = static_video("v"), static_frames(1, 3)
    with pytest.raises(ValueError, match="3 context frames for a window of 3"):
        rollout(model, context, 4, 3, SCHEDULE)
    for length in (0, -2):
        with pytest.raises(ValueError, match="length"):
            rollout(model, context[:, :1], length, 3, SCHEDULE)
    with pytest.raises(ValueError, match="full_sequence, pyramid, autoregressive"):
        rollout(model, context[:, :1], 2, 3, SCHEDULE, kind="spiral")
    with pytest.raises(ValueError, match="frames_per_window must be in 1..2"):
        rollout(model, context[:, :1], 2, 3, SCHEDULE, frames_per_window=3)
    with pytest.raises(ValueError, match="none, vanilla, fractional, temporal"):
        rollout(model, context[:, :1], 2, 3, SCHEDULE, guidance=HistoryGuidance("history"))


def test_an_anchored_denoiser_puts_the_anchor_clean_in_front_of_every_window_and_drops_it():
    calls = []

    def recording(x, t):
        calls.append((x.clone(), t.clone()))
        return 2 * x

    anchor = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 5, 3, 4, 4, generator=torch.Generator().manual_seed(1))   # two guidance branches of 2
    t = torch.randint(0, 1000, (4, 5), generator=torch.Generator().manual_seed(2))
    output = anchored(recording, anchor)(x, t)
    (seen_x, seen_t), = calls
    assert seen_x.shape == (4, 6, 3, 4, 4) and torch.equal(seen_x[:, 1:], x) and torch.equal(seen_t[:, 1:], t)
    assert torch.equal(seen_x[:, 0], torch.cat([anchor, anchor])) and (seen_t[:, 0] == CLEAN_LEVEL).all()
    assert torch.equal(output, 2 * x)  # the anchor's prediction is dropped
    with pytest.raises(ValueError, match="do not fit windows"):
        anchored(recording, anchor)(x[:3], t[:3])
    with pytest.raises(ValueError, match=r"one frame per video, \(B, C, H, W\)"):
        anchored(recording, anchor[:, None])


def test_a_rollout_with_an_anchor_shows_it_in_front_of_every_window_guidance_branches_included():
    calls = []

    def recording(x, t):
        calls.append(x[:, 0].clone())
        return torch.zeros_like(x)

    context = torch.randn(2, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    anchor = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    video = rollout(recording, context, 7, 4, SCHEDULE, num_steps=3, prediction_type="v",
                    guidance=HistoryGuidance("vanilla", 2.0), anchor=anchor, generator=torch.Generator().manual_seed(2))
    assert video.shape == (2, 9, 3, 4, 4) and len(calls) == 4 * 3  # 4 windows of 2 new frames, 3 rows each
    assert all(torch.equal(seen, anchor.repeat(len(seen) // 2, 1, 1, 1)) for seen in calls)
    assert any(len(seen) == 4 for seen in calls)  # guidance's two branches, each with the anchor
    # The same as wrapping the denoiser by hand.
    by_hand = rollout(anchored(recording, anchor), context, 7, 4, SCHEDULE, num_steps=3, prediction_type="v",
                      guidance=HistoryGuidance("vanilla", 2.0), generator=torch.Generator().manual_seed(2))
    assert torch.equal(video, by_hand)
    with pytest.raises(ValueError, match=r"the anchor must be one frame per video, of shape \(2, 3, 4, 4\)"):
        rollout(recording, context, 7, 4, SCHEDULE, anchor=anchor[:1])


def test_per_video_values_are_tiled_once_per_guidance_branch():
    labels = torch.tensor([4, 7, 9])
    assert torch.equal(per_branch(labels, 6), torch.tensor([4, 7, 9, 4, 7, 9]))  # branch-major, as guidance stacks
    frames = torch.arange(2 * 3).reshape(2, 3).float()
    assert torch.equal(per_branch(frames, 4), torch.cat([frames, frames]))
    with pytest.raises(ValueError, match="values for 3 videos do not fit a batch of 4"):
        per_branch(labels, 4)


def test_memory_indices_reach_back_by_the_stride_oldest_first_and_stop_at_the_first_frame():
    assert memory_indices(10, 3, 2).tolist() == [4, 6, 8]
    assert memory_indices(3, 2, 4).tolist() == [0, 0]  # before the video's start: its first frame
    assert memory_indices(torch.tensor([0, 5, 9]), 2, 3).tolist() == [[0, 0], [0, 2], [3, 6]]


def test_a_rollout_with_memory_frames_shows_each_window_the_frames_of_the_video_so_far_by_the_stride():
    calls = []

    def recording(x, t):
        calls.append((x[:, :3].clone(), t[:, :3].clone()))
        return torch.zeros_like(x)

    context = torch.randn(2, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    anchor = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    # window 4: history 2, 2 new frames a window; memory: 2 frames, 3 apart, after the anchor
    video = rollout(recording, context, 8, 4, SCHEDULE, num_steps=2, prediction_type="v",
                    guidance=HistoryGuidance("vanilla", 2.0), anchor=anchor, memory_frames=2, memory_stride=3,
                    generator=torch.Generator().manual_seed(2))
    assert video.shape == (2, 10, 3, 4, 4) and len(calls) == 4 * 2  # 4 windows, 2 rows each
    for window in range(4):
        start = 2 * window  # the window's first frame, its history's first: 0, 2, 4, 6
        expected = video[:, memory_indices(start, 2, 3)]  # (2, 2, C, H, W)
        for seen, levels in calls[2 * window:2 * window + 2]:
            branches = len(seen) // 2
            assert torch.equal(seen[:, 0], anchor.repeat(branches, 1, 1, 1))
            assert torch.equal(seen[:, 1:], expected.repeat(branches, 1, 1, 1, 1))
            assert (levels == CLEAN_LEVEL).all()
    # Generated frames reach the memory too: the last window (start 6) holds frames 0 and 3, 3 generated.
    assert memory_indices(6, 2, 3).tolist() == [0, 3]
    with pytest.raises(ValueError, match="memory_stride must be an integer >= 1, got 0"):
        rollout(recording, context, 8, 4, SCHEDULE, memory_frames=2, memory_stride=0)
    with pytest.raises(ValueError, match=r"memory frames are M frames per video, \(B, M, C, H, W\)"):
        in_front(recording, anchor, "memory frames")
