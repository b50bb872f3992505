"""Hook points, caches, trajectories and ablation hooks of videodiff.interp (and imagediff.hooks)."""

import pytest
import torch

from imagediff.dit import make_dit
from imagediff.hooks import ActivationCache, hook_names, hook_points, hooks, run_with_cache
from toydiff.parameterisation import predict_epsilon
from toydiff.schedules import make_schedule
from videodiff.dit import make_video_dit
from videodiff.interp.ablations import fixed_noise_level, modulation_mean, noise_injection, skip_block
from videodiff.interp.activations import (frame_attention, pool_tokens, pool_tokens_per_frame, project,
                                          select_frames, then, token_index)
from videodiff.interp.trajectories import invert_video, sample_video

FRAMES, TOKENS = 4, 16


def random_model(seed=0, **overrides):
    """A tiny video DiT with every weight drawn (the zero-initialised ones too, so that blocks act)."""
    torch.manual_seed(seed)
    model = make_video_dit("tiny", hidden_dim=48, depth=2, num_heads=2, num_frames=FRAMES, **overrides)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    return model.eval()


def inputs(batch=2, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, FRAMES, 4, 8, 8, generator=generator)
    t = torch.randint(0, 1000, (batch, FRAMES), generator=generator)
    return x, t


# ------------------------------------------------------------------------------------- hook points


def test_every_site_of_the_issue_has_a_named_hook_point():
    names = set(hook_names(random_model()))
    for layer in range(2):
        for kind in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out",
                     "hook_shift_attn", "hook_scale_attn", "hook_gate_attn", "hook_shift_mlp", "hook_scale_mlp",
                     "hook_gate_mlp", "attention.hook_q", "attention.hook_k", "attention.hook_v",
                     "attention.hook_scores", "attention.hook_pattern", "attention.hook_z",
                     "attention.hook_head_out", "mlp.hook_hidden"):
            assert f"blocks.{layer}.{kind}" in names
    assert {"hook_patch_embed", "hook_time_embed", "hook_condition", "final_layer.hook_out"} <= names


def test_hooks_that_return_nothing_leave_the_output_bit_for_bit_unchanged():
    model, (x, t) = random_model(), inputs()
    reference = model(x, t)
    cheap = [name for name in hook_names(model) if not name.endswith(("hook_scores", "hook_pattern", "hook_head_out"))]
    seen = []
    with hooks(model, [(lambda name: name in cheap, lambda activation, hook: seen.append(hook.name))]):
        out = model(x, t)
    assert torch.equal(out, reference)
    assert set(seen) == set(cheap)


def test_the_materialised_attention_and_per_head_paths_equal_the_fused_path():
    model, (x, t) = random_model(), inputs()
    reference = model(x, t)
    out, cache = run_with_cache(model, x, t, names=["pattern", "head_out"])
    assert torch.allclose(out, reference, atol=1e-5)
    pattern = cache["pattern", 1]
    assert pattern.shape == (2, 2, FRAMES * TOKENS, FRAMES * TOKENS)
    assert torch.allclose(pattern.sum(-1), torch.ones(2, 2, FRAMES * TOKENS), atol=1e-5)
    # The heads' contributions add up to the attention output (before the gate): check via the cache.
    _, cache = run_with_cache(model, x, t, names=["head_out", "z"], layers=[0])
    attention = model.blocks[0].attention
    whole = attention.projection(cache["z", 0].permute(0, 2, 1, 3).flatten(2))  # (B, T, D)
    assert torch.allclose(cache["head_out", 0].sum(2) + attention.projection.bias, whole, atol=1e-5)


