"""Diffusion-forcing training: how the per-frame noise levels are drawn, the context's zero loss,
random clips, and a video DiT trained by toydiff's loop."""

import textwrap
from dataclasses import replace
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from toydiff.checkpoints import load_checkpoint
from toydiff.parameterisation import convert_prediction
from toydiff.schedules import make_schedule
from toydiff.training import TrainConfig, recipe_differences, train
from videodiff.dit import VideoDiT, VideoDiTConfig
from videodiff.training import CLEAN_LEVEL, VideoClips, VideoDiffusionObjective

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = make_schedule("linear", 1000)


def clips(batch=256, frames=6):
    return torch.randn(batch, frames, 2, 4, 4, generator=torch.Generator().manual_seed(0))


def test_diffusion_forcing_draws_an_independent_uniform_level_for_every_frame():
    objective = VideoDiffusionObjective(SCHEDULE)
    t = objective.sample_timesteps(clips(), torch.Generator().manual_seed(1))
    assert t.shape == (256, 6) and t.dtype == torch.int64
    assert t.min() >= 0 and t.max() <= 999
    # Independent: frames of one clip differ, and neighbouring frames' levels are uncorrelated.
    assert (t != t[:, :1]).any(dim=1).float().mean() > 0.99
    correlation = torch.corrcoef(torch.stack([t[:, 0].double(), t[:, 1].double()]))[0, 1]
    assert abs(correlation) < 0.2
    assert abs(t.double().mean() - 499.5) < 25  # uniform over 0..999: mean 499.5, sd of the mean ~12


def test_full_sequence_shares_one_level_per_clip():
    objective = VideoDiffusionObjective(SCHEDULE, noise_mode="full_sequence")
    t = objective.sample_timesteps(clips(), torch.Generator().manual_seed(1))
    assert torch.equal(t, t[:, :1].expand_as(t))
    assert t[:, 0].unique().numel() > 100


def test_clean_context_holds_the_first_frames_clean_and_gives_them_no_loss():
    objective = VideoDiffusionObjective(SCHEDULE, noise_mode="clean_context", context_frames=2)
    t = objective.sample_timesteps(clips(), torch.Generator().manual_seed(1))
    assert (t[:, :2] == CLEAN_LEVEL).all()
    assert torch.equal(t[:, 2:], t[:, 2:3].expand(-1, 4))
    # The loss does not depend on what the model outputs for context frames.
    output = torch.zeros(8, 6, 2, 4, 4, requires_grad=True)

    def model(x_t, t):
        return x_t * 0 + output

    loss, logs = objective(model, (clips(batch=8),), torch.Generator().manual_seed(2))
    loss.backward()
    assert torch.equal(output.grad[:, :2], torch.zeros_like(output.grad[:, :2]))
    assert (output.grad[:, 2:].abs().sum(dim=(2, 3, 4)) > 0).all()
    assert logs["per_example_loss"].shape == (8, 6)


def test_without_clean_frame_loss_the_clean_history_gets_no_gradient_and_the_rest_does():
    objective = VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, clean_frame_loss=False)
    output = torch.zeros(64, 6, 2, 4, 4, requires_grad=True)

    def model(x_t, t):
        return x_t * 0 + output

    loss, logs = objective(model, (clips(batch=64),), torch.Generator().manual_seed(2))
    loss.backward()
    t = logs["t"]  # every clip has a clean history of 1..5 frames
    clean = t == CLEAN_LEVEL
    assert clean[:, 0].all() and clean.any(dim=0)[1:-1].all() and not clean[:, -1].any()
    gradient = output.grad.abs().sum(dim=(2, 3, 4))  # (B, F)
    assert torch.equal(gradient[clean], torch.zeros_like(gradient[clean]))
    assert (gradient[~clean] > 0).all()
    # With the loss on (the default), the clean frames are learned too.
    assert VideoDiffusionObjective(SCHEDULE).loss_weight(t)[clean].min() == 1.0
    assert objective.config_dict()["clean_frame_loss"] is False


def test_the_per_frame_loss_is_each_frames_own_error():
    # With the exact target on frames 0..2 and a wrong one on 3..5, only the last frames carry loss.
    objective = VideoDiffusionObjective(SCHEDULE, prediction_type="epsilon")
    x0 = clips(batch=4)
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    t = objective.sample_timesteps(x0, generator)
    noise = torch.randn(x0.shape, generator=generator)
    generator.set_state(state)

    def model(x_t, t_seen):
        assert torch.equal(t_seen, t)
        out = noise.clone()
        out[:, 3:] += 1.0
        return out

    loss, logs = objective(model, (x0,), generator)
    per_frame = logs["per_example_loss"]
    assert torch.allclose(per_frame[:, :3], torch.zeros(4, 3), atol=1e-10)
    assert torch.allclose(per_frame[:, 3:], torch.ones(4, 3))
    assert torch.isclose(loss, torch.tensor(0.5))


def test_bad_objective_settings_are_refused():
    with pytest.raises(ValueError, match="unknown noise_mode 'causal'"):
        VideoDiffusionObjective(SCHEDULE, noise_mode="causal")
    with pytest.raises(ValueError, match="context_frames >= 1"):
        VideoDiffusionObjective(SCHEDULE, noise_mode="clean_context")
    objective = VideoDiffusionObjective(SCHEDULE, noise_mode="clean_context", context_frames=6)
    with pytest.raises(ValueError, match="leaves no frame to learn"):
        objective.sample_timesteps(clips(), None)


def test_video_clips_are_consecutive_frames_of_one_video_with_its_label():
    # Video n, frame f holds the number 100·n + f everywhere, so a clip shows where it came from.
    videos = (100 * torch.arange(5)[:, None] + torch.arange(10)[None, :]).float()[:, :, None, None].expand(5, 10, 2, 3)
    labels = torch.arange(5) + 7
    data = VideoClips(videos.contiguous(), window=4, labels=labels)
    batch, batch_labels = data.sample(400, torch.Generator().manual_seed(0))
    assert batch.shape == (400, 4, 2, 3)
    values = batch[:, :, 0, 0]  # (B, 4)
    video, start = values[:, 0] // 100, values[:, 0] % 100
    assert torch.equal(values, video[:, None] * 100 + start[:, None] + torch.arange(4))
    assert torch.equal(batch_labels, video.long() + 7)
    assert set(start.long().tolist()) == set(range(7))  # every start 0..L-window is drawn
    with pytest.raises(ValueError, match=r"window must lie in 1\.\.10"):
        VideoClips(videos, window=11)


def test_a_video_dit_learns_with_toydiffs_loop_on_random_clips(tmp_path):
    torch.manual_seed(0)
    # Two videos of a bright dot moving right: the model must learn where the dot is at every level.
    videos = torch.zeros(2, 8, 2, 4, 4)
    for frame in range(8):
        videos[:, frame, :, 1, frame % 4] = 1.0
    model = VideoDiT(VideoDiTConfig(input_size=(4, 4), in_channels=2, patch_size=2, hidden_dim=48, depth=2,
                                    num_heads=2, num_frames=4))
    objective = VideoDiffusionObjective(SCHEDULE, prediction_type="v")
    config = TrainConfig(steps=150, batch_size=16, learning_rate=3e-3, warmup_steps=10, log_every=50,
                         checkpoint_every=0, progress=False, ema_decay=0.9)
    result = train(model, objective, VideoClips(videos, window=4), config, checkpoint_path=tmp_path / "c.pt")
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert (tmp_path / "c.pt").exists()


