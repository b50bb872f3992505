"""Tests of imagediff/dit.py: patches and positions (pitfall 10), adaLN-Zero at init and how gradients
reach the zeroed layers (pitfall 9), use of t and labels (pitfall 14), the two attention paths,
per-token conditioning, training on a few latents, guidance (pitfall 8), sizes and FLOPs, errors.
Pitfall numbers are those of docs/pitfalls.md."""

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from imagediff.dit import (
    DIT_SIZES,
    AngleEmbedder,
    DiT,
    DiTBlock,
    DiTConfig,
    dit_config,
    factored_label_parts,
    make_dit,
    matmul_parameter_counts,
    modulate,
    patchify,
    sincos_position_embedding_2d,
    stored_dit_fields,
    training_flops,
    unpatchify,
)
from toydiff.guidance import classifier_free_guidance, combine_guidance
from toydiff.losses import DiffusionObjective
from toydiff.models import count_parameters
from toydiff.schedules import make_schedule

# Smaller than "tiny": the tests check behaviour, not quality. 8x8x4 latents, 16 tokens.
SMALL = dict(hidden_dim=32, depth=2, num_heads=4, time_embedding_dim=32)
NUM_CLASSES = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def small_dit(num_classes: int = NUM_CLASSES, seed: int = 0, **overrides) -> DiT:
    torch.manual_seed(seed)
    return DiT(DiTConfig(**{**SMALL, "num_classes": num_classes, **overrides}))