def test_a_hook_that_edits_a_site_changes_the_output_and_a_wrong_shape_is_refused():
    model, (x, t) = random_model(), inputs()
    reference = model(x, t)
    with hooks(model, [("blocks.0.hook_resid_post", lambda activation, hook: activation * 0.5)]):
        assert not torch.allclose(model(x, t), reference)
    with hooks(model, [("blocks.0.attention.hook_pattern", lambda p, hook: torch.full_like(p, 1 / p.shape[-1]))]):
        assert not torch.allclose(model(x, t), reference, atol=1e-4)
    with pytest.raises(ValueError, match="activation's shape"):
        with hooks(model, [("blocks.0.hook_resid_post", lambda activation, hook: activation[:, :1])]):
            model(x, t)
    assert torch.equal(model(x, t), reference)


def test_hooks_are_removed_after_the_context_also_after_an_exception():
    model, (x, t) = random_model(), inputs()
    with hooks(model, [(lambda name: True, lambda activation, hook: None)]):
        assert all(point.is_hooked for point in hook_points(model).values())
    assert not any(point.is_hooked for point in hook_points(model).values())
    with pytest.raises(RuntimeError, match="inside"):
        with hooks(model, [("blocks.1.hook_mlp_out", lambda activation, hook: activation)]):
            raise RuntimeError("raised inside the context")
    assert not any(point.is_hooked for point in hook_points(model).values())
    with pytest.raises(KeyError, match="no hook point named"):
        with hooks(model, [("blocks.9.hook_resid_post", lambda activation, hook: None)]):
            pass
    assert not any(point.is_hooked for point in hook_points(model).values())


def test_the_cache_is_indexed_by_name_and_by_kind_and_layer_and_holds_only_what_was_asked():
    model, (x, t) = random_model(), inputs()
    _, cache = run_with_cache(model, x, t, names=["resid_post", "condition"], layers=[1])
    assert isinstance(cache, ActivationCache)
    assert sorted(cache) == ["blocks.1.hook_resid_post", "hook_condition"]
    assert torch.equal(cache["resid_post", 1], cache["blocks.1.hook_resid_post"])
    assert cache["condition"].shape == (2, FRAMES, 48)
    _, every = run_with_cache(model, x, t, names="resid_post")
    assert every.stack("resid_post").shape == (2, 2, FRAMES * TOKENS, 48)
    # resid_post of block 0 is resid_pre of block 1; resid_pre + attn_out = resid_mid.
    _, sites = run_with_cache(model, x, t, layers=[0, 1])
    assert torch.equal(sites["resid_post", 0], sites["resid_pre", 1])
    assert torch.equal(sites["resid_pre", 0] + sites["attn_out", 0], sites["resid_mid", 0])
    with pytest.raises(KeyError, match="unknown hook names"):
        run_with_cache(model, x, t, names=["residual"])
    with pytest.raises(KeyError, match="not in this cache"):
        cache["resid_post", 0]


def test_selected_frames_and_pooled_tokens_are_cut_inside_the_hook():
    model, (x, t) = random_model(), inputs()
    _, full = run_with_cache(model, x, t, names=["resid_post", "q", "gate_attn", "pattern"], layers=[0])
    select = select_frames(range(2, 4), FRAMES, TOKENS)
    _, cut = run_with_cache(model, x, t, names=["resid_post", "q", "gate_attn", "pattern"], layers=[0], select=select)
    tokens = token_index(range(2, 4), FRAMES, TOKENS)
    assert torch.equal(cut["resid_post", 0], full["resid_post", 0][:, tokens])
    assert torch.equal(cut["q", 0], full["q", 0][:, :, tokens])
    assert torch.equal(cut["gate_attn", 0], full["gate_attn", 0][:, 2:4])
    assert torch.equal(cut["pattern", 0], full["pattern", 0][:, :, tokens])
    _, pooled = run_with_cache(model, x, t, names=["resid_post"], layers=[0], select=then(select, pool_tokens))
    assert torch.allclose(pooled["resid_post", 0], full["resid_post", 0][:, tokens].mean(1))


