"""Attention-head scores and head ablation (videodiff.interp.heads).

Scores are checked on hand-built patterns whose answers are known (a previous-frame head, an induction
head, a head that looks a fixed number of frames back, uniform attention), the model-level functions
against the same scores computed by hand from one unbatched `run_with_cache`, and ablations against
models whose weights were edited to remove the same heads.
"""

import copy

import numpy as np
import pytest
import torch

from imagediff.hooks import hooks, run_with_cache
from toydiff.schedules import make_schedule
from videodiff.dit import make_video_dit
from videodiff.interp.activations import frame_attention
from videodiff.interp.heads import (
    duplicate_scores,
    head_ablation_hooks,
    head_scores,
    induction_head_scores,
    induction_scores,
    mean_head_outputs,
    previous_frame_scores,
    repeated_frame_clips,
    same_frame_scores,
    spatial_alignment_scores,
    top_heads,
    uniform_attention_scores,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FRAMES, HALF = 8, 4


def random_video_dit(seed: int = 0, **overrides):
    """A tiny video DiT with random weights everywhere (a fresh one's blocks are identities). The qkv
    weights are drawn larger, so that attention patterns are far from uniform and differ by head."""
    model = make_video_dit("tiny", num_frames=FRAMES, in_channels=4, input_size=(8, 8), **overrides)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 0.3 if "qkv" in name else 0.05
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return random_video_dit()


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


def one_hot_frame_pattern(targets: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """A frame pattern (B, heads, F, F) in which frame j attends only to frame targets[b, j]."""
    rows = torch.nn.functional.one_hot(targets, targets.shape[1]).double()  # (B, F, F)
    return rows[:, None].expand(-1, heads, -1, -1).clone()  # (B, heads, F, F)


def fixed_offset_targets(batch: int, offset: int) -> torch.Tensor:
    """Frame j attends to frame j - offset (or to itself where there is none)."""
    frames = torch.arange(FRAMES)
    return torch.where(frames >= offset, frames - offset, frames).expand(batch, -1)  # (B, F)


def content_targets(source: torch.Tensor, step: int) -> torch.Tensor:
    """A content-matching head: second-half frame j attends to frame i + step, where i < F/2 shows j's
    content (when i + step is still in the first half); every other frame attends to itself."""
    targets = torch.arange(FRAMES).repeat(source.shape[0], 1)  # (B, F)
    for b in range(source.shape[0]):
        for j in range(HALF, FRAMES):
            i = int((source[b, :HALF] == source[b, j]).nonzero())
            if i + step < HALF:
                targets[b, j] = i + step
    return targets


# ---------------------------------------------------------------------------------------------
#                                  Scores of hand-built patterns
# ---------------------------------------------------------------------------------------------


def test_a_previous_frame_head_scores_one_on_previous_frame_and_zero_on_induction():
    pool = torch.randn(20, 1, 2, 2)
    _, source = repeated_frame_clips(pool, num_clips=6, num_frames=FRAMES, seed=1)
    pattern = one_hot_frame_pattern(fixed_offset_targets(6, offset=1))  # frame 0 attends to itself
    assert torch.allclose(previous_frame_scores(pattern), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(same_frame_scores(pattern), torch.full((2,), 1 / FRAMES, dtype=torch.float64))
    assert torch.allclose(induction_scores(pattern, source), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(duplicate_scores(pattern, source), torch.zeros(2, dtype=torch.float64))

    identity = one_hot_frame_pattern(fixed_offset_targets(6, offset=0))
    assert torch.allclose(same_frame_scores(identity), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(previous_frame_scores(identity), torch.zeros(2, dtype=torch.float64))


def test_scores_of_a_mixed_pattern_average_over_frames_and_examples():
    # Frame f attends to f - 1 with weight w[b], to itself with 1 - w[b]: previous = mean over b of
    # w[b] (frames 1.. only), same = mean over b of (1 - w[b]) except frame 0, which attends to itself fully.
    weights = torch.tensor([0.2, 0.6], dtype=torch.float64)
    pattern = torch.zeros(2, 1, FRAMES, FRAMES, dtype=torch.float64)
    for b, w in enumerate(weights):
        pattern[b, 0, 0, 0] = 1.0
        for f in range(1, FRAMES):
            pattern[b, 0, f, f - 1], pattern[b, 0, f, f] = w, 1 - w
    assert previous_frame_scores(pattern).item() == pytest.approx(0.4)
    expected_same = (1 + (FRAMES - 1) * (1 - weights)).mean() / FRAMES
    assert same_frame_scores(pattern).item() == pytest.approx(float(expected_same))


@pytest.mark.parametrize("permuted", [False, True])
def test_a_content_matching_head_scores_one_on_repeated_and_on_permuted_clips(permuted):
    pool = torch.randn(20, 1, 2, 2)
    _, source = repeated_frame_clips(pool, num_clips=8, num_frames=FRAMES, seed=2, permuted=permuted)
    induction_head = one_hot_frame_pattern(content_targets(source, step=1))
    duplicate_head = one_hot_frame_pattern(content_targets(source, step=0))
    ones, zeros = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    assert torch.allclose(induction_scores(induction_head, source), ones)
    assert torch.allclose(duplicate_scores(duplicate_head, source), ones)
    # Each looks one frame away from what the other looks for (the last frame of the first half has no
    # successor, so the induction head attends to itself there: duplicate 0 still).
    assert torch.allclose(induction_scores(duplicate_head, source), zeros)
    assert torch.allclose(duplicate_scores(induction_head, source), zeros)


def test_a_fixed_offset_head_looks_like_induction_on_repeated_clips_but_not_on_the_control():
    # The control's purpose: "attend F/2 - 1 frames back" lands on the successor of the earlier
    # occurrence on every repeated clip, and on none of the permuted ones.
    pool = torch.randn(30, 1, 2, 2)
    _, repeated = repeated_frame_clips(pool, num_clips=32, num_frames=FRAMES, seed=3)
    _, permuted = repeated_frame_clips(pool, num_clips=32, num_frames=FRAMES, seed=3, permuted=True)
    positional = one_hot_frame_pattern(fixed_offset_targets(32, offset=HALF - 1))
    assert torch.allclose(induction_scores(positional, repeated), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(induction_scores(positional, permuted), torch.zeros(2, dtype=torch.float64))
    # Likewise a head that attends F/2 frames back is a duplicate head only on repeated clips.
    looking_back_half = one_hot_frame_pattern(fixed_offset_targets(32, offset=HALF))
    assert torch.allclose(duplicate_scores(looking_back_half, repeated), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(duplicate_scores(looking_back_half, permuted), torch.zeros(2, dtype=torch.float64))


def test_induction_scores_reject_a_source_that_is_not_a_repeated_clip():
    pattern = torch.full((1, 1, FRAMES, FRAMES), 1 / FRAMES)
    with pytest.raises(ValueError, match="exactly once"):
        induction_scores(pattern, torch.arange(FRAMES)[None])  # nothing repeats
    with pytest.raises(ValueError, match="clips"):
        induction_scores(pattern, torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]] * 2))  # 2 clips, pattern of 1


def test_uniform_attention_scores_the_chance_levels():
    frames, tokens = 4, 6
    pattern = torch.full((2, 3, frames * tokens, frames * tokens), 1 / (frames * tokens), dtype=torch.float64)
    by_frame = frame_attention(pattern, frames)
    chance = uniform_attention_scores(frames, tokens)
    assert chance["spatial_alignment"] == pytest.approx((frames - 1) / (frames * tokens))
    source = torch.tensor([[5, 1, 5, 1], [2, 7, 2, 7]])
    measured = {"spatial_alignment": spatial_alignment_scores(pattern, frames, tokens),
                "previous_frame": previous_frame_scores(by_frame), "same_frame": same_frame_scores(by_frame),
                "induction": induction_scores(by_frame, source), "duplicate": duplicate_scores(by_frame, source)}
    assert set(measured) == set(chance)
    for name, scores in measured.items():
        assert torch.allclose(scores, torch.full((3,), chance[name], dtype=torch.float64)), name


def token_pattern(weights: torch.Tensor) -> torch.Tensor:
    """(B, h, F, N, F, N) weights -> a token pattern (B, h, F·N, F·N), rows normalised to sum to 1."""
    batch, heads, frames, tokens = weights.shape[:4]
    pattern = weights.reshape(batch, heads, frames * tokens, frames * tokens)
    return pattern / pattern.sum(dim=-1, keepdim=True)


def test_spatial_alignment_is_one_for_attention_to_the_same_place_in_other_frames_only():
    frames, tokens = 4, 6  # F != N, so swapping the frame and position axes would show
    generator = torch.Generator().manual_seed(0)
    place = torch.eye(tokens, dtype=torch.float64)  # [s, s']: same position
    other_frames = 1 - torch.eye(frames, dtype=torch.float64)  # [f, g]: another frame
    random = torch.rand(2, 3, frames, tokens, frames, tokens, generator=generator, dtype=torch.float64)

    aligned = token_pattern(random * other_frames[:, None, :, None] * place[None, :, None, :])
    assert torch.allclose(spatial_alignment_scores(aligned, frames, tokens), torch.ones(3, dtype=torch.float64))
    # The same place in the query's own frame (attention to itself) is not alignment across time.
    same_frame = torch.eye(frames, dtype=torch.float64)
    own_token = token_pattern(random * same_frame[:, None, :, None] * place[None, :, None, :])
    assert torch.allclose(spatial_alignment_scores(own_token, frames, tokens), torch.zeros(3, dtype=torch.float64))
    # Nor are other places in other frames.
    elsewhere = token_pattern(random * other_frames[:, None, :, None] * (1 - place)[None, :, None, :])
    assert torch.allclose(spatial_alignment_scores(elsewhere, frames, tokens), torch.zeros(3, dtype=torch.float64))
    # Half the mass on the same place elsewhere in time, half on the query itself: 1/2.
    half = (aligned + torch.eye(frames * tokens, dtype=torch.float64)) / 2
    assert torch.allclose(spatial_alignment_scores(half, frames, tokens), torch.full((3,), 0.5, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
#                                          Repeated clips
# ---------------------------------------------------------------------------------------------


def test_repeated_clips_show_a_half_twice_and_the_control_shows_it_shuffled():
    pool = torch.randn(12, 4, 8, 8)
    latents, source = repeated_frame_clips(pool, num_clips=16, num_frames=FRAMES, seed=7)
    shuffled, shuffled_source = repeated_frame_clips(pool, num_clips=16, num_frames=FRAMES, seed=7, permuted=True)
    assert latents.shape == (16, FRAMES, 4, 8, 8) and source.shape == (16, FRAMES) and source.dtype == torch.int64
    assert torch.equal(latents, pool[source]) and torch.equal(shuffled, pool[shuffled_source])
    first = source[:, :HALF]
    assert all(len(set(row.tolist())) == HALF for row in first)  # distinct frames within a half
    assert torch.equal(source[:, HALF:], first)  # repeated: the same order
    assert torch.equal(latents[:, HALF:], latents[:, :HALF])
    # The control: the same first halves, the second a reordering of it in which no frame keeps its place.
    assert torch.equal(shuffled_source[:, :HALF], first)
    assert torch.equal(shuffled_source[:, HALF:].sort(dim=1).values, first.sort(dim=1).values)
    assert not (shuffled_source[:, HALF:] == first).any()
    # Different seeds, different clips.
    assert not torch.equal(repeated_frame_clips(pool, 16, FRAMES, seed=8)[1], source)


def test_repeated_clips_need_an_even_number_of_frames_and_enough_pool():
    pool = torch.randn(12, 4, 8, 8)
    with pytest.raises(ValueError, match="even"):
        repeated_frame_clips(pool, num_clips=2, num_frames=7, seed=0)
    with pytest.raises(ValueError, match="pool holds only 3"):
        repeated_frame_clips(pool[:3], num_clips=2, num_frames=FRAMES, seed=0)
    with pytest.raises(ValueError, match="num_frames >= 4"):
        repeated_frame_clips(pool, num_clips=2, num_frames=2, seed=0, permuted=True)


# ---------------------------------------------------------------------------------------------
#                                      Scores of a model
# ---------------------------------------------------------------------------------------------


def scores_by_hand(model, latents, schedule, level, seed, score):
    """The documented procedure, unbatched: noise drawn from seed, one forward, scores per layer."""
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    t = torch.full(latents.shape[:2], level, dtype=torch.int64)
    with torch.no_grad():
        _, cache = run_with_cache(model, schedule.add_noise(latents, noise, t), t, names=["pattern"])
    return np.stack([score(cache["pattern", layer]).numpy() for layer in range(model.config.depth)])


def test_head_scores_equal_the_scores_of_one_unbatched_pass(model, schedule):
    latents = torch.randn(5, FRAMES, 4, 8, 8)
    levels = [0, 999]
    tokens = model.config.tokens_per_frame
    scores = head_scores(model, latents, schedule, levels, seed=4, batch_size=2)  # batches of 2, 2 and 1 clips
    depth, heads = model.config.depth, model.config.num_heads
    for name in ("previous_frame", "same_frame", "spatial_alignment"):
        assert scores[name].shape == (len(levels), depth, heads)
        assert np.isfinite(scores[name]).all() and (scores[name] >= 0).all() and (scores[name] <= 1).all()
    by_hand = {
        "previous_frame": lambda pattern: previous_frame_scores(frame_attention(pattern, FRAMES)),
        "same_frame": lambda pattern: same_frame_scores(frame_attention(pattern, FRAMES)),
        "spatial_alignment": lambda pattern: spatial_alignment_scores(pattern, FRAMES, tokens),
    }
    for level_index, level in enumerate(levels):
        for name, score in by_hand.items():
            expected = scores_by_hand(model, latents, schedule, level, seed=4, score=score)
            np.testing.assert_allclose(scores[name][level_index], expected, atol=1e-5)
    # The noise level matters to a model whose adaLN weights are not zero.
    assert np.abs(scores["same_frame"][0] - scores["same_frame"][1]).max() > 1e-3


def test_induction_head_scores_use_the_repeated_clips_and_their_control(model, schedule):
    pool = torch.randn(10, 4, 8, 8)
    scores = induction_head_scores(model, pool, schedule, levels=[100], num_clips=3, seed=5, batch_size=2)
    assert set(scores) == {"induction", "duplicate", "induction_permuted", "duplicate_permuted"}
    for value in scores.values():
        assert value.shape == (1, model.config.depth, model.config.num_heads)
        assert np.isfinite(value).all() and (value >= 0).all() and (value <= 1).all()
    for permuted, suffix in ((False, ""), (True, "_permuted")):
        latents, source = repeated_frame_clips(pool, 3, FRAMES, seed=5, permuted=permuted)
        for name, score in (("induction", induction_scores), ("duplicate", duplicate_scores)):
            expected = scores_by_hand(model, latents, schedule, 100, seed=5,
                                      score=lambda pattern: score(frame_attention(pattern, FRAMES), source))
            np.testing.assert_allclose(scores[name + suffix][0], expected, atol=1e-5)


def test_top_heads_lists_the_highest_scores_first():
    scores = np.array([[0.1, 0.9, 0.3],
                       [0.5, 0.2, 0.9]])
    assert top_heads(scores, 3) == [(0, 1), (1, 2), (1, 0)]  # the tie 0.9 goes to the lower layer
    assert top_heads(torch.tensor(scores), 1) == [(0, 1)]
    with pytest.raises(ValueError, match="1..6"):
        top_heads(scores, 7)
    with pytest.raises(ValueError, match="depth, heads"):
        top_heads(scores[0], 1)


# ---------------------------------------------------------------------------------------------
#                                           Head ablation
# ---------------------------------------------------------------------------------------------


def clips_and_levels(batch: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x_t = torch.randn(batch, FRAMES, 4, 8, 8, generator=generator)
    t = torch.randint(0, 1000, (batch, FRAMES), generator=generator)
    return x_t, t


def without_projection_columns(model, layer: int, heads: list[int]):
    """A copy of the model whose block ``layer`` has W_O's columns of ``heads`` set to zero."""
    edited = copy.deepcopy(model)
    d = model.config.head_dim
    with torch.no_grad():
        for head in heads:
            edited.blocks[layer].attention.projection.weight[:, head * d:(head + 1) * d] = 0.0
    return edited


@torch.no_grad()
def test_zero_ablation_removes_exactly_the_heads_projection_terms(model):
    x_t, t = clips_and_levels()
    output = model(x_t, t)
    with hooks(model, head_ablation_hooks([(1, 2), (3, 0)], "zero")):
        ablated = model(x_t, t)
    assert (ablated - output).abs().max() > 1e-3  # removing heads changes what the model predicts
    edited = without_projection_columns(without_projection_columns(model, 1, [2]), 3, [0])
    torch.testing.assert_close(ablated, edited(x_t, t), atol=1e-5, rtol=1e-5)
    # The hooks are gone after the with block.
    torch.testing.assert_close(model(x_t, t), output)


@torch.no_grad()
def test_zero_ablating_every_head_of_a_block_leaves_only_the_projection_bias(model):
    x_t, t = clips_and_levels()
    layer, heads = 2, range(model.config.num_heads)
    with hooks(model, head_ablation_hooks([(layer, head) for head in heads], "zero")):
        ablated, cache = run_with_cache(model, x_t, t, names=["attn_out", "gate_attn"], layers=[layer])
    # What the attention adds to the stream is gate · bias, for every token of a frame.
    gate = cache["gate_attn", layer]  # (B, F, D)
    bias = model.blocks[layer].attention.projection.bias  # (D,)
    expected = (gate * bias).repeat_interleave(model.config.tokens_per_frame, dim=1)  # (B, F·N, D)
    torch.testing.assert_close(cache["attn_out", layer], expected, atol=1e-6, rtol=1e-5)
    edited = without_projection_columns(model, layer, list(heads))
    torch.testing.assert_close(ablated, edited(x_t, t), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_mean_ablation_keeps_a_heads_mean_contribution_and_removes_its_variation(model):
    x_t, t = clips_and_levels(batch=3, seed=1)
    heads = [(0, 1), (2, 3)]
    means = mean_head_outputs(model, x_t, t, heads)
    assert set(means) == set(heads) and all(mean.shape == (model.config.head_dim,) for mean in means.values())
    _, before = run_with_cache(model, x_t, t, names=["head_out"], layers=[0, 2])
    with hooks(model, head_ablation_hooks(heads, "mean", means)):
        _, after = run_with_cache(model, x_t, t, names=["head_out"], layers=[0, 2])
    for layer, head in heads:
        original = before["head_out", layer][:, :, head]  # (B, F·N, D): the head's term after W_O
        replaced = after["head_out", layer][:, :, head]
        mean_term = original.mean(dim=(0, 1))  # (D,): W_O is linear, so W_O(mean z) = mean(W_O z)
        torch.testing.assert_close(replaced, mean_term.expand_as(replaced), atol=1e-5, rtol=1e-4)
        assert original.std(dim=(0, 1)).max() > 1e-2  # it did vary before
    # The other heads of an ablated layer are untouched.
    torch.testing.assert_close(after["head_out", 0][:, :, 0], before["head_out", 0][:, :, 0])


@torch.no_grad()
def test_mean_ablation_of_a_head_that_never_varies_changes_nothing():
    # Without the spatial table and with a constant clip at one level, every token is the same, so each
    # head's z is its own mean: replacing it by that mean must leave the output as it was.
    model = random_video_dit(seed=1, spatial_table=False)
    x_t = torch.full((2, FRAMES, 4, 8, 8), 0.7)
    t = torch.full((2, FRAMES), 300, dtype=torch.int64)
    heads = [(layer, head) for layer in range(model.config.depth) for head in (0, 2)]
    means = mean_head_outputs(model, x_t, t, heads)
    output = model(x_t, t)
    with hooks(model, head_ablation_hooks(heads, "mean", means)):
        torch.testing.assert_close(model(x_t, t), output, atol=1e-5, rtol=1e-5)
    # A different head's mean in its place is not a no-op: the heads differ.
    swapped = {(layer, head): means[(layer, 2 - head)] for layer, head in heads}
    with hooks(model, head_ablation_hooks(heads, "mean", swapped)):
        assert (model(x_t, t) - output).abs().max() > 1e-3


def test_head_ablation_names_what_is_wrong(model):
    x_t, t = clips_and_levels(batch=1)
    with pytest.raises(ValueError, match="head 9 of layer 1 does not exist"):
        with hooks(model, head_ablation_hooks([(1, 9)], "zero")), torch.no_grad():
            model(x_t, t)
    with pytest.raises(KeyError, match="blocks.7.attention.hook_z"):
        with hooks(model, head_ablation_hooks([(7, 0)], "zero")):
            pass
    with pytest.raises(ValueError, match="mean_head_outputs"):
        head_ablation_hooks([(0, 0)], "mean")
    with pytest.raises(ValueError, match=r"no entry for heads \[\(1, 1\)\]"):
        head_ablation_hooks([(0, 0), (1, 1)], "mean", {(0, 0): torch.zeros(32)})
    with pytest.raises(ValueError, match="'zero' or 'mean'"):
        head_ablation_hooks([(0, 0)], "random")
    with pytest.raises(ValueError, match="layers 0..3 and heads 0..3"):
        mean_head_outputs(model, x_t, t, [(4, 0)])