def perturbed(model: DiT, std: float = 0.05, seed: int = 1) -> DiT:
    """The model with every parameter moved by noise: no zero layer left, every path active."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * std)
    return model


def inputs(batch: int = 3, config: DiTConfig | None = None, seed: int = 0):
    config = config or DiTConfig(**SMALL)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, config.height, config.width, generator=generator)
    t = torch.randint(0, 1000, (batch,), generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator)
    return x, t, labels


def train(model: DiT, latents: torch.Tensor, labels: torch.Tensor | None, steps: int, lr: float = 1e-3,
          seed: int = 0) -> list[float]:
    """A plain Adam loop on toydiff's objective; returns the loss of every step."""
    objective = DiffusionObjective(make_schedule("cosine", 1000))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    batch = (latents,) if labels is None else (latents, labels)
    losses = []
    model.train()
    for _ in range(steps):
        loss, _ = objective(model, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# ---------------------------------------------------------------------------------------------
#                                  Patches and positions
# ---------------------------------------------------------------------------------------------


SHAPES = [(2, 4, 8, 8), (2, 3, 8, 12), (1, 4, 12, 4), (3, 1, 6, 18)]


@pytest.mark.parametrize(
    "shape, patch_size",
    [(shape, p) for shape in SHAPES for p in (1, 2, 3, 4) if shape[2] % p == 0 and shape[3] % p == 0],
)
def test_unpatchify_inverts_patchify_also_for_non_square_inputs(shape, patch_size):
    batch, channels, height, width = shape
    x = torch.randn(shape)
    tokens = patchify(x, patch_size)
    assert tokens.shape == (batch, (height // patch_size) * (width // patch_size), patch_size**2 * channels)
    assert torch.equal(unpatchify(tokens, patch_size, height, width, channels), x)
    # And the other way round: every token layout comes from exactly one image.
    tokens = torch.randn_like(tokens)
    assert torch.equal(patchify(unpatchify(tokens, patch_size, height, width, channels), patch_size), tokens)


def test_patchify_orders_tokens_row_by_row_with_each_patch_intact():
    # Image whose value says where it is: token k must be the k-th patch in row-major order.
    height, width, p = 4, 6, 2
    x = torch.arange(height * width, dtype=torch.float32).view(1, 1, height, width)
    tokens = patchify(x, p)  # (1, 6, 4)
    assert torch.equal(tokens[0, 0], torch.tensor([0.0, 1.0, 6.0, 7.0]))  # top-left patch
    assert torch.equal(tokens[0, 1], torch.tensor([2.0, 3.0, 8.0, 9.0]))  # its right neighbour
    assert torch.equal(tokens[0, 3], torch.tensor([12.0, 13.0, 18.0, 19.0]))  # first patch of row 2


@pytest.mark.parametrize("height, width", [(7, 8), (8, 7), (9, 9)])
def test_patchify_refuses_sizes_not_divisible_by_the_patch(height, width):
    with pytest.raises(ValueError, match="divisible by patch_size=2"):
        patchify(torch.zeros(1, 4, height, width), 2)
    with pytest.raises(ValueError, match="divisible by patch_size=2"):
        unpatchify(torch.zeros(1, 16, 16), 2, height, width, 4)


def test_unpatchify_refuses_tokens_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"\(B, 16, 16\).*got \(1, 12, 16\)"):
        unpatchify(torch.zeros(1, 12, 16), 2, 8, 8, 4)


def test_sincos_positions_have_the_grid_shape_and_are_all_distinct():
    for height, width in [(4, 4), (3, 5), (5, 3), (1, 7)]:
        table = sincos_position_embedding_2d(height, width, 32)
        assert table.shape == (height * width, 32) and table.dtype == torch.float32
        distances = torch.cdist(table, table) + torch.eye(height * width) * 1e9
        assert distances.min() > 0.1, f"two positions of the {height}x{width} grid share an embedding"
    # Row index in the first half, column index in the second: transposing the grid swaps halves.
    wide, tall = sincos_position_embedding_2d(2, 3, 16), sincos_position_embedding_2d(3, 2, 16)
    assert torch.allclose(wide.view(2, 3, 16)[1, 2, :8], tall.view(3, 2, 16)[2, 1, 8:])
    assert not torch.allclose(wide, tall)


def test_model_position_table_matches_the_actual_non_square_grid():
    model = small_dit(input_size=(4, 12))
    assert model.position_embedding.shape == (1, 2 * 6, 32)
    assert torch.equal(model.position_embedding[0], sincos_position_embedding_2d(2, 6, 32))
    assert "position_embedding" not in model.state_dict()  # derived from the config, never saved
    x = torch.randn(2, 4, 4, 12)
    assert perturbed(model)(x, torch.tensor([1, 2])).shape == x.shape


# ---------------------------------------------------------------------------------------------
#                                   adaLN-Zero (pitfall 9)
# ---------------------------------------------------------------------------------------------


def test_modulate_is_affine_with_one_plus_scale():
    x, shift, scale = torch.randn(2, 5, 8), torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    assert torch.equal(modulate(x, torch.zeros_like(shift), torch.zeros_like(scale)), x)
    assert torch.allclose(modulate(x, shift, scale), x + x * scale + shift)


def test_at_init_the_model_outputs_zeros_and_every_block_is_the_identity():
    model = small_dit()
    x, t, labels = inputs()
    assert torch.equal(model(x, t, labels), torch.zeros_like(x))
    assert torch.equal(model(x, t), torch.zeros_like(x))
    tokens = torch.randn(3, 16, 32)
    for block in model.blocks:
        assert torch.equal(block(tokens, torch.randn(3, 32)), tokens)
        assert torch.equal(block(tokens, torch.randn(3, 16, 32)), tokens)  # per-token condition too


def test_gradients_reach_the_zero_initialised_layers():
    model = small_dit()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, t, labels = inputs()
    target = torch.randn_like(x)

    def backward():
        optimizer.zero_grad()
        ((model(x, t, labels) - target) ** 2).mean().backward()
        return {name: p.grad for name, p in model.named_parameters()}

    # Backward 1: every parameter is in the graph (a gradient, not None), but only the final Linear's
    # gradient, (output error) ⊗ (features), is non-zero: everything else sits behind a zero matrix.
    grads = backward()
    assert all(g is not None for g in grads.values())
    assert grads["final_layer.linear.weight"].abs().sum() > 0
    assert grads["final_layer.linear.bias"].abs().sum() > 0
    assert grads["final_layer.adaln_modulation.1.weight"].abs().sum() == 0
    assert grads["blocks.0.adaln_modulation.1.weight"].abs().sum() == 0
    optimizer.step()

    # Backward 2: the final Linear is no longer zero, so the gates of every block and the final
    # modulation receive gradients.
    grads = backward()
    assert grads["final_layer.adaln_modulation.1.weight"].abs().sum() > 0
    for index in range(len(model.blocks)):
        assert grads[f"blocks.{index}.adaln_modulation.1.weight"].abs().sum() > 0
    optimizer.step()

    # Backward 3: every parameter learns.
    grads = backward()
    silent = [name for name, g in grads.items() if g.abs().sum() == 0]
    assert not silent, f"parameters without gradient after two steps: {silent}"


def test_after_a_few_steps_the_output_depends_on_t_and_on_the_label():
    model = small_dit()
    latents, _, labels = inputs(batch=4)
    # The condition reaches the output only through layers that start at zero and wake up one after
    # another (see the test above), so its influence grows like a product of small updates.
    train(model, latents, labels, steps=10, lr=3e-3)
    model.eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        early = model(x, torch.tensor([10, 10]), torch.tensor([0, 1]))
        late = model(x, torch.tensor([900, 900]), torch.tensor([0, 1]))
        other_label = model(x, torch.tensor([10, 10]), torch.tensor([2, 2]))
    # Float32 rounding is ~1e-8 here; the differences are orders of magnitude above it.
    assert (early - late).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # pitfall 14: the model uses t
    assert (early - other_label).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # ...and the label


def test_labels_none_means_the_null_label():
    model = perturbed(small_dit())
    x, t, _ = inputs()
    assert model.null_label == NUM_CLASSES
    assert model.label_embedding.num_embeddings == NUM_CLASSES + 1
    assert torch.equal(model(x, t), model(x, t, torch.full((3,), model.null_label)))
    assert small_dit(num_classes=0).null_label is None


# ---------------------------------------------------------------------------------------------
#                           Attention paths and per-token conditioning
# ---------------------------------------------------------------------------------------------


def test_explicit_attention_agrees_with_sdpa_and_keeps_a_normalised_pattern():
    model = perturbed(small_dit(), std=0.1)
    x, t, labels = inputs()
    fused = model(x, t, labels)
    assert all(pattern is None for pattern in model.attention_patterns())
    model.record_attention(True)
    explicit = model(x, t, labels)
    assert torch.allclose(fused, explicit, atol=1e-5)
    for pattern in model.attention_patterns():
        assert pattern.shape == (3, 4, 16, 16)  # (B, heads, N, N)
        assert torch.allclose(pattern.sum(-1), torch.ones(3, 4, 16), atol=1e-6)
    model.record_attention(False)
    assert torch.equal(model(x, t, labels), fused)


def test_self_attention_equals_pytorchs_multi_head_attention_with_the_same_weights():
    # An independent implementation: nn.MultiheadAttention packs the projection as [W_q; W_k; W_v] and
    # splits each into heads of contiguous columns, as DiT's (timm's) attention does. A qkv split in
    # another order, heads cut differently or a missing 1/sqrt(head_dim) would all differ from it.
    torch.manual_seed(0)
    attention = perturbed(small_dit(), std=0.1).blocks[0].attention
    reference = torch.nn.MultiheadAttention(32, num_heads=4, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(attention.qkv.weight)
        reference.in_proj_bias.copy_(attention.qkv.bias)
        reference.out_proj.weight.copy_(attention.projection.weight)
        reference.out_proj.bias.copy_(attention.projection.bias)
    tokens = torch.randn(3, 16, 32)
    expected, expected_pattern = reference(tokens, tokens, tokens, average_attn_weights=False)
    assert torch.allclose(attention(tokens), expected, atol=1e-5)
    attention.record_attention = True
    assert torch.allclose(attention(tokens), expected, atol=1e-5)
    assert torch.allclose(attention.attention_pattern, expected_pattern, atol=1e-6)  # (B, heads, N, N)


def test_short_sequences_on_a_cpu_take_sdpas_math_kernel_and_long_ones_pytorchs_own_choice(monkeypatch):
    import imagediff.dit as dit_module
    from torch.nn.attention import SDPBackend

    chosen = []
    real_choice = dit_module.sdpa_kernel
    monkeypatch.setattr(dit_module, "sdpa_kernel", lambda backend: chosen.append(backend) or real_choice(backend))
    torch.manual_seed(0)
    attention = perturbed(small_dit(), std=0.1).blocks[0].attention
    short, long = torch.randn(2, 16, 32), torch.randn(2, dit_module.SHORT_SEQUENCE + 1, 32)
    outputs = [attention(short)]
    assert chosen == [SDPBackend.MATH]
    outputs.append(attention(long))
    assert chosen == [SDPBackend.MATH]  # nothing chosen for the long one
    attention.record_attention = True  # the explicit softmax(QKᵀ/√d)V
    for tokens, output in zip((short, long), outputs):
        torch.testing.assert_close(attention(tokens), output, atol=1e-5, rtol=1e-5)


def test_the_mlp_activation_is_the_exact_gelu_and_a_config_stored_before_the_option_reads_back_the_tanh_one():
    assert DiTConfig().mlp_activation == "gelu"
    torch.manual_seed(0)
    exact = perturbed(small_dit(), std=0.1)
    tanh = small_dit(mlp_activation="gelu_tanh")
    tanh.load_state_dict(exact.state_dict())  # the same weights
    x = 3 * torch.randn(64, 32)
    mlp = exact.blocks[0].mlp
    torch.testing.assert_close(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x))))
    torch.testing.assert_close(tanh.blocks[0].mlp(x), mlp.fc2(F.gelu(mlp.fc1(x), approximate="tanh")))
    assert not torch.allclose(mlp(x), tanh.blocks[0].mlp(x), atol=1e-6)
    stored = asdict(DiTConfig(**SMALL))
    del stored["mlp_activation"]  # as a checkpoint written before the option holds it
    assert DiTConfig(**stored_dit_fields(stored)).mlp_activation == "gelu_tanh"
    assert DiTConfig(**stored_dit_fields(asdict(DiTConfig(**SMALL)))).mlp_activation == "gelu"
    with pytest.raises(ValueError, match="mlp_activation must be one of gelu, gelu_tanh, got 'relu'"):
        DiTConfig(mlp_activation="relu")