def test_per_frame_pooling_keeps_the_order_of_frames_that_a_window_mean_loses():
    model, (x, t) = random_model(), inputs()
    per_frame = pool_tokens_per_frame(FRAMES, TOKENS)
    _, full = run_with_cache(model, x, t, names=["resid_post", "q", "gate_attn"], layers=[0])
    _, pooled = run_with_cache(model, x, t, names=["resid_post", "q", "gate_attn"], layers=[0], select=per_frame)
    resid = full["resid_post", 0]  # (B, F·N, D)
    expected = torch.stack([resid[:, f * TOKENS:(f + 1) * TOKENS].mean(1) for f in range(FRAMES)], dim=1)
    assert torch.allclose(pooled["resid_post", 0], expected.flatten(1))  # frame-major: frame 0's D, then frame 1's
    q = full["q", 0]  # (B, heads, F·N, d)
    assert torch.allclose(pooled["q", 0][:, :q.shape[1] * q.shape[3]],
                          q[:, :, :TOKENS].mean(2).flatten(1))  # frame 0's heads·d first
    assert torch.equal(pooled["gate_attn", 0], full["gate_attn", 0].flatten(1))  # one row per frame already
    # Two windows whose frames are the same but in reverse order: one mean, two per-frame vectors.
    forward = torch.randn(1, FRAMES * TOKENS, 8)
    backward = forward.reshape(1, FRAMES, TOKENS, 8).flip(1).reshape(1, FRAMES * TOKENS, 8)
    assert torch.allclose(pool_tokens("resid_post", forward), pool_tokens("resid_post", backward), atol=1e-6)
    assert not torch.allclose(per_frame("resid_post", forward), per_frame("resid_post", backward))
    with pytest.raises(ValueError, match="expected 4 frames of"):
        per_frame("resid_post", forward[:, :TOKENS])
    with pytest.raises(ValueError, match="has no meaning"):
        per_frame("pattern", torch.zeros(1, 1, FRAMES * TOKENS, FRAMES * TOKENS))
    projection = torch.randn(FRAMES * 8, 5)
    projected = then(per_frame, project(projection))("resid_post", forward)
    assert torch.allclose(projected, per_frame("resid_post", forward) @ projection)
    assert torch.equal(project(None)("resid_post", forward[:, 0]), forward[:, 0])


def test_frame_attention_sums_each_frames_attention_to_each_frame():
    pattern = torch.zeros(1, 1, FRAMES * TOKENS, FRAMES * TOKENS)
    for f in range(FRAMES):  # every token of frame f looks at token 0 of frame f - 1 (frame 0: itself)
        pattern[0, 0, f * TOKENS:(f + 1) * TOKENS, max(f - 1, 0) * TOKENS] = 1.0
    frames = frame_attention(pattern, FRAMES)[0, 0]
    expected = torch.zeros(FRAMES, FRAMES)
    for f in range(FRAMES):
        expected[f, max(f - 1, 0)] = 1.0
    assert torch.equal(frames, expected)


def test_an_image_dit_has_the_same_hook_points_and_its_hooks_are_inert_too():
    torch.manual_seed(0)
    model = make_dit("tiny", hidden_dim=32, depth=1, num_heads=2)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.1)
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    out, cache = run_with_cache(model, x, t)
    assert torch.allclose(out, model(x, t), atol=1e-5) and cache["gate_mlp", 0].shape == (2, 32)


# ------------------------------------------------------------------------------------ trajectories


class GaussianVideo:
    """The exact denoiser of video latents drawn from N(m, s²) elementwise, as a v-prediction model."""

    def __init__(self, schedule, mean=0.3, std=0.5):
        self.schedule, self.mean, self.var = schedule, mean, std**2

    def __call__(self, x_t, t):
        a = self.schedule.alpha_bar(t).view(*t.shape, 1, 1, 1).to(x_t.dtype)  # (B, F, 1, 1, 1)
        x0 = self.mean + a.sqrt() * self.var / (a * self.var + 1 - a) * (x_t - a.sqrt() * self.mean)
        epsilon = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * epsilon - (1 - a).sqrt() * x0  # v


