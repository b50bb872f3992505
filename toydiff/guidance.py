"""Steering a sampler: towards a label (classifier-free and classifier guidance), away from the model's
own errors (autoguidance, by a weaker version of the model).

Both are written as *model wrappers*: they take a conditional denoiser and return a plain
``model(x_t, t)`` that any sampler of :mod:`toydiff.samplers` accepts unchanged.

One convention, everywhere in this project: with guidance scale s,

    ε̃ = ε_uncond + s · (ε_cond - ε_uncond)

s = 0 is the unconditional model, s = 1 exactly the conditional model, s > 1 sharpens the condition;
autoguidance's scale w follows it (w = 1: the model alone, without calling the guide).
Guidance trades diversity for fidelity to the label; it does not make sampling need fewer steps.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from toydiff.parameterisation import convert_prediction, epsilon_from_score, score_from_epsilon
from toydiff.schedules import NoiseSchedule


def drop_labels(labels: torch.Tensor, probability: float, null_label: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each label by ``null_label`` with the given probability (CFG training, Ho & Salimans 2022).

    The caller does this only in training mode; sampling always passes the labels it wants.
    labels: (B,) int64.  Returns (B,) int64.
    """
    if probability <= 0.0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < probability
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def combine_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """uncond + s (cond - uncond), written as cond + (s - 1)(cond - uncond) so s = 1 returns cond exactly.

    Applied to the whole output tensor: every channel is guided (docs/pitfalls.md, pitfall 8).
    """
    return cond + (scale - 1.0) * (cond - uncond)


def rescale_guidance(guided: torch.Tensor, cond: torch.Tensor, rescale: float) -> torch.Tensor:
    """Guidance rescale (Lin et al. 2024, "Common Diffusion Noise Schedules…", Eq. 15-16).

    Large guidance scales inflate the prediction's standard deviation, which over-exposes images.
    Rescale each example's guided prediction to the std of its conditional one, then blend:

        x_rescaled = guided · std(cond) / std(guided)
        x_final    = φ · x_rescaled + (1 - φ) · guided,      φ = rescale in [0, 1]

    std is taken per example over every non-batch dimension (all channels and positions).
    guided, cond: (B, ...).  rescale = 0 returns ``guided`` unchanged.
    """
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale φ must lie in [0, 1], got {rescale}")
    if rescale == 0.0:
        return guided
    dims = tuple(range(1, guided.ndim))
    std_cond = cond.std(dim=dims, keepdim=True)      # (B, 1, ...)
    std_guided = guided.std(dim=dims, keepdim=True)  # (B, 1, ...)
    # A constant guided prediction (std 0) has no spread to rescale: it is left as it is.
    ratio = torch.where(std_guided > 0, std_cond / std_guided.clamp_min(torch.finfo(guided.dtype).tiny),
                        torch.ones_like(std_guided))
    rescaled = guided * ratio
    return rescale * rescaled + (1.0 - rescale) * guided


def conditional(model: Callable, labels: torch.Tensor) -> Callable:
    """``model(x, t, labels)`` with the labels fixed: a plain ``model(x, t)`` for the samplers."""

    def conditioned(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x_t, t, labels)

    return conditioned