def test_per_token_condition_with_equal_tokens_equals_the_per_example_condition():
    model = perturbed(small_dit(), std=0.1)
    tokens, c = torch.randn(3, 16, 32), torch.randn(3, 32)
    per_token = c[:, None, :].expand(3, 16, 32)
    for block in model.blocks:
        assert torch.allclose(block(tokens, per_token), block(tokens, c), atol=1e-6)
    assert torch.allclose(model.final_layer(tokens, per_token), model.final_layer(tokens, c), atol=1e-6)
    # A condition that differs between tokens does change the block's output.
    varied = per_token + torch.randn(3, 16, 32)
    assert not torch.allclose(model.blocks[0](tokens, varied), model.blocks[0](tokens, c), atol=1e-3)


def test_per_group_condition_equals_the_per_token_condition_repeated_over_each_group():
    # The video layer passes one condition per frame, (B, G, D): group g must modulate exactly the
    # tokens g·N/G .. (g+1)·N/G - 1 (a repeat instead of a repeat_interleave would mix the frames).
    model = perturbed(small_dit(), std=0.1)
    tokens, per_group = torch.randn(3, 16, 32), torch.randn(3, 4, 32)
    per_token = per_group.repeat_interleave(4, dim=1)  # (3, 16, 32): tokens 0-3 get group 0, ...
    for block in model.blocks:
        assert torch.allclose(block(tokens, per_group), block(tokens, per_token), atol=1e-6)
    assert torch.allclose(model.final_layer(tokens, per_group), model.final_layer(tokens, per_token), atol=1e-6)
    assert not torch.allclose(model.blocks[0](tokens, per_group),
                              model.blocks[0](tokens, per_group.repeat(1, 4, 1)), atol=1e-3)
    with pytest.raises(ValueError, match=r"FinalLayer expected a condition .* G dividing the 16 tokens"):
        model.final_layer(tokens, torch.randn(3, 5, 32))