def test_a_clean_history_is_drawn_for_the_requested_share_of_clips():
    objective = VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.5)
    t = objective.sample_timesteps(clips(batch=4000), torch.Generator().manual_seed(4))
    clean = t == CLEAN_LEVEL                                              # (B, F)
    # A clean history is a clean prefix of 1..F-1 frames; by chance alone a frame is clean 1 in 1000.
    assert abs(clean[:, 0].float().mean().item() - 0.5) < 0.03
    lengths = clean.long().cumprod(dim=1).sum(dim=1)[clean[:, 0]]        # the clean prefix's length
    assert lengths.min() >= 1 and (lengths <= 6).all()
    assert (lengths == 6).float().mean() < 0.01                          # never the whole clip (but by chance)
    assert len(set(lengths.tolist())) == 5                               # every length 1..5 is drawn
    # The other frames keep independent uniform levels.
    rest = t[~clean]
    assert abs(rest.double().mean() - 500) < 15
    with pytest.raises(ValueError, match=r"clean_history_probability must lie in \[0, 1\]"):
        VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.5)


def test_a_shared_future_level_noises_the_frames_after_a_clean_history_together():
    objective = VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.5, shared_future_level=True)
    t = objective.sample_timesteps(clips(batch=4000), torch.Generator().manual_seed(4))
    with_history = t[:, 0] == CLEAN_LEVEL                                  # (B,), by chance alone 1 in 1000
    assert abs(with_history.float().mean().item() - 0.5) < 0.03
    shared = [bool((row[row != CLEAN_LEVEL] == row[-1]).all() and (row[:int((row == CLEAN_LEVEL).sum())]
                                                                    == CLEAN_LEVEL).all())
              for row in t[with_history]]                                # one level after a clean prefix
    assert np.mean(shared) > 0.99                                        # (a first frame at level 0 by chance: not)
    futures = torch.stack([row[-1] for row in t[with_history]]).double()
    assert abs(futures.mean() - 500) < 20 and futures.std() > 250         # the shared level is drawn per clip
    # Clips without a history keep independent levels: frames of one clip differ.
    others = t[~with_history]
    assert (others != others[:, :1]).any(dim=1).float().mean() > 0.99
    # Without the option the same clips keep independent levels after their history.
    independent = VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.5).sample_timesteps(
        clips(batch=4000), torch.Generator().manual_seed(4))
    assert (independent[independent[:, 0] == CLEAN_LEVEL][:, -2:].diff(dim=1) != 0).float().mean() > 0.9
    with pytest.raises(ValueError, match="shared_future_level applies to the clips given a clean history"):
        VideoDiffusionObjective(SCHEDULE, shared_future_level=True)


@pytest.mark.parametrize("history, whole", [(0.9, 0.1), (0.9, 0.04), (0.0, 0.3)])
def test_whole_windows_take_their_share_of_all_clips_from_those_without_a_clean_history(history, whole):
    recipe = dict(clean_history_probability=history, shared_future_level=True, clean_history_frames=4) if history \
        else {}
    objective = VideoDiffusionObjective(SCHEDULE, whole_window_probability=whole, **recipe)
    t = objective.sample_timesteps(clips(batch=20000, frames=8), torch.Generator().manual_seed(4))  # (B, 8)
    with_history = (t[:, :4] == CLEAN_LEVEL).all(dim=1)
    one_level = (t == t[:, :1]).all(dim=1) & ~with_history               # one level, no clean history
    assert abs(with_history.float().mean().item() - history) < 0.01      # the clean histories keep their share
    assert abs(one_level.float().mean().item() - whole) < 0.01           # whole_window_probability of all clips
    levels = t[one_level][:, 0].double()
    assert abs(levels.mean() - 500) < 25 and levels.std() > 250          # one level per clip, drawn per clip
    others = t[~with_history & ~one_level]                               # the rest keep independent levels
    assert len(others) == 0 if history + whole == 1 else (others != others[:, :1]).any(dim=1).all()
    if not history:
        assert abs(len(others) / len(t) - (1 - whole)) < 0.01
    # Without the option no clip gets one level over the whole window.
    plain = VideoDiffusionObjective(SCHEDULE, **recipe).sample_timesteps(clips(batch=20000, frames=8),
                                                                         torch.Generator().manual_seed(4))
    assert not ((plain == plain[:, :1]).all(dim=1) & (plain[:, 0] != CLEAN_LEVEL)).any()


def test_with_neither_a_clean_history_nor_whole_windows_the_levels_are_the_independent_draw_alone():
    # No per-clip draw is taken then, so a run of independent levels draws what it drew before either option existed.
    # (The noise drawn after the levels comes from the same generator, so it stays the same too.)
    objective = VideoDiffusionObjective(SCHEDULE)
    generator, alone = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    t = objective.sample_timesteps(clips(batch=64, frames=8), generator)
    assert torch.equal(t, objective.draw_levels((64, 8), alone, torch.device("cpu")))
    assert torch.equal(torch.rand(8, generator=generator), torch.rand(8, generator=alone))


def test_whole_windows_are_refused_beyond_the_clips_without_a_history_and_outside_diffusion_forcing():
    with pytest.raises(ValueError, match=r"whole_window_probability must lie in \[0, 1 - clean_history_probability\]"):
        VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.9, whole_window_probability=0.2)
    with pytest.raises(ValueError, match="whole_window_probability must lie"):
        VideoDiffusionObjective(SCHEDULE, whole_window_probability=-0.1)
    with pytest.raises(ValueError, match="applies to noise_mode 'diffusion_forcing' only"):
        VideoDiffusionObjective(SCHEDULE, noise_mode="full_sequence", whole_window_probability=0.1)
    VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.7, whole_window_probability=0.3)  # all the rest
    VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0)  # and none left: fine without whole windows
    with pytest.raises(ValueError, match="whole_window_probability must lie"):
        VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, whole_window_probability=0.01)
    for leading in (dict(anchor_frame=True), dict(memory_frames=2)):
        with pytest.raises(ValueError, match="never draws"):
            VideoDiffusionObjective(SCHEDULE, whole_window_probability=0.1, **leading)