def with_inputs(model: Callable, **inputs: torch.Tensor) -> Callable:
    """``model(x, t, *rest, **inputs)``: per-example tensors (B, ...) fixed for a whole sampling run, e.g.
    imagediff's angles (``with_inputs(dit, angles=a)``), like `conditional` fixes the labels.

    Guidance calls the model on several versions of a batch at once (classifier-free guidance: the
    conditional and unconditional halves, 2B rows, each half in the batch's order), so every input is
    repeated to the number of rows the model is called with: B, 2B, ...
    """

    def bound(x_t: torch.Tensor, t: torch.Tensor, *rest, **keywords) -> torch.Tensor:
        rows = x_t.shape[0]
        repeated = {}
        for name, value in inputs.items():
            if rows % len(value):
                raise ValueError(f"{name} holds {len(value)} rows, but the model was called on {rows}: "
                                 "expected a multiple of the batch it was fixed for")
            repeated[name] = value.repeat(rows // len(value), *([1] * (value.ndim - 1)))
        return model(x_t, t, *rest, **keywords, **repeated)

    return bound


def classifier_free_guidance(model: Callable, labels: torch.Tensor, scale: float, null_label: int,
                             rescale: float = 0.0, guide: Optional[Callable] = None,
                             guide_scale: float = 1.0) -> Callable:
    """Wrap a label-conditional ``model(x, t, labels)`` into a guided ``model(x, t)``.

    labels: (B,) the classes asked for; null_label: the reserved "no label" index the model was
    trained with. The conditional and unconditional passes run as one batch of 2B.
    s = 1 skips the unconditional pass and returns the conditional output bit for bit; s = 0 skips
    the conditional one. rescale: φ of guidance rescale (see ``rescale_guidance``; 0 = off).
    guide, guide_scale: autoguidance (see ``autoguidance_term``), added to the classifier-free result;
    guide_scale = 1 (the default) never calls the guide.
    """
    scale, guide_scale = float(scale), float(guide_scale)
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"guidance rescale φ must lie in [0, 1], got {rescale}")
    autoguide = check_guide(guide, guide_scale)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        null = torch.full_like(labels, null_label)
        if scale == 0.0 and not autoguide:
            return model(x_t, t, null)
        if scale == 1.0:
            output = cond = model(x_t, t, labels)
            if not autoguide:
                return output
        else:
            both = model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null]))  # (2B, ...)
            cond, uncond = both.chunk(2)
            output = combine_guidance(uncond, cond, scale)
        if autoguide:
            output = output + autoguidance_term(cond, guide(x_t, t, labels), guide_scale)
        return rescale_guidance(output, cond, rescale)

    return guided


def check_guide(guide: Optional[Callable], guide_scale: float) -> bool:
    """Whether autoguidance is on; a guide scale without a guide is an error, not a silent no-op."""
    if guide_scale < 0:
        raise ValueError(f"the autoguidance scale must be >= 0 (1 = off), got {guide_scale}")
    if guide_scale != 1.0 and guide is None:
        raise ValueError(f"autoguidance scale {guide_scale:g} asked for, but there is no guide model "
                         "(a weaker version of the model: a smaller one, or an early snapshot of its training)")
    return guide is not None and guide_scale != 1.0


def autoguidance_term(cond: torch.Tensor, weak: torch.Tensor, guide_scale: float) -> torch.Tensor:
    """(w - 1)(D(x | c) - D_weak(x | c)): autoguidance (Karras et al. 2024, "Guiding a Diffusion Model
    with a Bad Version of Itself"), added to the (classifier-free-guided) output.

    The guide is a *weaker* model of the same conditional distribution (smaller, or trained for fewer
    steps). Both models blur what they cannot resolve, but the weak one blurs more, so the difference
    points from a blend of possibilities towards one of them: for a rotated shape, from "every angle
    at once" (a disc) towards one angle. Unlike classifier-free guidance it pushes away from the
    model's own errors, not towards the label, so it sharpens without narrowing the samples to the
    class's average. On its own (CFG s = 1) the guided output is D_weak + w (D - D_weak), the paper's
    form; w = 1 is the conditional model exactly.
    cond, weak: outputs of the same parameterisation (ε, x_0 or v) at the same (x_t, t, labels).
    """
    return (guide_scale - 1.0) * (cond - weak)


def autoguided(model: Callable, guide: Optional[Callable], guide_scale: float) -> Callable:
    """A plain ``model(x, t)`` (no labels: e.g. the video DiT, whose condition is the history it sees in
    x_t) guided by a weaker ``guide(x, t)`` of itself: D_weak + w (D - D_weak), written as
    D + (w - 1)(D - D_weak) so that w = 1 returns ``model`` itself and never calls the guide.
    Every call of the result calls both models on the same (x_t, t); history guidance, which calls its
    denoiser on several versions of the history, then guides each of them.
    """
    if not check_guide(guide, guide_scale):
        return model

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        output = model(x_t, t)
        return output + autoguidance_term(output, guide(x_t, t), guide_scale)

    return guided