def test_embed_condition_accepts_one_timestep_per_frame():
    # The video layer's case: t (B, F); each example's label is added to all its frames.
    model = perturbed(small_dit())
    t = torch.tensor([[5, 500], [7, 7]])
    labels = torch.tensor([0, 2])
    c = model.embed_condition(t, labels)
    assert c.shape == (2, 2, 32)
    assert torch.allclose(c[:, 1], model.embed_condition(t[:, 1], labels))
    assert torch.allclose(c[1, 0], c[1, 1])


# ---------------------------------------------------------------------------------------------
#                                 Training and guidance
# ---------------------------------------------------------------------------------------------


def test_a_tiny_dit_overfits_a_few_latents():
    model = small_dit(num_classes=0, hidden_dim=64)
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    objective = DiffusionObjective(make_schedule("cosine", 1000))

    def held_out_loss():  # the same noises and timesteps every time, so the comparison is fair
        model.eval()
        generator = torch.Generator().manual_seed(123)
        with torch.no_grad():
            value = sum(objective(model, (latents,), generator)[0] for _ in range(8)) / 8
        model.train()
        return value.item()

    before = held_out_loss()
    losses = train(model, latents.repeat(4, 1, 1, 1), None, steps=150, lr=2e-3)
    after = held_out_loss()
    assert before == pytest.approx(1.0, abs=0.1)  # outputs zeros: the loss is E||ε||² per value
    assert after < 0.5 * before, f"loss went from {before:.3f} to {after:.3f}"
    assert sum(losses[-20:]) < 0.6 * sum(losses[:20])