def test_a_future_level_lag_staggers_the_new_frames_as_the_pyramid_matrix_samples_them():
    from videodiff.sampling import scheduling_matrix, timesteps_from_indices

    objective = VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.9, shared_future_level=True,
                                        clean_history_frames=4, clean_frame_loss=False, future_level_lag=100)
    t = objective.sample_timesteps(clips(batch=8000, frames=8), torch.Generator().manual_seed(4))   # (B, 8)
    assert torch.equal(t, objective.sample_timesteps(clips(batch=8000, frames=8), torch.Generator().manual_seed(4)))
    with_history = (t[:, :4] == CLEAN_LEVEL).all(dim=1)
    assert abs(with_history.float().mean().item() - 0.9) < 0.02
    new = t[with_history][:, 4:]                                           # (b, 4): the frames after the history
    steps = new.diff(dim=1)
    interior = (new[:, :-1] > CLEAN_LEVEL) & (new[:, 1:] < 999)
    assert interior.float().mean() > 0.6 and (steps[interior] == 100).all()  # each frame 100 above the one before
    assert (steps >= 0).all() and new.max() == 999                           # capped at T - 1, never decreasing
    clean = new == CLEAN_LEVEL                                               # frames the pyramid has finished
    assert 0.2 < clean[:, 0].float().mean() < 0.27 and clean[:, 3].float().mean() < 0.002
    first = new[:, 0][new[:, 0] > CLEAN_LEVEL].double()
    assert abs(first.mean() - 500) < 15                                      # the first new frame's level: uniform
    # Every row of the pyramid matrix at 10 steps (one index of the trailing ladder = 100 timesteps) but the last,
    # all clean, is a pattern the draw gives: the sampler's clean -1 is shown as level 0 (CLEAN_LEVEL).
    rows = timesteps_from_indices(scheduling_matrix("pyramid", 8, 10, context=4), 1000, 10)[:, 4:].clamp(min=0)
    drawn = set(map(tuple, new.tolist()))
    assert len(rows) == 14 and all(tuple(row) in drawn for row in rows[:-1].tolist())
    # The frames the pyramid has finished are history to the sampler: shown at the history's level, no loss.
    noised = VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, shared_future_level=True,
                                     clean_history_frames=4, clean_frame_loss=False, future_level_lag=100,
                                     history_noise_max=40)
    plain = VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, shared_future_level=True,
                                    clean_history_frames=4, clean_frame_loss=False, future_level_lag=100)
    t = noised.sample_timesteps(clips(batch=4000, frames=8), torch.Generator().manual_seed(5))
    staggered = plain.sample_timesteps(clips(batch=4000, frames=8), torch.Generator().manual_seed(5))  # same draw
    finished = staggered[:, 4:] == CLEAN_LEVEL
    assert 0.1 < finished[:, 0].float().mean() < 0.3 and (t[:, :4] == t[:, :1]).all()
    assert (t[:, 4:][finished] == t[:, :1].expand(-1, 4)[finished]).all()    # at the history's level
    assert (t[:, :1] > CLEAN_LEVEL).float().mean() > 0.9                     # (which is mostly not clean)
    assert torch.equal(t[:, 4:][~finished], staggered[:, 4:][~finished])     # the others stay on the stagger
    assert (objective.loss_weight(torch.tensor([[0, 0, 0, 0, 0, 0, 100, 200]]))[0, :6] == 0).all()
    # Without a lag the same clips share one level after their history.
    shared = VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.9, shared_future_level=True,
                                     clean_history_frames=4).sample_timesteps(clips(batch=8000, frames=8),
                                                                              torch.Generator().manual_seed(4))
    assert (shared[(shared[:, :4] == CLEAN_LEVEL).all(dim=1)][:, 4:].diff(dim=1) == 0).float().mean() > 0.99
    for bad, message in ((dict(future_level_lag=-1), "future_level_lag must be a number of timesteps in 0..999"),
                         (dict(future_level_lag=1000), "future_level_lag must be a number of timesteps in 0..999"),
                         (dict(future_level_lag=True), "future_level_lag must be a number of timesteps"),
                         (dict(future_level_lag=100, shared_future_level=False), "set shared_future_level=True"),
                         (dict(future_level_lag=100, clean_frame_loss=True), "set clean_frame_loss=False"),
                         (dict(future_level_lag=100, timestep_sampling="logit_normal"),
                          "future_level_lag draws its levels uniformly")):
        options = dict(clean_history_probability=0.9, shared_future_level=True, clean_history_frames=4,
                       clean_frame_loss=False) | bad
        with pytest.raises(ValueError, match=message):
            VideoDiffusionObjective(SCHEDULE, **options)


def test_a_noised_history_shares_one_level_per_clip_drawn_from_zero_to_its_maximum():
    objective = VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, shared_future_level=True,
                                        clean_history_frames=4, history_noise_max=40)
    t = objective.sample_timesteps(clips(batch=4000), torch.Generator().manual_seed(4))   # (B, 6)
    history = t[:, :4]
    assert (history == history[:, :1]).all()                              # one level for the whole history
    levels = history[:, 0]
    assert levels.min() == CLEAN_LEVEL and levels.max() == 40             # 0..K, both ends reached
    assert len(set(levels.tolist())) == 41 and abs(levels.double().mean() - 20) < 1.5   # uniform over them
    assert (t[:, 4] == t[:, 5]).all() and t[:, 4].double().std() > 250   # the future as before
    # Noised history frames keep their loss; only frames at the clean level lose it.
    weight = VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, clean_history_frames=4,
                                     history_noise_max=40, clean_frame_loss=False).loss_weight(t)
    assert ((weight == 0) == (t == CLEAN_LEVEL)).all()
    # K = 0 (the default) is the clean history.
    plain = VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, shared_future_level=True,
                                    clean_history_frames=4).sample_timesteps(clips(batch=500), torch.Generator())
    assert (plain[:, :4] == CLEAN_LEVEL).all()
    for bad in (-1, 1000, 2.5, True):
        with pytest.raises(ValueError, match=r"history_noise_max must be a timestep in 0\.\.999"):
            VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.5, history_noise_max=bad)
    with pytest.raises(ValueError, match="history_noise_max applies to the clips given a clean history"):
        VideoDiffusionObjective(SCHEDULE, history_noise_max=10)


class OracleWindowModel:
    """A denoiser that knows the true latents of the window it is shown (``truth``, (B, F, ...)): its
    v-prediction is exact, so a DDIM rollout of it reproduces the true frames."""

    def __init__(self, truth):
        self.truth, self.config, self.calls = truth, SimpleNamespace(num_frames=truth.shape[1]), 0

    def __call__(self, x_t, t):
        self.calls += 1
        return convert_prediction(SCHEDULE, self.truth, t, x_t, "x0", "v")


def model_history_objective(probability):
    return VideoDiffusionObjective(SCHEDULE, "v", clean_history_probability=0.9, shared_future_level=True,
                                   clean_history_frames=2, model_history_probability=probability)


def test_a_model_history_window_is_the_models_continuation_then_the_real_frames_after_it():
    clips = torch.randn(3, 6 + 4, 2, 4, 4, generator=torch.Generator().manual_seed(5))   # F = 6, H = 2
    objective = model_history_objective(1.0)
    assert objective.clip_frames(6) == 10 and model_history_objective(0.0).clip_frames(6) == 6
    # A perfect model continues the real history with the real frames: the window is the real one, F - H = 4
    # frames on, and every frame after the generated history is real.
    oracle = OracleWindowModel(clips[:, :6])
    window = objective.window_with_model_history(oracle, clips, torch.Generator().manual_seed(0))
    assert oracle.calls == 2                                               # two sampling steps, one window
    torch.testing.assert_close(window, clips[:, 4:10], atol=1e-4, rtol=0)
    # A biased one: the history is its own frames (the real ones there, off by its bias), the future real.
    biased = OracleWindowModel(clips[:, :6] + 0.5)
    window = objective.window_with_model_history(biased, clips, torch.Generator().manual_seed(0))
    assert torch.equal(window[:, 2:], clips[:, 6:10])
    torch.testing.assert_close(window[:, :2], clips[:, 4:6] + 0.5, atol=1e-4, rtol=0)
    # Probability 0 takes the first F frames and never calls the model.
    never = OracleWindowModel(clips[:, :6])
    assert torch.equal(model_history_objective(1e-9).window_with_model_history(never, clips, torch.Generator()),
                       clips[:, :6]) and never.calls == 0
    # The loss runs through it: the window, not the longer clip, reaches the denoiser.
    loss, logs = objective(OracleWindowModel(clips[:, 4:10]), (clips,), torch.Generator().manual_seed(1))
    assert logs["t"].shape == (3, 6) and torch.isfinite(loss)
    with pytest.raises(ValueError, match="needs clips of 10 frames"):
        objective.window_with_model_history(oracle, clips[:, :8], None)
    with pytest.raises(ValueError, match="model_history_probability needs diffusion forcing with a clean history"):
        VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.9, model_history_probability=0.5)
    with pytest.raises(ValueError, match=r"model_history_probability must lie in \[0, 1\]"):
        model_history_objective(1.5)


class LabelledOracle(OracleWindowModel):
    """The oracle, for a model with scene labels: it records the labels of every call."""

    def __init__(self, truth):
        super().__init__(truth)
        self.labels, self.training = [], False   # not training: the loss keeps the labels (no dropout)

    def __call__(self, x_t, t, labels=None):
        self.labels.append(labels)
        return super().__call__(x_t, t)


