"""The video DiT: 3-D RoPE (relative, covering the head dimension), per-frame adaLN-Zero, no attention
mask, time-major tokens, sizes and errors."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from imagediff.dit import patchify, sincos_position_embedding_2d
from videodiff.dit import (
    VideoDiT, VideoDiTConfig, apply_rotary, make_video_dit, rope_angles, rope_split, video_dit_config,
    video_training_flops,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def small_video_dit(**overrides) -> VideoDiT:
    settings = dict(input_size=(4, 4), in_channels=3, patch_size=2, hidden_dim=48, depth=2, num_heads=2,
                    num_frames=4)
    settings.update(overrides)
    return VideoDiT(VideoDiTConfig(**settings))


def perturbed(model, std=0.05):
    """Random weights everywhere, so that no zero-initialised layer hides a path."""
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * std)
    return model


def video_inputs(batch=2, frames=4):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, frames, 3, 4, 4, generator=generator)
    t = torch.randint(0, 1000, (batch, frames), generator=generator)
    return x, t


# ---------------------------------------------------------------------------------------------
#                                          3-D RoPE
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head_dim", [6, 8, 24, 32, 64, 66])
def test_rope_split_covers_the_head_dimension(head_dim):
    pairs_t, pairs_h, pairs_w = rope_split(head_dim)
    assert pairs_t + pairs_h + pairs_w == head_dim // 2
    assert pairs_h == pairs_w >= 1 and pairs_t >= pairs_h
    assert rope_angles(3, 2, 2, head_dim).shape == (12, head_dim // 2)


def test_rope_angles_are_time_major_and_turn_each_axis_on_its_own_pairs():
    head_dim = 32  # pairs (6, 5, 5)
    angles = rope_angles(frames=3, height=2, width=4, head_dim=head_dim)
    token = lambda f, r, c: (f * 2 + r) * 4 + c  # noqa: E731  time-major index
    # Moving one column changes only the column pairs (the last 5), by their frequencies.
    step = angles[token(1, 1, 3)] - angles[token(1, 1, 2)]
    assert torch.equal(step[:11], torch.zeros(11))
    assert torch.allclose(step[11:], 10_000.0 ** (-torch.arange(5.0) / 5))
    # Moving one frame changes only the first 6 pairs; the first one turns by one radian.
    step = angles[token(2, 0, 0)] - angles[token(1, 0, 0)]
    assert torch.equal(step[6:], torch.zeros(10)) and step[0] == 1.0
    step = angles[token(0, 1, 0)] - angles[token(0, 0, 0)]
    assert torch.equal(step[:6], torch.zeros(6)) and torch.equal(step[11:], torch.zeros(5)) and step[6] == 1.0


def test_rotation_keeps_norms_and_makes_scores_depend_only_on_position_differences():
    # RoPE is relative: shifting every position along one axis leaves q·k unchanged, for each axis.
    torch.manual_seed(0)
    head_dim, frames, height, width = 12, 6, 3, 3
    q, k = torch.randn(2, head_dim), torch.randn(2, head_dim)

    def score(pos_q, pos_k):
        angles = rope_angles(frames, height, width, head_dim)
        index = lambda f, r, c: (f * height + r) * width + c  # noqa: E731
        a_q, a_k = angles[index(*pos_q)], angles[index(*pos_k)]
        rq = apply_rotary(q[None, None, :1], a_q.cos()[None], a_q.sin()[None])
        rk = apply_rotary(k[None, None, :1], a_k.cos()[None], a_k.sin()[None])
        assert torch.allclose(rq.norm(), q[:1].norm())
        return (rq * rk).sum()

    base = score((1, 0, 1), (3, 1, 0))
    assert torch.allclose(score((3, 0, 1), (5, 1, 0)), base, atol=1e-5)  # frames + 2
    assert torch.allclose(score((1, 1, 1), (3, 2, 0)), base, atol=1e-5)  # rows + 1
    assert torch.allclose(score((1, 0, 2), (3, 1, 1)), base, atol=1e-5)  # columns + 1
    assert not torch.allclose(score((1, 0, 1), (4, 1, 0)), base, atol=1e-3)  # a different offset


def test_attention_scores_of_the_model_are_unchanged_when_a_window_starts_later():
    # The model's own path: the RoPE hook on real queries and keys. Tokens of frames 0..3 at
    # positions 0..3, or the same tokens at positions 2..5, give the same attention pattern.
    model = perturbed(small_video_dit())
    x, t = video_inputs()
    model.record_attention(True)
    model(x, t)
    pattern = model.attention_patterns()[0]
    shifted = model.rotary(6, x.device, x.dtype)  # longer than the model's window: computed afresh
    tokens_per_frame = 4
    late = slice(2 * tokens_per_frame, 6 * tokens_per_frame)
    attention = model.blocks[0].attention
    shifted.cos, shifted.sin = shifted.cos[late], shifted.sin[late]
    model.position_rotary = lambda x_t, tokens: shifted  # this model only: every block gets positions 2..5
    model(x, t)
    assert torch.allclose(model.attention_patterns()[0], pattern, atol=1e-5)
    assert attention.record_attention


def test_a_shorter_window_takes_the_first_rows_of_the_models_rope_table():
    # Positions restart at 0 in every window and tokens are time-major, so the table of the model's
    # window (4 frames here) holds every shorter window's; longer ones get a table of their own.
    model = small_video_dit()
    grid = model.config.grid_size
    for frames in (1, 3, 4, 6):
        stored = model.rotary(frames, torch.device("cpu"), torch.float32)
        fresh = rope_angles(frames, *grid, model.config.head_dim, model.config.rope_base)
        assert stored.cos.shape == fresh.shape
        assert torch.equal(stored.cos, fresh.cos()) and torch.equal(stored.sin, fresh.sin())
    assert "rope_cos" not in model.state_dict()  # it follows from the config: checkpoints stay as they were


def test_the_compiled_model_is_not_compiled_again_on_its_second_call():
    # Dynamo's "eager" backend traces and guards like the real compiler, in a fraction of the time. A RoPE
    # table cached on the first call (inside the compiled region) failed a guard on the second: the
    # training step compiled twice.
    torch._dynamo.reset()
    model = small_video_dit()
    compiled = torch.compile(model, backend="eager")
    x, t = video_inputs()
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            first = compiled(x, t)
            assert torch.equal(compiled(x, t), first)
    finally:
        torch._dynamo.reset()  # no compiled frame of this test outlives it, whether it passed or not


# ---------------------------------------------------------------------------------------------
#                                  Per-frame noise levels, no mask
# ---------------------------------------------------------------------------------------------


def test_at_init_the_model_outputs_zeros_and_every_block_is_the_identity():
    model = small_video_dit()
    x, t = video_inputs()
    assert torch.equal(model(x, t), torch.zeros_like(x))
    tokens, c = torch.randn(2, 16, 48), torch.randn(2, 4, 48)
    rotary = model.rotary(4, tokens.device, tokens.dtype)
    for block in model.blocks:
        assert torch.equal(block(tokens, c, rotary), tokens)


def test_a_frames_noise_level_modulates_only_that_frames_tokens():
    # Without blocks, nothing mixes frames: changing frame 2's level changes frame 2's output only.
    model = perturbed(small_video_dit(depth=0))
    x, t = video_inputs()
    changed = t.clone()
    changed[:, 2] = (t[:, 2] + 500) % 1000
    before, after = model(x, t), model(x, changed)
    assert torch.equal(before[:, [0, 1, 3]], after[:, [0, 1, 3]])
    assert not torch.allclose(before[:, 2], after[:, 2], atol=1e-3)


def test_there_is_no_attention_mask_every_frame_sees_every_other_one():
    # Frames are told apart only by their levels: the first frame's output depends on the last
    # frame's content and level (a causal mask would cut the first, any mask the second).
    model = perturbed(small_video_dit())
    x, t = video_inputs()
    later = x.clone()
    later[:, 3] += 1.0
    assert not torch.allclose(model(x, t)[:, 0], model(later, t)[:, 0], atol=1e-4)
    relevelled = t.clone()
    relevelled[:, 3] = (t[:, 3] + 500) % 1000
    assert not torch.allclose(model(x, t)[:, 0], model(x, relevelled)[:, 0], atol=1e-4)
    model.record_attention(True)
    model(x, t)
    assert (model.attention_patterns()[0] > 0).all()


def test_tokens_are_time_major_and_each_frame_is_patchified_like_an_image():
    # Frame f's N tokens sit at f·N .. (f+1)·N - 1, each the image DiT's patch of that frame alone.
    model = perturbed(small_video_dit())
    x, _ = video_inputs()
    tokens = model.embed_patches(x)  # (B, F·N, D), N = 4
    table = sincos_position_embedding_2d(2, 2, 48)  # (N, D): the same spatial table in every frame
    for frame in range(4):
        expected = model.patch_embedding(patchify(x[:, frame], 2)) + table  # (B, N, D)
        assert torch.allclose(tokens[:, 4 * frame:4 * (frame + 1)], expected, atol=1e-6)
    # Without the table, positions enter by rotation only.
    bare = perturbed(small_video_dit(spatial_table=False))
    assert bare.position_embedding is None
    assert torch.allclose(bare.embed_patches(x)[:, 8:12], bare.patch_embedding(patchify(x[:, 2], 2)), atol=1e-6)


def test_any_window_length_up_to_and_beyond_training_runs():
    model = perturbed(small_video_dit())
    for frames in (1, 3, 4, 7):
        x, t = video_inputs(frames=frames)
        assert model(x, t).shape == x.shape


def test_a_video_dit_trains_a_step():
    model = small_video_dit()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, t = video_inputs()
    losses = []
    for _ in range(5):
        loss = (model(x, t) - x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------
#                                  Sizes, FLOPs and errors
# ---------------------------------------------------------------------------------------------


def test_registry_sizes_and_overrides():
    config = video_dit_config("small", num_frames=16)
    assert (config.hidden_dim, config.depth, config.num_heads, config.num_frames) == (384, 12, 6, 16)
    assert video_dit_config("base").hidden_dim == 768
    assert make_video_dit("tiny").config.num_frames == 8
    with pytest.raises(ValueError, match="Unknown video DiT size 'huge'"):
        video_dit_config("huge")


def test_a_widened_size_keeps_its_head_dimension_and_depth():
    from videodiff.dit import widened
    from videodiff.pipeline import VideoDiffusionRunConfig
    tiny = video_dit_config("tiny")
    wide = video_dit_config("tiny", **widened("tiny", 256))
    assert (wide.hidden_dim, wide.num_heads, wide.head_dim, wide.depth) == (256, 8, tiny.head_dim, tiny.depth)
    assert (tiny.hidden_dim, tiny.num_heads, tiny.head_dim) == (128, 4, 32)
    assert widened("small", 128) == {"hidden_dim": 128, "num_heads": 2}  # small's heads are 64 wide
    # The recipe's DiT is the registry's tiny made 192 wide.
    assert VideoDiffusionRunConfig().dit == video_dit_config("tiny", num_frames=8, hidden_dim=192, num_heads=6)
    for width in (100, 0, -32, 64.0, True):
        with pytest.raises(ValueError, match="its heads are 32 wide, so the width must be a positive multiple of 32"):
            widened("tiny", width)


@pytest.mark.parametrize("frames", [2, 4])
def test_training_flops_match_pytorchs_flop_counter(frames):
    # PyTorch counts the products the model really runs, forward and backward. The explicit attention
    # path, because the counter does not see inside CPU SDPA; x requires a gradient so that the patch
    # embedding computes its input gradient, as 6·P·N assumes. The one product without an input
    # gradient: the time MLP's first Linear reads fixed sinusoids, once per frame.
    model = perturbed(small_video_dit())
    model.record_attention(True)
    x, t = video_inputs(batch=3, frames=frames)
    x.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        model(x, t).square().sum().backward()
    config = model.config
    expected = video_training_flops(config, 3, frames) - 2 * 3 * frames * config.time_embedding_dim * config.hidden_dim
    assert counter.get_total_flops() == expected


def test_bad_inputs_and_configs_are_refused():
    model = small_video_dit()
    x, t = video_inputs()
    with pytest.raises(ValueError, match=r"\(B, F, 3, 4, 4\).*got \(2, 3, 4, 4\)"):
        model(x[:, 0], t[:, 0])
    with pytest.raises(ValueError, match=r"int64 tensor of shape \(2, 4\) \(one per frame\), got a torch.int64 tensor of shape \(2,\)"):
        model(x, t[:, 0])
    with pytest.raises(ValueError, match="unconditional"):
        model(x, t, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="head_dim .* even and >= 6"):
        VideoDiTConfig(hidden_dim=16, num_heads=4)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        VideoDiTConfig(num_frames=0)
    with pytest.raises(TypeError, match="VideoDiTConfig"):
        VideoDiT(video_dit_config("tiny").__class__.__mro__[1]())


def test_a_self_conditioned_video_dit_reads_an_estimate_per_frame():
    torch.manual_seed(0)
    model = VideoDiT(video_dit_config("tiny", hidden_dim=32, depth=1, num_heads=2, self_condition=True))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    x, t = torch.randn(2, 3, 4, 8, 8), torch.tensor([[0, 400, 900], [10, 20, 30]])
    estimate = torch.randn_like(x)
    plain, informed = model(x, t), model(x, t, previous_x0=estimate)
    assert plain.shape == x.shape and not torch.allclose(plain, informed, atol=1e-3)
    assert torch.equal(plain, model(x, t, previous_x0=torch.zeros_like(x)))


def test_a_video_dit_config_refuses_the_image_only_options():
    from videodiff.dit import VideoDiTConfig
    for option in ({"angle_conditioning": True}, {"condition_token": True}, {"label_parts": [[0]], "num_classes": 1}):
        with pytest.raises(ValueError, match="the image DiT's options; a video DiT reads none of them"):
            VideoDiTConfig(**option)


def test_an_anchored_video_dit_marks_frame_0_and_draws_the_other_weights_as_before():
    torch.manual_seed(3)
    plain = small_video_dit()
    torch.manual_seed(3)
    anchored = small_video_dit(anchor_frame=True)
    # The same seed draws the same weights; the anchor's vector is drawn after all of them.
    anchored_weights = anchored.state_dict()
    assert all(torch.equal(weight, anchored_weights[name]) for name, weight in plain.state_dict().items())
    assert set(anchored_weights) - set(plain.state_dict()) == {"anchor_embedding"}
    anchored.load_state_dict(perturbed(plain).state_dict(), strict=False)  # the same random weights but the mark
    assert plain.anchor_embedding is None and anchored.config.input_frames == 5 and plain.config.input_frames == 4
    # The RoPE table covers the anchor and the window: 5 frames of N = 4 tokens.
    assert anchored.rope_cos.shape == (5 * 4, anchored.config.head_dim // 2)
    # Frame 0's condition carries the anchor's mark, and no other frame's.
    x, t = video_inputs(frames=5)
    difference = anchored.embed_condition(t) - plain.embed_condition(t)  # (B, 5, D)
    torch.testing.assert_close(difference[:, 0], anchored.anchor_embedding.expand(2, -1))
    assert torch.equal(difference[:, 1:], torch.zeros_like(difference[:, 1:]))
    assert not torch.allclose(anchored(x, t), plain(x, t))
    with pytest.raises(ValueError, match="takes an anchor frame in front of every window"):
        anchored(x[:, :1], t[:, :1])
    # A training step's FLOPs count the anchor with the window.
    assert video_training_flops(anchored.config, 2) == video_training_flops(anchored.config, 2, frames=5)


def test_memory_frames_each_get_their_own_mark_after_the_anchor_and_the_other_weights_are_drawn_as_before():
    torch.manual_seed(3)
    plain = small_video_dit()
    torch.manual_seed(3)
    both = small_video_dit(anchor_frame=True, memory_frames=2)
    weights = both.state_dict()
    assert all(torch.equal(weight, weights[name]) for name, weight in plain.state_dict().items())
    assert set(weights) - set(plain.state_dict()) == {"anchor_embedding", "memory_embedding"}
    assert both.memory_embedding.shape == (2, 48) and plain.memory_embedding is None
    assert both.config.leading_frames == 3 and both.config.input_frames == 7
    assert both.rope_cos.shape == (7 * 4, both.config.head_dim // 2)
    both.load_state_dict(perturbed(plain).state_dict(), strict=False)
    x, t = video_inputs(frames=7)
    difference = both.embed_condition(t) - plain.embed_condition(t)  # (B, 7, D): [anchor, memory 0, memory 1, window]
    torch.testing.assert_close(difference[:, 0], both.anchor_embedding.expand(2, -1))
    torch.testing.assert_close(difference[:, 1:3], both.memory_embedding.expand(2, -1, -1))
    assert torch.equal(difference[:, 3:], torch.zeros_like(difference[:, 3:]))
    assert not torch.equal(both.memory_embedding[0], both.memory_embedding[1])  # one mark per slot
    memory_only = small_video_dit(memory_frames=3)
    assert memory_only.config.leading_frames == 3 and memory_only.anchor_embedding is None
    with pytest.raises(ValueError, match="takes an anchor frame and 2 memory frames in front of every window"):
        both(x[:, :3], t[:, :3])
    for bad in (dict(memory_frames=-1), dict(memory_stride=0), dict(memory_frames=1.5)):
        with pytest.raises(ValueError, match="must be an integer"):
            small_video_dit(**bad)
