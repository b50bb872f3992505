"""Pitfall 8 of docs/pitfalls.md: classifier-free guidance on every channel, s = 1 exact,
label dropout only in training."""
import pytest
import torch

from toydiff.guidance import (autoguided, classifier_free_guidance, classifier_guidance, combine_guidance, drop_labels,
                              guided_denoiser, guided_score, rescale_guidance, with_inputs)
from toydiff.losses import DiffusionObjective
from toydiff.models import MLPConfig, MLPDenoiser
from toydiff.parameterisation import score_from_epsilon
from toydiff.schedules import make_schedule


def labelled_model():
    return MLPDenoiser(MLPConfig(data_dim=3, hidden_dim=32, num_blocks=2, num_classes=4)).eval()


def test_scale_one_is_the_conditional_model_bit_for_bit():
    model = labelled_model()
    x, t, labels = torch.randn(16, 3), torch.randint(0, 1000, (16,)), torch.randint(0, 4, (16,))
    guided = classifier_free_guidance(model, labels, 1.0, model.null_label)
    assert torch.equal(guided(x, t), model(x, t, labels))
    unconditional = classifier_free_guidance(model, labels, 0.0, model.null_label)
    assert torch.equal(unconditional(x, t), model(x, t, torch.full_like(labels, 4)))


@pytest.mark.parametrize("scale", [0.0, 0.5, 2.0, 7.5])
def test_guidance_is_the_formula_on_every_channel(scale):
    model = labelled_model()
    x, t, labels = torch.randn(16, 3), torch.randint(0, 1000, (16,)), torch.randint(0, 4, (16,))
    cond, uncond = model(x, t, labels), model(x, t, torch.full_like(labels, 4))
    # Not vacuous: in every channel the label moves the output far more than the tolerance below.
    assert (cond - uncond).abs().amax(dim=0).min() > 1e-3
    guided = classifier_free_guidance(model, labels, scale, model.null_label)(x, t)
    # Every one of the 3 output channels follows uncond + s (cond - uncond).
    torch.testing.assert_close(guided, uncond + scale * (cond - uncond), rtol=1e-5, atol=1e-5)
    assert guided.shape == (16, 3)


def test_combine_guidance_exact_at_scale_one_even_with_huge_values():
    cond, uncond = torch.tensor([1e30, -3.0, 0.1]), torch.tensor([-1e30, 7.0, 0.2])
    assert torch.equal(combine_guidance(uncond, cond, 1.0), cond)


def test_label_dropout_happens_only_in_training_mode():
    schedule = make_schedule("linear")
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, labels):
            seen.append(labels.clone())
            return torch.zeros_like(x)

    objective = DiffusionObjective(schedule, label_dropout=0.5, null_label=9)
    spy, labels = Spy(), torch.zeros(4000, dtype=torch.int64)
    batch = (torch.randn(4000, 2), labels)
    spy.train()
    objective(spy, batch, torch.Generator().manual_seed(0))
    dropped = (seen[-1] == 9).float().mean().item()
    assert 0.45 < dropped < 0.55
    spy.eval()
    objective(spy, batch, torch.Generator().manual_seed(0))
    assert torch.equal(seen[-1], labels)


def test_drop_labels_uses_the_reserved_null_label():
    labels = torch.arange(10).repeat(100)
    dropped = drop_labels(labels, 1.0 - 1e-9, null_label=10, generator=torch.Generator().manual_seed(0))
    assert (dropped == 10).all()
    assert torch.equal(drop_labels(labels, 0.0, null_label=10), labels)


def test_classifier_guidance_adds_the_scaled_classifier_gradient_to_the_score():
    schedule = make_schedule("cosine")
    target = torch.tensor([2.0, -1.0])

    def model(x, t):  # any ε-model
        return 0.1 * x

    def classifier(x, t):  # log p(y=0|x) = -|x - target|²/2 + const  => ∇ = target - x
        logit0 = -((x - target) ** 2).sum(-1) / 2
        return torch.stack([logit0, torch.zeros_like(logit0)], dim=-1)

    x, t = torch.randn(8, 2, dtype=torch.float64), torch.full((8,), 400)
    labels = torch.zeros(8, dtype=torch.int64)
    scale = 3.0
    guided = classifier_guidance(model, classifier, labels, scale, schedule)
    score = score_from_epsilon(schedule, guided(x, t), t)
    expected_gradient = torch.autograd.functional.jacobian(
        lambda z: torch.log_softmax(classifier(z, t), -1)[:, 0].sum(), x)
    expected = score_from_epsilon(schedule, model(x, t), t) + scale * expected_gradient
    torch.testing.assert_close(score, expected)
    # Same guidance expressed for a v-model gives the same score.
    v_model = lambda z, tt: torch.zeros_like(z)  # noqa: E731
    v_guided = classifier_guidance(v_model, classifier, labels, scale, schedule, prediction_type="v")
    base = guided_score(v_model, schedule, "v")(x, t)
    torch.testing.assert_close(guided_score(v_guided, schedule, "v")(x, t), base + scale * expected_gradient)