def test_a_model_history_is_made_with_the_clips_scene_labels():
    """A rollout gives a labelled model each video's label; the history training makes as a rollout does
    must too, or the model learns to continue histories its rollouts never make (the null label's)."""
    clips = torch.randn(3, 6 + 4, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([3, 0, 7])
    model = LabelledOracle(clips[:, 4:10])
    loss, _ = model_history_objective(1.0)(model, (clips, labels), torch.Generator().manual_seed(1))
    assert torch.isfinite(loss) and len(model.labels) == 3       # two sampling steps of the history, then the loss
    assert all(torch.equal(seen, labels) for seen in model.labels[:2]), model.labels[:2]


def test_a_model_history_batch_trains_under_distributed_data_parallel(tmp_path):
    """Under torchrun the loop hands the objective a DistributedDataParallel wrapper, which has no config:
    the history is made by the network inside it (one gloo process stands in for several)."""
    import torch.distributed as dist

    from toydiff.compilation import CompiledOrEager
    from toydiff.training import unwrap_distributed
    from videodiff.dit import make_video_dit

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(make_video_dit(
            "tiny", hidden_dim=48, depth=1, num_heads=2, num_frames=4, in_channels=4, input_size=(8, 8)))
        objective = VideoDiffusionObjective(SCHEDULE, "v", clean_history_probability=0.9, shared_future_level=True,
                                            clean_history_frames=2, model_history_probability=1.0)
        generator = torch.Generator().manual_seed(0)
        batch = VideoClips(torch.randn(3, 12, 4, 8, 8), objective.clip_frames(4)).sample(2, generator)
        loss, _ = objective(model, batch, generator)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
        # The loop's compiled forward wraps the DistributedDataParallel one: the network is found through both.
        assert unwrap_distributed(CompiledOrEager(model)) is model.module
    finally:
        dist.destroy_process_group()


def test_a_fixed_clean_history_length_cleans_exactly_that_many_first_frames():
    objective = VideoDiffusionObjective(SCHEDULE, clean_history_probability=1.0, shared_future_level=True,
                                        clean_history_frames=4)
    t = objective.sample_timesteps(clips(batch=2000), torch.Generator().manual_seed(4))   # (B, 6)
    assert (t[:, :4] == CLEAN_LEVEL).all()
    assert (t[:, 4] == t[:, 5]).all() and (t[:, 4] != CLEAN_LEVEL).float().mean() > 0.99
    assert t[:, 4].double().std() > 250                                   # the level after it is drawn per clip
    with pytest.raises(ValueError, match="clean_history_frames=6 leaves no frame to learn in clips of 6"):
        VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.5,
                                clean_history_frames=6).sample_timesteps(clips(batch=2), None)
    with pytest.raises(ValueError, match="clean_history_frames must be a number of frames >= 1"):
        VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.5, clean_history_frames=0)
    with pytest.raises(ValueError, match="apply to noise_mode 'diffusion_forcing' only"):
        VideoDiffusionObjective(SCHEDULE, noise_mode="full_sequence", shared_future_level=True)