def classifier_guidance(model: Callable, classifier: Callable, labels: torch.Tensor, scale: float,
                        schedule: NoiseSchedule, prediction_type: str = "epsilon") -> Callable:
    """Add the gradient of a noisy classifier to the score (Dhariwal & Nichol 2021, Algorithm 2).

    score_guided = score + s ∇_x log p(y | x_t)    ⇔    ε̃ = ε - s sqrt(1 - ᾱ_t) ∇_x log p(y | x_t)

    model: an (unconditional or conditional-with-labels-fixed) ``model(x, t)``;
    classifier: ``classifier(x_t, t) -> logits (B, num_classes)``, trained on noisy x_t.
    Returns ``model(x, t)`` whose output has the same ``prediction_type`` as ``model``'s.
    """
    scale = float(scale)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        output = model(x_t, t)
        if scale == 0.0:
            return output
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            log_probs = torch.log_softmax(classifier(x, t), dim=-1)
            chosen = log_probs.gather(1, labels.view(-1, 1)).sum()
            (gradient,) = torch.autograd.grad(chosen, x)  # ∇_x log p(y | x_t), (B, ...)
        epsilon = convert_prediction(schedule, output, t, x_t, prediction_type, "epsilon")
        # A score added to the score is -sqrt(1 - ᾱ_t) times it added to ε.
        guided_epsilon = epsilon + scale * epsilon_from_score(schedule, gradient, t)
        return convert_prediction(schedule, guided_epsilon, t, x_t, "epsilon", prediction_type)

    return guided


def guided_score(model: Callable, schedule: NoiseSchedule, prediction_type: str = "epsilon") -> Callable:
    """The score ∇ log p_t(x) = -ε / sqrt(1 - ᾱ_t) of a (possibly guided) ``model(x, t)``."""

    def score(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        epsilon = convert_prediction(schedule, model(x_t, t), t, x_t, prediction_type, "epsilon")
        return score_from_epsilon(schedule, epsilon, t)

    return score


def guided_denoiser(model: Callable, labels: Optional[torch.Tensor], *, null_label: Optional[int],
                    guidance_scale: float = 1.0, classifier: Optional[Callable] = None,
                    schedule: Optional[NoiseSchedule] = None, prediction_type: str = "epsilon",
                    rescale: float = 0.0, guide: Optional[Callable] = None, guide_scale: float = 1.0) -> Callable:
    """The plain ``model(x, t)`` a sampler calls, for a label-conditional ``model(x, t, labels)``.

    labels None: the unconditional pass (the null label; or no label for an unconditional model).
    classifier given: the unconditional pass steered by ``classifier(x_t, t)`` with scale
        ``guidance_scale`` (classifier guidance; needs ``schedule`` and ``prediction_type``).
    otherwise: classifier-free guidance with scale ``guidance_scale`` (s = 1: the conditional model)
        and guidance rescale φ = ``rescale``, plus autoguidance by the weaker ``guide(x, t, labels)``
        with scale ``guide_scale`` (1: off).
    Every data layer (points, images, video) builds its sampling model here.
    """
    if labels is None:
        if classifier is not None:
            raise ValueError("classifier guidance needs a label to steer towards")
        if check_guide(guide, guide_scale):
            raise ValueError("autoguidance is applied to labelled samples; the unconditional pass takes none")
        return conditional(model, None)
    if classifier is not None:
        if check_guide(guide, guide_scale):
            raise ValueError("autoguidance applies to classifier-free guidance, not to classifier guidance")
        if rescale:
            raise ValueError("guidance rescale applies to classifier-free guidance, not to classifier guidance")
        if schedule is None:
            raise ValueError("classifier guidance needs the noise schedule to turn the gradient into ε")
        return classifier_guidance(conditional(model, None), classifier, labels, guidance_scale, schedule,
                                   prediction_type)
    if null_label is None:
        raise ValueError("this model was trained without labels (unconditional): it cannot be guided to a class; "
                         "retrain it with labels or use a classifier")
    return classifier_free_guidance(model, labels, guidance_scale, null_label, rescale, guide, guide_scale)