def test_classifier_free_guidance_on_the_dit():
    model = perturbed(small_dit(), std=0.1)
    x, t, labels = inputs()
    conditional = model(x, t, labels)
    unconditional = model(x, t, None)
    # s = 1 is the conditional model bit for bit; s = 0 the unconditional one (pitfall 8).
    assert torch.equal(classifier_free_guidance(model, labels, 1.0, model.null_label)(x, t), conditional)
    assert torch.equal(classifier_free_guidance(model, labels, 0.0, model.null_label)(x, t), unconditional)
    # s = 3 runs both passes as one batch of 2B: examples must not influence each other.
    guided = classifier_free_guidance(model, labels, 3.0, model.null_label)(x, t)
    assert torch.allclose(guided, combine_guidance(unconditional, conditional, 3.0), atol=1e-5)


# ---------------------------------------------------------------------------------------------
#                                    Sizes and FLOPs
# ---------------------------------------------------------------------------------------------


# DiT paper, Table 1 / 4: parameters of DiT-S/B/L/XL at 256x256 (32x32x4 latents), 1000 classes.
PUBLISHED_MILLIONS = {"small": 33.0, "base": 130.0, "large": 458.0, "xlarge": 675.0}


@pytest.mark.parametrize("size", list(DIT_SIZES))
def test_every_registered_size_builds_and_its_parameters_are_accounted_for(size):
    # On the meta device: shapes only, no memory and no time even for DiT-XL.
    with torch.device("meta"):
        model = make_dit(size, num_classes=1000, input_size=32)
    config = model.config
    total = count_parameters(model)
    biases = sum(p.numel() for name, p in model.named_parameters() if name.endswith("bias"))
    table = model.label_embedding.weight.numel()
    counts = matmul_parameter_counts(config)
    assert total - biases - table == counts["per_token"] + counts["per_example"]
    if size in PUBLISHED_MILLIONS:
        # Ours lacks learn_sigma's doubled output; the rest is DiT's architecture.
        assert total / 1e6 == pytest.approx(PUBLISHED_MILLIONS[size], rel=0.01)
    assert dit_config(size) == DIT_SIZES[size]