def test_logit_normal_levels_shift_with_their_mean_and_keep_the_clean_history():
    generator = torch.Generator().manual_seed(5)
    means = {}
    for mean in (-1.0, 0.0, 1.0):
        objective = VideoDiffusionObjective(SCHEDULE, clean_history_probability=0.5, timestep_sampling="logit_normal",
                                            logit_mean=mean)
        t = objective.sample_timesteps(clips(batch=4000), generator)
        clean = t == CLEAN_LEVEL
        assert abs(clean[:, 0].float().mean().item() - 0.5) < 0.03       # the clean history is untouched
        rest = t[~clean].double() / 1000
        assert t.max() <= 999
        means[mean] = rest.mean().item()
        # The median level is T·sigmoid(m): 269, 500 and 731.
        assert abs(rest.median().item() - torch.sigmoid(torch.tensor(mean)).item()) < 0.02
    assert means[-1.0] < 0.35 < means[0.0] < 0.65 < means[1.0]
    # Full-sequence mode draws its one shared level the same way.
    shared = VideoDiffusionObjective(SCHEDULE, noise_mode="full_sequence", timestep_sampling="logit_normal",
                                     logit_mean=1.0).sample_timesteps(clips(batch=4000), generator)
    assert (shared == shared[:, :1]).all() and shared.double().mean() / 1000 > 0.65


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from toydiff.distributed import leave_process_group
    from toydiff.schedules import make_schedule
    from toydiff.training import TrainConfig, recipe_differences, train
    from videodiff.dit import VideoDiT, VideoDiTConfig
    from videodiff.training import VideoClips, VideoDiffusionObjective
    torch.manual_seed(0)
    model = VideoDiT(VideoDiTConfig(input_size=(4, 4), in_channels=2, patch_size=2, hidden_dim=24, depth=1,
                                    num_heads=2, num_frames=3))
    videos = torch.randn(6, 8, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(steps=12, batch_size=8, log_every=4, progress=False, device="cpu")
    result = train(model, VideoDiffusionObjective(make_schedule("linear"), clean_history_probability=0.5),
                   VideoClips(videos, window=3), config, checkpoint_path=sys.argv[1] + "/checkpoint.pt",
                   run_config={"video ddp": True})
    flat = torch.cat([p.detach().flatten() for p in result.model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    assert dist.get_world_size() == 2
    assert torch.equal(gathered[0], gathered[1]), "replicas diverged"
    # Each rank reports in its own file: two processes printing to one pipe interleave their words.
    with open(sys.argv[1] + f"/rank{dist.get_rank()}.ok", "w") as report:
        report.write(str(result.history[-1]["loss"]))
    leave_process_group()  # torn down in order: left to the exit, gloo aborts a rank now and then
""")


def test_the_video_model_trains_under_torchrun_ddp_with_two_cpu_processes(tmp_path, torchrun):
    completed = torchrun(DDP_SCRIPT)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("rank*.ok")) == ["rank0.ok", "rank1.ok"]
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 12 and len(state["rng"]["generators"]) == 2


def test_training_physics_changes_the_training_videos_only():
    from videodiff.pipeline import VideoDiffusionRunConfig, held_out_videos, training_videos

    config = VideoDiffusionRunConfig(num_train_videos=60, physics={"num_frames": 4},
                                     training_physics={"min_balls": 3})
    videos = training_videos(config)
    assert (videos.present[:, 0].sum(axis=1) == 3).all() and videos.frames.shape[1] == 4
    # Held-out videos, which rollouts and probes score, keep the run's physics: one to three balls.
    held_out = held_out_videos(config, 60).present[:, 0].sum(axis=1)
    assert set(held_out.tolist()) == {1, 2, 3}
    # A run stored before the field existed trained on its physics alone, whatever today's default.
    description = config.to_dict()
    del description["training_physics"]
    assert VideoDiffusionRunConfig.from_dict(description).training_physics == {}


def test_a_scene_labelled_run_trains_on_its_labels_and_rolls_out_with_them(tmp_path):
    """A tiny run with scene labels: its DiT has a class per set of colours, the checkpoint reads back as
    labelled, rollout_and_score gives held-out videos their labels (not the null label), and bad labels
    and a training set that lacks a ball count are refused."""
    from videodiff.data import scene_labels, scene_sets
    from videodiff.dit import VIDEO_LABEL_INIT_STD
    from videodiff.evaluation import rollout_and_score
    from videodiff.interp.ablations import ABLATION_ETA, Ablation, ablation_table
    from videodiff.metrics import physics_metrics
    from videodiff.pipeline import (VideoDiffusionRunConfig, load_video_diffusion, quick_run_configs, train_video_diffusion,
                                    train_video_vae)
    from videodiff.sampling import HistoryGuidance

    vae_config, config = quick_run_configs(str(tmp_path / "vae" / "checkpoint.pt"))
    vae = train_video_vae(vae_config, tmp_path / "vae")
    config.train = replace(config.train, progress=False)
    assert config.scene_labels and config.training_physics is None  # the recipe's: labelled, every ball count
    run = train_video_diffusion(config, tmp_path / "dit", vae=vae.vae)
    assert run.model.config.num_classes == config.num_scene_labels() == len(scene_sets(3)) == 41
    # The checkpoint holds the training physics as trained, not "the recipe's", which may change.
    assert load_checkpoint(tmp_path / "dit" / "checkpoint.pt")["config"]["training_physics"] == {}
    # Training saw the labels of its videos: rows of the label table moved from the initial weights (rebuilt
    # from the run's seed) — those of the clips drawn, all of them labels of training videos.
    from videodiff.pipeline import training_videos
    torch.manual_seed(config.train.seed)
    initial = VideoDiT(run.model.config).label_embedding.weight
    trained = run.model.label_embedding.weight
    # The table starts small (VIDEO_LABEL_INIT_STD), not at the image recipe's std 1.0.
    assert run.model.config.label_init_std == VIDEO_LABEL_INIT_STD == 0.02
    assert 0.015 < float(initial.detach().std()) < 0.025
    seen = set(scene_labels(training_videos(config)).tolist())
    moved = {label for label in range(41) if not torch.equal(trained[label], initial[label])}
    assert len(moved) >= len(seen) // 2 and moved <= seen
    again = load_video_diffusion(tmp_path / "dit" / "checkpoint.pt")
    assert again.config.scene_labels and again.model.config.num_classes == 41
    generated, truth, _ = rollout_and_score(again, 3, 2, 5, HistoryGuidance("vanilla", 2.0))
    labelled = again.rollout(truth.frames[:, :2], 5, HistoryGuidance("vanilla", 2.0), labels=scene_labels(truth))
    null = again.rollout(truth.frames[:, :2], 5, HistoryGuidance("vanilla", 2.0))
    assert np.array_equal(generated, labelled) and not np.array_equal(generated, null)
    # Each video its own label: the labels of other videos give another continuation.
    shuffled = again.rollout(truth.frames[:, :2], 5, HistoryGuidance("vanilla", 2.0),
                             labels=(scene_labels(truth) + 1) % 41)
    assert not np.array_equal(shuffled, labelled)
    assert torch.equal(again.labels_for(truth), torch.from_numpy(scene_labels(truth)))
    # The ablation table rolls out with the videos' labels too (the model alone, as its rows do).
    (row,) = ablation_table(again, [Ablation("none")], num_videos=3, context=2, length=5, num_steps=2)
    alone = physics_metrics(again.rollout(truth.frames[:, :2], 5, num_steps=2, eta=ABLATION_ETA, guide_scale=1.0,
                                          labels=again.labels_for(truth)), truth, num_context=2)
    assert all(row[key] == alone[key] for key in ("position_error", "found_share", "motion_ratio"))
    # The denoiser takes labels as a list, an array or a tensor alike.
    shape = again.model.config
    x = torch.randn(3, shape.num_frames, shape.in_channels, *shape.input_size)
    t = torch.full((3, shape.num_frames), 500)
    as_tensor = again.denoiser(labels=again.labels_for(truth))(x, t)
    assert torch.equal(again.denoiser(labels=scene_labels(truth).tolist())(x, t), as_tensor)
    assert not torch.equal(again.denoiser()(x, t), as_tensor)
    with pytest.raises(ValueError, match="one scene label in 0..40 per video, 3 in all"):
        again.rollout(truth.frames[:, :2], 5, labels=[0, 41, 2])
    with pytest.raises(ValueError, match="one scene label in 0..40 per video, 3 in all"):
        again.rollout(truth.frames[:, :2], 5, labels=[0, 1])
    with pytest.raises(ValueError, match="scene labels need training videos of 1 to 3 balls"):
        replace(config, training_physics={"min_balls": 2}).check_scene_labels()
    with pytest.raises(ValueError, match="label_dropout"):
        VideoDiffusionRunConfig(label_dropout=1.0)
    assert config.scene_label_dropout() == 0.1 and replace(config, label_dropout=0.3).scene_label_dropout() == 0.3
    unlabelled = VideoDiffusionRunConfig(scene_labels=False)
    assert not unlabelled.scene_labels and unlabelled.num_scene_labels() == 0 and unlabelled.scene_label_dropout() == 0
    # The recipe is labelled, on every ball count; without labels it trains on two or three balls.
    assert VideoDiffusionRunConfig().scene_labels and VideoDiffusionRunConfig().training_physics_fields() == {}
    assert unlabelled.training_physics_fields() == {"min_balls": 2}
    # A run stored before the option had no labels: the unlabelled recipe, not today's default.
    description = unlabelled.to_dict()
    del description["scene_labels"], description["label_dropout"]
    assert VideoDiffusionRunConfig.from_dict(description).scene_labels is False
    assert recipe_differences(description, unlabelled.to_dict()) == []
    assert "scene_labels" in recipe_differences(description, VideoDiffusionRunConfig().to_dict())


def test_an_unlabelled_run_refuses_scene_labels_and_an_unanchored_one_anchor_frames(tmp_path):
    from videodiff.pipeline import held_out_videos, quick_run_configs, train_video_diffusion, train_video_vae

    vae_config, config = quick_run_configs(str(tmp_path / "vae" / "checkpoint.pt"))
    config = replace(config, scene_labels=False)
    config.train = replace(config.train, steps=2, progress=False)
    run = train_video_diffusion(config, vae=train_video_vae(vae_config).vae)
    frames = np.zeros((2, 2, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="trained without them"):
        run.rollout(frames, 3, labels=[0, 1])
    with pytest.raises(ValueError, match="built without an anchor frame"):
        run.rollout(frames, 3, anchor_frames=frames[:, 0])
    assert run.labels_for(held_out_videos(config, 2)) is None


def test_anchored_clips_put_an_earlier_frame_of_the_same_video_in_front():
    # Video n, frame f holds the number 100·n + f everywhere, so a clip shows where it came from.
    videos = (100 * torch.arange(5)[:, None] + torch.arange(10)[None, :]).float()[:, :, None, None].expand(5, 10, 2, 3)
    data = VideoClips(videos.contiguous(), window=4, anchor_reach=2)
    (batch,) = data.sample(2000, torch.Generator().manual_seed(0))
    assert batch.shape == (2000, 5, 2, 3)
    values = batch[:, :, 0, 0]  # (B, 5)
    video, start = values[:, 1] // 100, values[:, 1] % 100
    assert torch.equal(values[:, 1:], video[:, None] * 100 + start[:, None] + torch.arange(4))
    anchor_video, anchor = values[:, 0] // 100, values[:, 0] % 100
    assert torch.equal(anchor_video, video)                     # the same video
    assert (anchor <= start + 1).all()                          # at most the history's last frame (reach 2)
    # Every frame up to there is drawn, the video's first and the window's own first two among them.
    for first in range(7):
        drawn = set(anchor[start == first].long().tolist())
        assert drawn == set(range(first + 2)), (first, drawn)
    # Without an anchor the draws are the ones a model without it always had.
    (plain,) = VideoClips(videos.contiguous(), window=4).sample(50, torch.Generator().manual_seed(0))
    (again,) = VideoClips(videos.contiguous(), window=4).sample(50, torch.Generator().manual_seed(0))
    assert torch.equal(plain, again) and plain.shape == (50, 4, 2, 3)
    for reach in (0, 5, True, 1.5):
        with pytest.raises(ValueError, match=r"anchor_reach must be a number of the clip's frames in 1\.\.4"):
            VideoClips(videos, window=4, anchor_reach=reach)


def test_the_anchor_is_clean_and_unlearned_and_the_window_after_it_drawn_as_without_one():
    settings = dict(clean_history_probability=0.9, shared_future_level=True, clean_history_frames=2)
    anchored = VideoDiffusionObjective(SCHEDULE, "v", anchor_frame=True, **settings)
    plain = VideoDiffusionObjective(SCHEDULE, "v", **settings)
    windows = clips(frames=6)
    with_anchor = torch.cat([windows[:, :1] * 0 + 7, windows], dim=1)  # (B, 7, ...)
    t = anchored.sample_timesteps(with_anchor, torch.Generator().manual_seed(1))
    assert t.shape == (256, 7) and (t[:, 0] == CLEAN_LEVEL).all()
    assert torch.equal(t[:, 1:], plain.sample_timesteps(windows, torch.Generator().manual_seed(1)))
    # The anchor gets no loss even where clean frames get one; every frame of the window that is noised does.
    output = torch.zeros(8, 7, 2, 4, 4, requires_grad=True)

    def model(x_t, t):
        return x_t * 0 + output

    learning = VideoDiffusionObjective(SCHEDULE, "v", anchor_frame=True, clean_frame_loss=True)
    loss, logs = learning(model, (with_anchor[:8],), torch.Generator().manual_seed(2))
    loss.backward()
    assert torch.equal(output.grad[:, 0], torch.zeros_like(output.grad[:, 0]))
    assert (output.grad[:, 1:].abs().sum(dim=(2, 3, 4)) > 0).all()
    # clean_context's context is the window's first frames, after the anchor.
    context = VideoDiffusionObjective(SCHEDULE, noise_mode="clean_context", context_frames=2, anchor_frame=True)
    weight = context.loss_weight(context.sample_timesteps(with_anchor, torch.Generator().manual_seed(3)))
    assert (weight[:, :3] == 0).all() and (weight[:, 3:] > 0).all()
    with pytest.raises(ValueError, match="expected clips of an anchor and a window"):
        anchored.sample_timesteps(with_anchor[:, :1], None)


def test_a_model_history_window_keeps_its_anchor_in_front():
    clips = torch.randn(3, 1 + 6 + 4, 2, 4, 4, generator=torch.Generator().manual_seed(5))   # anchor, F = 6, H = 2
    objective = VideoDiffusionObjective(SCHEDULE, "v", clean_history_probability=0.9, shared_future_level=True,
                                        clean_history_frames=2, model_history_probability=1.0, anchor_frame=True)
    # A perfect model (it is shown the anchor, then the window it continues): the real window with its anchor.
    oracle = OracleWindowModel(clips[:, :7])
    oracle.config.num_frames = 6
    window = objective.window_with_model_history(oracle, clips, torch.Generator().manual_seed(0))
    assert oracle.calls == 2 and window.shape == (3, 7, 2, 4, 4)
    assert torch.equal(window[:, 0], clips[:, 0])
    torch.testing.assert_close(window[:, 1:], clips[:, 5:11], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="needs clips of 11 frames"):
        objective.window_with_model_history(oracle, clips[:, 1:], None)


def test_an_anchored_run_trains_and_rolls_out_with_each_videos_last_real_frame_as_anchor(tmp_path):
    from videodiff.interp.experiment import run_probe_experiment
    from videodiff.interp.heads import head_scores
    from videodiff.pipeline import (ROLLOUT_ETA, ROLLOUT_STEPS, held_out_videos, load_video_diffusion,
                                    quick_run_configs, train_video_diffusion, train_video_vae)
    from videodiff.sampling import HistoryGuidance, rollout

    vae_config, config = quick_run_configs(str(tmp_path / "vae" / "checkpoint.pt"))
    vae = train_video_vae(vae_config, tmp_path / "vae")
    config.dit = replace(config.dit, anchor_frame=True)
    config.train = replace(config.train, progress=False)
    train_video_diffusion(config, tmp_path / "dit", vae=vae.vae)
    run = load_video_diffusion(tmp_path / "dit" / "checkpoint.pt")
    assert run.model.config.anchor_frame and run.model.anchor_embedding is not None and run.window == 4
    videos = held_out_videos(run.config, 3)
    frames = run.rollout(videos.frames[:, :2], 5, HistoryGuidance("vanilla", 2.0), seed=4)
    # By hand: the same rollout, the last real frame's latent as the anchor of every window.
    context = run.encode(videos.frames[:, :2])
    by_hand = rollout(run.denoiser(run.default_guide_scale), context, 5, run.window, run.schedule,
                      frames_per_window=run.window - run.config.history_frames(), kind="full_sequence",
                      num_steps=ROLLOUT_STEPS, eta=ROLLOUT_ETA, prediction_type="v",
                      guidance=HistoryGuidance("vanilla", 2.0), anchor=context[:, -1],
                      generator=torch.Generator().manual_seed(4))
    assert np.array_equal(frames, run.decode(by_hand))
    other = rollout(run.denoiser(run.default_guide_scale), context, 5, run.window, run.schedule,
                    frames_per_window=run.window - run.config.history_frames(), kind="full_sequence",
                    num_steps=ROLLOUT_STEPS, eta=ROLLOUT_ETA, prediction_type="v",
                    guidance=HistoryGuidance("vanilla", 2.0), anchor=context[:, 0],
                    generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other, by_hand)  # the anchor reaches the model
    # Anchor frames given in pixels take the last real frame's place: the last real frame gives the same rollout.
    given = run.rollout(videos.frames[:, :2], 5, HistoryGuidance("vanilla", 2.0), anchor_frames=videos.frames[:, 1],
                        seed=4)
    assert np.array_equal(given, frames)
    swapped = run.rollout(videos.frames[:, :2], 5, HistoryGuidance("vanilla", 2.0),
                          anchor_frames=videos.frames[[1, 2, 0], 1], seed=4)
    assert not np.array_equal(swapped, frames)
    with pytest.raises(ValueError, match=r"one anchor frame per video, uint8 of shape \(3, 32, 32, 3\)"):
        run.rollout(videos.frames[:, :2], 5, anchor_frames=videos.frames[:2, 1])
    # The interpretability tools feed plain windows: they refuse an anchored model with one clear line.
    with pytest.raises(ValueError, match="does not support anchored models"):
        head_scores(run.model, context, run.schedule, [0])
    with pytest.raises(ValueError, match="does not support anchored models"):
        run_probe_experiment(run)


def test_clips_carry_the_corrupted_copy_of_their_own_window_and_draw_nothing_more():
    # Video n, frame f holds 100·n + f; its corrupted copy holds the same plus 10 000.
    videos = (100 * torch.arange(5)[:, None] + torch.arange(10)[None, :]).float()[:, :, None, None].expand(5, 10, 2, 3)
    videos = videos.contiguous()
    data = VideoClips(videos, window=4, anchor_reach=2, corrupted=videos + 10_000)
    (batch,) = data.sample(300, torch.Generator().manual_seed(0))
    assert batch.shape == (300, 1 + 4 + 4, 2, 3)
    (plain,) = VideoClips(videos, window=4, anchor_reach=2).sample(300, torch.Generator().manual_seed(0))
    assert torch.equal(batch[:, :5], plain)  # the anchor and window drawn as without the copy
    assert torch.equal(batch[:, 5:], plain[:, 1:] + 10_000)  # the copy's frames of the same window
    (no_anchor,) = VideoClips(videos, window=4, corrupted=videos + 10_000).sample(30, torch.Generator().manual_seed(1))
    assert no_anchor.shape == (30, 8, 2, 3) and torch.equal(no_anchor[:, 4:], no_anchor[:, :4] + 10_000)
    with pytest.raises(ValueError, match=r"corrupted copy of the videos must have their shape \(5, 10, 2, 3\)"):
        VideoClips(videos, window=4, corrupted=videos[:, :9])


def corrupting_objective(probability=1.0, **changes):
    settings = dict(clean_history_probability=0.9, shared_future_level=True, clean_history_frames=2,
                    anchor_frame=True, clean_frame_loss=False, corrupt_history_probability=probability)
    return VideoDiffusionObjective(SCHEDULE, "v", **{**settings, **changes})


def test_a_corrupted_history_replaces_only_a_clean_history_and_keeps_the_anchor_and_the_frames_to_learn():
    objective = corrupting_objective(1.0)
    real = clips(batch=256, frames=1 + 6)  # an anchor and a window of 6 frames, history 2
    corrupted = 50 + clips(batch=256, frames=6)
    t = objective.sample_timesteps(real, torch.Generator().manual_seed(1))  # (B, 7)
    t[:3, 1:3] = torch.tensor([[CLEAN_LEVEL, 500], [500, CLEAN_LEVEL], [CLEAN_LEVEL, CLEAN_LEVEL]])
    clean = (t[:, 1:3] == CLEAN_LEVEL).all(dim=1)
    assert clean.tolist()[:3] == [False, False, True]  # a history is clean when all of it is
    assert 0.8 < clean.float().mean() < 0.97  # the clean-history clips, about 0.9 of them
    edited = objective.with_corrupted_history(real, corrupted, t, torch.Generator().manual_seed(2))
    assert torch.equal(edited[clean, 1:3], corrupted[clean, :2])  # p = 1: every clean history is corrupted
    assert torch.equal(edited[~clean], real[~clean])  # a noised history is never replaced (it would be learned)
    assert torch.equal(edited[:, 0], real[:, 0]) and torch.equal(edited[:, 3:], real[:, 3:])
    assert torch.equal(real, clips(batch=256, frames=7))  # the batch itself is not edited in place
    # With p = 0.3, about that share of the clean histories.
    some = corrupting_objective(0.3).with_corrupted_history(real, corrupted, t, torch.Generator().manual_seed(2))
    replaced = (some[:, 1:3] != real[:, 1:3]).flatten(1).any(dim=1)
    assert not replaced[~clean].any() and 0.2 < replaced[clean].float().mean() < 0.4


def test_training_on_corrupted_histories_shows_the_model_the_copy_and_learns_only_the_real_frames():
    objective = corrupting_objective(1.0)
    real = clips(batch=64, frames=1 + 6)
    corrupted = 50 + clips(batch=64, frames=6)
    seen = {}
    output = torch.zeros(64, 7, 2, 4, 4, requires_grad=True)

    def model(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return x_t * 0 + output

    model.training = True
    loss, _ = objective(model, (torch.cat([real, corrupted], dim=1),), torch.Generator().manual_seed(3))
    loss.backward()
    t = objective.sample_timesteps(real, torch.Generator().manual_seed(3))  # the levels are drawn first
    assert torch.equal(seen["t"], t)
    clean = (t[:, 1:3] == CLEAN_LEVEL).all(dim=1)
    # Shown at the clean level: the copy's history (x_t = 0.99995 x_0 + 0.01 ε), the real anchor.
    torch.testing.assert_close(seen["x_t"][clean, 1:3], corrupted[clean, :2], atol=0.06, rtol=0.01)
    torch.testing.assert_close(seen["x_t"][:, 0], real[:, 0], atol=0.06, rtol=0.01)
    # No gradient reaches a corrupted frame or the anchor; every noised frame is learned.
    assert (output.grad[clean, 1:3] == 0).all() and (output.grad[:, 0] == 0).all()
    assert (output.grad[:, 3:].abs().sum(dim=(2, 3, 4)) > 0).all()
    with pytest.raises(ValueError, match=r"an anchor, a window and the window's corrupted copy, \(B, 1 \+ 2F"):
        objective(model, (real[:, :6],), None)


def test_a_corrupted_history_end_replaces_its_last_frames_and_keeps_its_first_without_an_anchor():
    objective = corrupting_objective(1.0, anchor_frame=False, clean_history_frames=4, corrupt_history_end=True)
    real = clips(batch=512, frames=6)  # a window of 6 frames, history 4, no anchor
    corrupted = 50 + clips(batch=512, frames=6)
    t = objective.sample_timesteps(real, torch.Generator().manual_seed(1))
    clean = (t[:, :4] == CLEAN_LEVEL).all(dim=1)
    edited = objective.with_corrupted_history(real, corrupted, t, torch.Generator().manual_seed(2))
    replaced = (edited != real).flatten(2).any(dim=2)  # (B, 6) frames taken from the copy
    assert not replaced[~clean].any() and not replaced[:, 4:].any()
    assert torch.equal(edited[replaced], corrupted[replaced])
    lost = replaced[clean].sum(dim=1)  # k per clean clip: 1..3, each about a third of the time
    assert set(lost.tolist()) == {1, 2, 3} and all(abs((lost == k).float().mean() - 1 / 3) < 0.08 for k in (1, 2, 3))
    # The last k frames: a frame from the copy is followed by frames from the copy up to the history's end.
    assert torch.equal(replaced[clean, :4], torch.arange(4) >= 4 - lost[:, None])
    # Through the objective, clips without an anchor: (B, 2F, ...).
    seen = {}

    def model(x_t, t):
        seen["x_t"] = x_t
        return x_t * 0

    model.training = True
    objective(model, (torch.cat([real, corrupted], dim=1),), torch.Generator().manual_seed(3))
    assert seen["x_t"].shape == real.shape


@pytest.mark.parametrize("changes", [
    dict(anchor_frame=False), dict(clean_history_probability=0.0, shared_future_level=False),
    dict(clean_history_frames=None), dict(clean_frame_loss=True), dict(history_noise_max=20),
    dict(model_history_probability=0.5), dict(noise_mode="full_sequence", clean_history_probability=0.0,
                                              shared_future_level=False),
    dict(anchor_frame=False, corrupt_history_end=True, clean_history_frames=1),
])
def test_corrupted_histories_need_a_clean_history_of_fixed_length_and_a_frame_that_shows_what_it_lost(changes):
    with pytest.raises(ValueError, match="corrupt_history_probability needs a clean history of fixed length"):
        corrupting_objective(0.5, **changes)
    with pytest.raises(ValueError, match=r"corrupt_history_probability must lie in \[0, 1\], got 1.5"):
        corrupting_objective(1.5)
    corrupting_objective(0.0, **changes)  # p = 0 asks for nothing


def test_a_run_with_corrupted_histories_trains_on_the_encoded_copies_of_its_videos(tmp_path, monkeypatch):
    import videodiff.pipeline
    from videodiff.data import corrupted_copies
    from videodiff.pipeline import (CORRUPTION_SEED_OFFSET, encode_videos, quick_run_configs, train_video_diffusion,
                                    train_video_vae, training_videos)

    vae_config, config = quick_run_configs(str(tmp_path / "vae" / "checkpoint.pt"))
    vae = train_video_vae(vae_config).vae
    config.dit = replace(config.dit, anchor_frame=True)
    config.corrupt_history_probability = 0.5
    config.train = replace(config.train, steps=3, progress=False)
    made = []
    monkeypatch.setattr(videodiff.pipeline, "VideoClips",
                        lambda *args: made.append(args) or VideoClips(*args))
    run = train_video_diffusion(config, vae=vae)
    assert run.history[-1]["step"] == 3
    latents, corrupted = made[0][0], made[0][4]
    copies, _ = corrupted_copies(training_videos(config), seed=config.data_seed + CORRUPTION_SEED_OFFSET)
    assert torch.equal(corrupted, encode_videos(vae, copies.to_model_range()))
    assert corrupted.shape == latents.shape and not torch.equal(corrupted, latents)


def test_memory_clips_put_the_frames_by_the_stride_before_the_window_in_front_and_draw_nothing_more():
    # Video n, frame f holds the number 100·n + f everywhere, so a clip shows where it came from.
    videos = (100 * torch.arange(5)[:, None] + torch.arange(12)[None, :]).float()[:, :, None, None].expand(5, 12, 2, 3)
    videos = videos.contiguous()
    (batch,) = VideoClips(videos, window=4, memory=(2, 3)).sample(500, torch.Generator().manual_seed(0))
    (plain,) = VideoClips(videos, window=4).sample(500, torch.Generator().manual_seed(0))
    assert batch.shape == (500, 2 + 4, 2, 3) and torch.equal(batch[:, 2:], plain)  # the same windows as without
    values = batch[:, :, 0, 0]
    video, start = values[:, 2] // 100, values[:, 2] % 100
    expected = video[:, None] * 100 + (start[:, None] - torch.tensor([6, 3])).clamp_min(0)
    assert torch.equal(values[:, :2], expected)  # start - 6, start - 3 of the same video, at least frame 0
    assert set(start.long().tolist()) == set(range(9))  # windows near the start (clamped memory) among them
    # With an anchor, and a corrupted copy: [anchor, memory, window, the window's copy], the same draws.
    (both,) = VideoClips(videos, window=4, anchor_reach=2, corrupted=videos + 10_000,
                         memory=(2, 3)).sample(500, torch.Generator().manual_seed(0))
    (anchored,) = VideoClips(videos, window=4, anchor_reach=2).sample(500, torch.Generator().manual_seed(0))
    assert both.shape == (500, 1 + 2 + 4 + 4, 2, 3)
    assert torch.equal(both[:, :1], anchored[:, :1]) and torch.equal(both[:, 3:7], anchored[:, 1:])
    assert torch.equal(both[:, 1:3, 0, 0], (anchored[:, 1:2, 0, 0] // 100) * 100
                       + ((anchored[:, 1:2, 0, 0] % 100) - torch.tensor([6, 3])).clamp_min(0))
    assert torch.equal(both[:, 7:], both[:, 3:7] + 10_000)
    for memory in ((0, 3), (2, 0), (2,), (True, 2), (2, 1.5)):
        with pytest.raises(ValueError, match=r"memory must be \(frames, stride\), two integers >= 1"):
            VideoClips(videos, window=4, memory=memory)


def test_memory_frames_are_clean_and_unlearned_and_a_corrupted_history_leaves_them_as_the_witness():
    objective = corrupting_objective(1.0, anchor_frame=False, memory_frames=2)
    real = clips(batch=256, frames=2 + 6)  # two memory frames and a window of 6 frames, history 2
    t = objective.sample_timesteps(real, torch.Generator().manual_seed(1))  # (B, 8)
    assert (t[:, :2] == CLEAN_LEVEL).all()
    plain = VideoDiffusionObjective(SCHEDULE, "v", clean_history_probability=0.9, shared_future_level=True,
                                    clean_history_frames=2, clean_frame_loss=False)
    assert torch.equal(t[:, 2:], plain.sample_timesteps(real[:, 2:], torch.Generator().manual_seed(1)))
    weight = objective.loss_weight(t.clone())
    assert (weight[:, :2] == 0).all() and (weight[:, 2:][t[:, 2:] != CLEAN_LEVEL] > 0).all()
    # Given, not learned, even where clean frames get a loss.
    with_loss = VideoDiffusionObjective(SCHEDULE, "v", clean_frame_loss=True, memory_frames=2)
    weight = with_loss.loss_weight(t.clone())
    assert (weight[:, :2] == 0).all() and (weight[:, 2:] > 0).all()
    corrupted = 50 + clips(batch=256, frames=6)
    edited = objective.with_corrupted_history(real, corrupted, t, torch.Generator().manual_seed(2))
    clean = (t[:, 2:4] == CLEAN_LEVEL).all(dim=1)
    assert torch.equal(edited[clean, 2:4], corrupted[clean, :2])  # the whole history, memory as the witness
    assert torch.equal(edited[:, :2], real[:, :2]) and torch.equal(edited[:, 4:], real[:, 4:])
    x0, copy = objective.split_corrupted(torch.cat([real, corrupted], dim=1))
    assert torch.equal(x0, real) and torch.equal(copy, corrupted)
    with pytest.raises(ValueError, match="expected clips of 2 memory frames and a window"):
        objective.sample_timesteps(real[:, :2], None)
    with pytest.raises(ValueError, match="model_history_probability does not support memory frames"):
        VideoDiffusionObjective(SCHEDULE, "v", clean_history_probability=0.9, clean_history_frames=2,
                                model_history_probability=0.5, memory_frames=1)
    with pytest.raises(ValueError, match="memory_frames must be an integer >= 0"):
        VideoDiffusionObjective(SCHEDULE, "v", memory_frames=-1)


def test_a_run_with_memory_frames_trains_and_rolls_out_with_the_frames_of_the_video_so_far(tmp_path):
    from videodiff.interp.heads import head_scores
    from videodiff.pipeline import (ROLLOUT_ETA, ROLLOUT_STEPS, held_out_videos, load_video_diffusion,
                                    quick_run_configs, train_video_diffusion, train_video_vae)
    from videodiff.sampling import HistoryGuidance, rollout

    vae_config, config = quick_run_configs(str(tmp_path / "vae" / "checkpoint.pt"))
    vae = train_video_vae(vae_config, tmp_path / "vae")
    config.dit = replace(config.dit, memory_frames=2, memory_stride=2)
    config.train = replace(config.train, progress=False)
    train_video_diffusion(config, tmp_path / "dit", vae=vae.vae)
    run = load_video_diffusion(tmp_path / "dit" / "checkpoint.pt")
    assert run.model.config.memory_frames == 2 and run.model.memory_embedding is not None and run.window == 4
    videos = held_out_videos(run.config, 3)
    frames = run.rollout(videos.frames[:, :2], 5, HistoryGuidance("vanilla", 2.0), seed=4)
    context = run.encode(videos.frames[:, :2])
    options = dict(frames_per_window=run.window - run.config.history_frames(), kind="full_sequence",
                   num_steps=ROLLOUT_STEPS, eta=ROLLOUT_ETA, prediction_type="v",
                   guidance=HistoryGuidance("vanilla", 2.0))
    by_hand = rollout(run.denoiser(run.default_guide_scale), context, 5, run.window, run.schedule, **options,
                      memory_frames=2, memory_stride=2, generator=torch.Generator().manual_seed(4))
    assert np.array_equal(frames, run.decode(by_hand))
    other = rollout(run.denoiser(run.default_guide_scale), context, 5, run.window, run.schedule, **options,
                    memory_frames=2, memory_stride=1, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other, by_hand)  # the memory reaches the model
    with pytest.raises(ValueError, match="does not support models with memory frames"):
        head_scores(run.model, context, run.schedule, [0])


def test_the_training_videos_are_encoded_where_the_dit_trains(tmp_path, encoding_device):
    """Encoding 10 000 videos on the CPU before a GPU run took minutes: the VAE goes to the training device
    (``process_device``; "meta" stands in for a GPU here) before it encodes anything."""
    import videodiff.pipeline as pipeline

    vae_config, config = pipeline.quick_run_configs(str(tmp_path / "vae" / "checkpoint.pt"))
    vae = pipeline.train_video_vae(vae_config, tmp_path / "vae").vae
    for given in (None, vae):  # loaded from the checkpoint, or handed over by the caller
        assert encoding_device(partial(pipeline.train_video_diffusion, config, vae=given), pipeline, pipeline,
                               "encode_videos") == "meta"
    assert vae.latent_scale.device.type == "cpu"  # the caller's VAE stayed put