def test_guidance_rescale_matches_the_conditional_std_and_blends():
    cond = torch.randn(4, 3, 8, 8)
    # A guided prediction whose spread is inflated by a different factor per example: a rescale that
    # took one std over the whole batch would fail the per-example check below.
    guided = cond * torch.arange(1.0, 5.0).view(4, 1, 1, 1) * 1.5 + 0.5
    assert torch.equal(rescale_guidance(guided, cond, 0.0), guided)
    full = rescale_guidance(guided, cond, 1.0)
    # φ = 1: each example's std over all its channels and positions equals the conditional one.
    torch.testing.assert_close(full.std(dim=(1, 2, 3)), cond.std(dim=(1, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rescale_guidance(guided, cond, 0.3), 0.3 * full + 0.7 * guided)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rescale_guidance(guided, cond, 1.5)


def test_rescaled_guidance_keeps_scale_one_exact():
    model = labelled_model()
    x, t, labels = torch.randn(16, 3), torch.randint(0, 1000, (16,)), torch.randint(0, 4, (16,))
    guided = classifier_free_guidance(model, labels, 1.0, model.null_label, rescale=0.7)
    assert torch.equal(guided(x, t), model(x, t, labels))


def test_guided_denoiser_picks_the_guidance_asked_for():
    model = labelled_model()
    schedule = make_schedule("linear")
    x, t, labels = torch.randn(8, 3), torch.randint(0, 1000, (8,)), torch.randint(0, 4, (8,))
    unconditional = guided_denoiser(model, None, null_label=model.null_label)
    assert torch.equal(unconditional(x, t), model(x, t, None))
    cfg = guided_denoiser(model, labels, null_label=model.null_label, guidance_scale=2.0)
    torch.testing.assert_close(cfg(x, t), classifier_free_guidance(model, labels, 2.0, model.null_label)(x, t))
    with pytest.raises(ValueError, match="needs a label"):
        guided_denoiser(model, None, null_label=4, classifier=lambda x, t: x)
    with pytest.raises(ValueError, match="without labels"):
        guided_denoiser(model, labels, null_label=None)
    with pytest.raises(ValueError, match="schedule"):
        guided_denoiser(model, labels, null_label=4, classifier=lambda x, t: x)
    with pytest.raises(ValueError, match="rescale"):
        guided_denoiser(model, labels, null_label=4, classifier=lambda x, t: x, schedule=schedule, rescale=0.5)
    # Classifier guidance steers the *unconditional* (null-label) pass.
    classifier = MLPDenoiser(MLPConfig(data_dim=3, hidden_dim=16, num_blocks=1)).eval()
    classifier.output = torch.nn.Linear(16, 4)

    def logits(x_t, t):
        return classifier(x_t, t)[:, :3] @ torch.ones(3, 4) + x_t @ torch.arange(12.0).view(3, 4)

    steered = guided_denoiser(model, labels, null_label=4, guidance_scale=2.0, classifier=logits, schedule=schedule)
    expected = classifier_guidance(lambda x_t, t: model(x_t, t, None), logits, labels, 2.0, schedule)
    torch.testing.assert_close(steered(x, t), expected(x, t))
    assert not torch.allclose(steered(x, t), model(x, t, None))


# ---------------------------------------------------------------------------------------------
#                                        Autoguidance
# ---------------------------------------------------------------------------------------------


class Recorder:
    """A guide model that records that it was called."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __call__(self, x, t, labels):
        self.calls += 1
        return self.model(x, t, labels)


def test_autoguidance_is_the_weak_model_plus_w_times_the_difference():
    torch.manual_seed(0)
    model, weak = labelled_model(), Recorder(labelled_model())
    x, t, labels = torch.randn(16, 3), torch.randint(0, 1000, (16,)), torch.randint(0, 4, (16,))
    cond, poor = model(x, t, labels), weak.model(x, t, labels)
    alone = classifier_free_guidance(model, labels, 1.0, model.null_label, guide=weak, guide_scale=2.5)
    assert torch.allclose(alone(x, t), poor + 2.5 * (cond - poor), atol=1e-6)  # Karras et al.'s form
    uncond = model(x, t, torch.full_like(labels, model.null_label))
    both = classifier_free_guidance(model, labels, 3.0, model.null_label, guide=weak, guide_scale=2.0)
    assert torch.allclose(both(x, t), uncond + 3.0 * (cond - uncond) + (cond - poor), atol=1e-6)


def test_an_autoguidance_scale_of_one_never_calls_the_guide():
    model, weak = labelled_model(), Recorder(labelled_model())
    x, t, labels = torch.randn(8, 3), torch.randint(0, 1000, (8,)), torch.randint(0, 4, (8,))
    for scale in (0.0, 1.0, 3.0):
        plain = classifier_free_guidance(model, labels, scale, model.null_label)(x, t)
        with_guide = guided_denoiser(model, labels, null_label=model.null_label, guidance_scale=scale, guide=weak,
                                     guide_scale=1.0)(x, t)
        assert torch.equal(plain, with_guide)
    assert weak.calls == 0


def test_autoguidance_errors_name_what_is_missing():
    model = labelled_model()
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="autoguidance scale 2 asked for, but there is no guide model"):
        guided_denoiser(model, labels, null_label=model.null_label, guide_scale=2.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        guided_denoiser(model, labels, null_label=model.null_label, guide=model, guide_scale=-1.0)
    with pytest.raises(ValueError, match="unconditional pass takes none"):
        guided_denoiser(model, None, null_label=model.null_label, guide=model, guide_scale=2.0)
    with pytest.raises(ValueError, match="not to classifier guidance"):
        guided_denoiser(model, labels, null_label=model.null_label, classifier=lambda x, t: x, guide=model,
                        guide_scale=2.0, schedule=make_schedule("linear", 100))


def test_autoguidance_of_a_model_without_labels_is_the_same_closed_form():
    torch.manual_seed(0)
    model, weak = labelled_model(), labelled_model()
    x, t = torch.randn(16, 3), torch.randint(0, 1000, (16,))
    plain = lambda x_t, t_: model(x_t, t_, None)  # noqa: E731
    calls = []

    def guide(x_t, t_):
        calls.append(1)
        return weak(x_t, t_, None)

    cond, poor = plain(x, t), weak(x, t, None)
    assert torch.allclose(autoguided(plain, guide, 2.5)(x, t), poor + 2.5 * (cond - poor), atol=1e-6)
    assert autoguided(plain, guide, 1.0) is plain and autoguided(plain, None, 1.0) is plain
    calls.clear()
    autoguided(plain, guide, 1.0)(x, t)
    assert calls == []
    with pytest.raises(ValueError, match="autoguidance scale 2 asked for, but there is no guide model"):
        autoguided(plain, None, 2.0)


def test_fixed_inputs_follow_each_row_through_the_guided_batch_of_two_halves():
    # A model that reads an extra per-example input (as the angle-conditioned DiT reads its angles):
    # classifier-free guidance calls it on [conditional; unconditional], 2B rows, and each row must see
    # its own example's value in both halves.
    def model(x, t, labels, angles):
        return x * angles[:, None] + labels[:, None].float()

    x, t = torch.randn(3, 2), torch.tensor([5, 5, 5])
    labels, angles = torch.tensor([0, 1, 2]), torch.tensor([0.5, -1.0, 2.0])
    guided = classifier_free_guidance(with_inputs(model, angles=angles), labels, scale=3.0, null_label=7)(x, t)
    cond, uncond = model(x, t, labels, angles), model(x, t, torch.full_like(labels, 7), angles)
    assert torch.allclose(guided, uncond + 3.0 * (cond - uncond))
    with pytest.raises(ValueError, match="angles holds 3 rows, but the model was called on 4"):
        with_inputs(model, angles=angles)(torch.randn(4, 2), torch.zeros(4, dtype=torch.int64), labels)


def test_the_objective_passes_a_batchs_extra_inputs_by_name_and_never_drops_them():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, x, t, labels, angles):
            seen.update(labels=labels.clone(), angles=angles.clone())
            return torch.zeros_like(x)

    objective = DiffusionObjective(make_schedule("linear"), label_dropout=0.5, null_label=9, extra_inputs=("angles",))
    labels, angles = torch.zeros(1000, dtype=torch.int64), torch.rand(1000)
    objective(Spy().train(), (torch.randn(1000, 2), labels, angles), torch.Generator().manual_seed(0))
    assert (seen["labels"] == 9).any() and torch.equal(seen["angles"], angles)
    with pytest.raises(ValueError, match=r"a batch of 2 tensors, but this objective expects \(x0, labels, angles\)"):
        objective(Spy(), (torch.randn(4, 2), labels[:4]))