# Configurations that move each term of the formula on its own: the token count N (non-square
# grids, patch sizes 1 and 4), the width D, the MLP ratio, the time-feature width and the depth.
FLOP_CASES = [
    dict(SMALL, num_classes=NUM_CLASSES),
    dict(input_size=(4, 12), in_channels=3, patch_size=1, hidden_dim=48, depth=3, num_heads=3, mlp_ratio=2.0,
         time_embedding_dim=16, num_classes=0),
    dict(input_size=(8, 16), patch_size=4, hidden_dim=64, depth=1, num_heads=2, mlp_ratio=3.0,
         time_embedding_dim=96, num_classes=5),
]


@pytest.mark.parametrize("case", FLOP_CASES, ids=["small", "patch1-nonsquare", "patch4-wide"])
@pytest.mark.parametrize("batch", [1, 3])
def test_training_flops_match_a_count_of_the_actual_matrix_products(case, batch):
    # PyTorch's FlopCounterMode counts the products the model really runs, forward and backward; the
    # library's formula must agree exactly, whatever the shape.
    config = DiTConfig(**case)
    torch.manual_seed(0)
    model = DiT(config)
    model.record_attention(True)  # PyTorch's FLOP counter sees the explicit matmuls, not CPU SDPA
    height, width = config.input_size
    x = torch.randn(batch, config.in_channels, height, width, requires_grad=True)  # so the patch
    # embedding also computes its input gradient, as 6·P·N assumes
    t = torch.randint(0, 1000, (batch,))
    labels = torch.randint(0, config.num_classes, (batch,)) if config.num_classes else None
    with FlopCounterMode(display=False) as counter:
        model(x, t, labels).square().sum().backward()
    # The only product without an input gradient: the time MLP's first Linear reads fixed sinusoids,
    # so its backward pass skips 2 · B · time_embedding_dim · D of the 4 · B · time_embedding_dim · D.
    expected = training_flops(config, batch) - 2 * batch * config.time_embedding_dim * config.hidden_dim
    assert counter.get_total_flops() == expected


# ---------------------------------------------------------------------------------------------
#                                   Errors the user sees
# ---------------------------------------------------------------------------------------------


def test_bad_inputs_give_errors_naming_expected_and_got():
    model = small_dit()
    x, t, labels = inputs()
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\), got \(3, 3, 8, 8\)"):
        model(torch.zeros(3, 3, 8, 8), t)
    with pytest.raises(ValueError, match=r"\(B, 4, 8, 8\), got \(3, 4, 16, 16\).*input_size"):
        model(torch.zeros(3, 4, 16, 16), t)
    with pytest.raises(ValueError, match=r"int64 tensor of shape \(3,\), got a torch.float32"):
        model(x, t.float())
    with pytest.raises(ValueError, match=r"got a torch.int64 tensor of shape \(3, 1\)"):
        model(x, t[:, None])
    with pytest.raises(ValueError, match="labels"):
        model(x, t, labels.float())
    with pytest.raises(ValueError, match="unconditional"):
        small_dit(num_classes=0)(x, t, labels)
    with pytest.raises(ValueError, match=r"DiTBlock expected a condition of shape \(3, 32\) or \(3, G, 32\) with G dividing the 16 tokens"):
        model.blocks[0](torch.zeros(3, 16, 32), torch.zeros(3, 5, 32))


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="not divisible by patch_size=3"):
        DiTConfig(input_size=(8, 9), patch_size=3)
    with pytest.raises(ValueError, match="num_heads"):
        DiTConfig(hidden_dim=36, num_heads=8)
    with pytest.raises(ValueError, match="Unknown DiT size 'huge'"):
        make_dit("huge")
    assert DiTConfig(input_size=[4, 6]).input_size == (4, 6)  # as read back from a checkpoint
    assert DiTConfig(input_size=8).grid_size == (4, 4)