def test_inversion_then_sampling_returns_the_latents_closer_with_more_steps():
    schedule = make_schedule("linear", 1000)
    oracle = GaussianVideo(schedule)
    latents = 0.3 + 0.5 * torch.randn(3, FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    errors = []
    for steps in (5, 20, 200):
        noise = invert_video(oracle, latents, schedule, num_steps=steps, prediction_type="v").end
        back = sample_video(oracle, noise, schedule, num_steps=steps, prediction_type="v").end
        errors.append(float((back - latents).pow(2).mean().sqrt()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.03 and errors[0] > 3 * errors[2]


def test_inversion_caches_chosen_sites_at_chosen_levels_and_hooks_act_at_every_step():
    model, (x, _) = random_model(), inputs()
    schedule = make_schedule("linear", 1000)
    trajectory = invert_video(model, x, schedule, num_steps=4, names=["resid_post"], layers=[1],
                              select=pool_tokens, levels=[0, 499], keep_states=True)
    assert trajectory.levels == [0, 249, 499, 749]
    assert sorted(trajectory.caches) == [0, 499]
    assert list(trajectory.caches[499]) == ["blocks.1.hook_resid_post"]
    assert trajectory.caches[499]["resid_post", 1].shape == (2, 48)
    assert torch.equal(trajectory.states[0], x)
    # The cached activation is the model's on the state it saw, at that level, for every frame.
    _, cache = run_with_cache(model, trajectory.states[2], torch.full((2, FRAMES), 499), names=["resid_post"])
    assert torch.allclose(trajectory.caches[499]["resid_post", 1], cache["resid_post", 1].mean(1), atol=1e-6)
    calls = []
    with hooks(model, [("blocks.0.hook_resid_post", lambda activation, hook: calls.append(1))]):
        invert_video(model, x, schedule, num_steps=4)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="num_steps"):
        invert_video(model, x, schedule, num_steps=0)
    with pytest.raises(ValueError, match=r"\(B, F, C, H, W\)"):
        invert_video(model, x[0], schedule)


def test_a_held_history_is_shown_clean_at_every_step_and_stays_clean_in_the_end():
    model, (x, _) = random_model(), inputs()
    schedule = make_schedule("linear", 1000)
    for run in (invert_video, sample_video):
        seen, states = [], []

        def recorder(x_t, t):  # the model, keeping a copy of what it is shown
            seen.append((x_t.clone(), t.clone()))
            return model(x_t, t)

        extra = {"callback": states.append} if run is sample_video else {}
        end = run(recorder, x, schedule, num_steps=4, prediction_type="v", history_frames=2, **extra).end
        assert len({int(t[0, -1]) for _, t in seen}) == 4  # four levels visited
        for shown, t in seen:
            assert torch.equal(shown[:, :2], x[:, :2])  # the history, as given, at every step
            assert (t[:, :2] == 0).all() and (t[:, 2:] == t[0, -1]).all()  # the rest at the step's level
        assert torch.equal(end[:, :2], x[:, :2]) and not torch.allclose(end[:, 2:], x[:, 2:])
        if run is sample_video:
            assert all(torch.equal(state.x[:, :2], x[:, :2]) and torch.equal(state.pred_x0[:, :2], x[:, :2])
                       for state in states)
    # The frames after the history travel a trajectory that depends on it: held clean, the history
    # moves the later frames' noise differently than when it is inverted along with them.
    free = invert_video(model, x, schedule, num_steps=4, prediction_type="v").end
    held = invert_video(model, x, schedule, num_steps=4, prediction_type="v", history_frames=2).end
    assert not torch.allclose(free[:, 2:], held[:, 2:], atol=1e-3)
    assert torch.equal(invert_video(model, x, schedule, num_steps=4, history_frames=0).end,
                       invert_video(model, x, schedule, num_steps=4).end)


def test_with_a_held_history_sampling_continues_the_inverted_frames_back_to_the_clip():
    schedule = make_schedule("linear", 1000)
    oracle = GaussianVideo(schedule)
    latents = 0.3 + 0.5 * torch.randn(3, FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = invert_video(oracle, latents, schedule, num_steps=200, prediction_type="v", history_frames=1).end
    back = sample_video(oracle, noise, schedule, num_steps=200, prediction_type="v", history_frames=1).end
    assert torch.equal(back[:, :1], latents[:, :1])
    assert float((back - latents).pow(2).mean().sqrt()) < 0.03


@pytest.mark.parametrize("history_frames", [-1, FRAMES, 1.5, True])
def test_a_history_that_leaves_no_frame_to_invert_is_refused(history_frames):
    model, (x, _) = random_model(), inputs()
    with pytest.raises(ValueError, match=r"history_frames must be an integer in 0\.\.3"):
        invert_video(model, x, make_schedule("linear", 1000), num_steps=2, history_frames=history_frames)


# ------------------------------------------------------------------------------------- ablations


def test_skipping_a_block_makes_it_the_identity():
    model, (x, t) = random_model(), inputs()
    with hooks(model, skip_block(model, 1)):
        _, cache = run_with_cache(model, x, t, names=["resid_pre", "resid_post"], layers=[1])
    assert torch.equal(cache["resid_pre", 1], cache["resid_post", 1])
    with pytest.raises(ValueError, match="block index in 0..1"):
        skip_block(model, 2)


def test_noise_injection_has_the_requested_size_and_alpha_zero_changes_nothing():
    model, (x, t) = random_model(), inputs(batch=8)
    _, clean = run_with_cache(model, x, t, names=["resid_post"], layers=[0])
    h = clean["resid_post", 0]
    seen = {}
    with hooks(model, noise_injection(model, 0, alpha=0.5) + [
            ("blocks.1.hook_resid_pre", lambda activation, hook: seen.setdefault("h", activation))]):
        model(x, t)
    added = seen["h"] - h  # (B, T, D) = 0.5 · std(h) · ε
    ratio = added.flatten(1).std(1) / h.flatten(1).std(1)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.5), atol=0.03)
    with hooks(model, noise_injection(model, 0, alpha=0.0)):
        assert torch.equal(model(x, t), model.forward(x, t))


def test_mean_modulation_and_a_fixed_level_remove_what_tells_frames_apart():
    model, (x, _) = random_model(), inputs()
    clean_history = torch.tensor([[0, 0, 999, 999]] * 2)
    reference = model(x, clean_history)
    with hooks(model, fixed_noise_level(model, 999)):
        fixed = model(x, clean_history)
    assert torch.allclose(fixed, model(x, torch.full((2, FRAMES), 999)), atol=1e-6)
    # A scene-labelled model keeps each video's label: only the noise level's part of c is fixed.
    labelled, labels = random_model(num_classes=5), torch.tensor([1, 3])
    with hooks(labelled, fixed_noise_level(labelled, 999)):
        fixed = labelled(x, clean_history, labels)
    all_noised = torch.full((2, FRAMES), 999)
    assert torch.allclose(fixed, labelled(x, all_noised, labels), atol=1e-6)
    assert not torch.allclose(fixed, labelled(x, all_noised), atol=1e-3)  # the null label instead
    with hooks(model, modulation_mean(model)):
        mean = model(x, clean_history)
        _, cache = run_with_cache(model, x, clean_history, names=["gate_attn"], layers=[0])
    assert not torch.allclose(mean, reference, atol=1e-4)
    gates = cache["gate_attn", 0]  # (B, F, D): every frame's gate the same
    assert torch.allclose(gates, gates[:, :1].expand_as(gates))