# ---------------------------------------------------------------------------------------------
#                                     Self-conditioning
# ---------------------------------------------------------------------------------------------


def randomised(model: DiT, seed: int = 1) -> DiT:
    """Every weight drawn at random, so that no zero-initialised layer hides an input."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.2)
    return model.eval()


def test_a_self_conditioned_dit_reads_its_previous_estimate_and_none_means_zeros():
    model = randomised(small_dit(self_condition=True))
    assert model.patch_embedding.in_features == 2 * 2 * 2 * 4  # x_t's patch and the estimate's patch
    x, t, labels = torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 990]), torch.tensor([0, 1, 2])
    estimate = torch.randn(3, 4, 8, 8)
    plain = model(x, t, labels)
    assert torch.equal(plain, model(x, t, labels, previous_x0=torch.zeros_like(x)))
    informed = model(x, t, labels, previous_x0=estimate)
    assert not torch.allclose(plain, informed, atol=1e-3)
    # Each example reads its own estimate: changing the third changes only the third output.
    changed = estimate.clone()
    changed[2] += 1.0
    moved = model(x, t, labels, previous_x0=changed)
    assert torch.equal(moved[:2], informed[:2]) and not torch.allclose(moved[2], informed[2], atol=1e-3)


def test_self_conditioning_errors_name_the_mismatch():
    with pytest.raises(ValueError, match="built without self-conditioning"):
        small_dit()(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), previous_x0=torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"x_t's shape \(2, 4, 8, 8\), got \(2, 4, 4, 4\)"):
        small_dit(self_condition=True)(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]),
                                       previous_x0=torch.randn(2, 4, 4, 4))


def test_the_flop_count_includes_the_wider_patch_embedding():
    plain, conditioned = dit_config("tiny"), dit_config("tiny", self_condition=True)
    difference = matmul_parameter_counts(conditioned)["per_token"] - matmul_parameter_counts(plain)["per_token"]
    assert difference == plain.patch_dim * plain.hidden_dim
    assert count_parameters(DiT(conditioned)) - count_parameters(DiT(plain)) == difference


@pytest.mark.parametrize("angle_bins", [0, 64])  # harmonics and an MLP, or a table of bins
def test_an_angle_conditioned_dit_reads_the_angle_periodically_and_refuses_what_it_cannot_read(angle_bins):
    model = perturbed(DiT(DiTConfig(input_size=4, hidden_dim=32, depth=1, num_heads=2, num_classes=3,
                                    angle_conditioning=True, angle_bins=angle_bins)))
    x, t, labels = torch.randn(2, 4, 4, 4), torch.tensor([10, 500]), torch.tensor([0, 2])
    angles = torch.tensor([0.3, 2.0])
    out = model(x, t, labels, angles=angles)
    assert torch.allclose(model(x, t, labels, angles=angles + 2 * math.pi), out, atol=1e-4)
    assert not torch.allclose(model(x, t, labels, angles=angles + 0.5), out, atol=1e-3)
    # Each example reads its own angle: changing the second leaves the first alone.
    moved = model(x, t, labels, angles=torch.tensor([0.3, 3.0]))
    assert torch.equal(moved[0], out[0]) and not torch.allclose(moved[1], out[1], atol=1e-3)
    with pytest.raises(ValueError, match=r"this DiT is angle-conditioned: pass angles, a float tensor \(2,\)"):
        model(x, t, labels)
    with pytest.raises(ValueError, match=r"expected angles as a float tensor of shape \(2,\) in radians"):
        model(x, t, labels, angles=torch.tensor([1, 2]))
    plain = DiT(DiTConfig(input_size=4, hidden_dim=32, depth=1, num_heads=2, num_classes=3))
    with pytest.raises(ValueError, match="built without angle conditioning"):
        plain(x, t, labels, angles=angles)


def test_turned_positions_are_the_grid_seen_from_the_frame_of_the_angle():
    model = DiT(DiTConfig(input_size=(8, 8), patch_size=2, hidden_dim=32, depth=1, num_heads=2, num_classes=3,
                          angle_conditioning=True, angle_positions=True))
    table = model.position_embedding[0]  # (16, D), rows of a 4 x 4 grid in row-major order
    turned = model.turned_positions(torch.tensor([0.0, math.pi / 2]))  # (2, 16, D)
    assert torch.allclose(turned[0], table, atol=1e-6)
    # A quarter turn counter-clockwise: the token at (row r, column c) reads the position (row c', column r')
    # it would have in a frame turned by -90°, i.e. the grid's top-left corner reads as its top-right one.
    nearest = torch.cdist(turned[1], table).argmin(dim=1)  # (16,) which grid position each token reads
    assert sorted(nearest.tolist()) == list(range(16))  # a permutation of the grid
    assert nearest[0].item() == 3 and nearest[3].item() == 15 and nearest[15].item() == 12
    with pytest.raises(ValueError, match="angle_positions needs angle_conditioning=True"):
        DiTConfig(angle_positions=True)


def test_factored_labels_share_one_vector_per_word_of_the_class_name():
    names = ["red circle", "blue circle", "red square", "blue square"]
    parts = factored_label_parts(names)
    assert parts == [[0, 0], [1, 0], [0, 1], [1, 1]]
    model = DiT(DiTConfig(input_size=4, hidden_dim=32, depth=1, num_heads=2, num_classes=4, label_parts=parts))
    t = torch.zeros(5, dtype=torch.int64)
    c = model.embed_condition(t, torch.tensor([0, 1, 2, 3, 4])) - model.embed_condition(t[:1], None)[0]  # emb(label) - emb(null)
    # emb(red square) - emb(blue square) = emb(red circle) - emb(blue circle): "red" minus "blue", whatever the shape.
    assert torch.allclose(c[2] - c[3], c[0] - c[1], atol=1e-6)
    assert not torch.allclose(c[2], c[0], atol=1e-3) and not torch.allclose(c[4], c[0], atol=1e-3)
    assert model.label_part_embedding.num_embeddings == 2 + 2 + 1 and model.label_embedding is None
    with pytest.raises(ValueError, match="the same number of words"):
        factored_label_parts(["red circle", "square"])
    with pytest.raises(ValueError, match="label_parts must give each of the 3 classes"):
        DiTConfig(num_classes=3, label_parts=parts)


def test_angle_bins_are_centred_on_the_angles_of_data_with_n_orientations():
    embedder = AngleEmbedder(8, num_bins=16)
    exact = torch.arange(16) * (2 * math.pi / 16)  # the angles of make_shapes(num_angles=16)
    for nudge in (-1e-4, 0.0, 1e-4, 2 * math.pi):  # float rounding either side of k·2π/n, or a turn later
        assert torch.equal(embedder(exact + nudge), embedder.table.weight)


def test_a_condition_token_carries_the_label_through_attention_when_adaln_cannot():
    def without_modulation(model):  # every adaLN Linear's weight zeroed: constant gates, shifts and scales
        with torch.no_grad():      # (its bias), so c can reach the patches only as a token
            for module in model.modules():
                if hasattr(module, "adaln_modulation"):
                    module.adaln_modulation[-1].weight.zero_()
        return model

    x, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 10])
    outputs = {}
    for token in (False, True):
        torch.manual_seed(0)
        model = without_modulation(perturbed(DiT(DiTConfig(input_size=4, hidden_dim=32, depth=2, num_heads=2,
                                                           num_classes=3, condition_token=token))))
        outputs[token] = (model(x, t, torch.tensor([0, 0])), model(x, t, torch.tensor([1, 1])))
        assert outputs[token][0].shape == x.shape
    assert torch.equal(*outputs[False])  # adaLN silenced: the label has no way in
    assert not torch.allclose(*outputs[True], atol=1e-4)  # the token lets it in
