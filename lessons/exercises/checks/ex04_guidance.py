"""Checks of exercise 04, guidance: the classifier-free combination and the classifier-gradient ε.

Compared with ``toydiff.guidance.combine_guidance`` and ``classifier_guidance``, with a linear
classifier (whose gradient is known) and a small MLP; s = 1 must give ε_cond bit for bit, and the
correction must move x̂_0 towards the requested class."""
from __future__ import annotations

from typing import Callable

import torch

from toydiff import guidance
from toydiff.parameterisation import predict_x0
from toydiff.schedules import make_schedule

from .assertions import CheckFailed, assert_close, require
from .inputs import points, seeded_generator, timesteps

TOPIC = "guidance: classifier-free combination and classifier gradient"
LIBRARY = "toydiff"


class _LinearClassifier(torch.nn.Module):
    """logits = W x + b + c·t/T: a classifier whose gradient is known, and which uses t."""

    def __init__(self, dims: int, classes: int, seed: int):
        super().__init__()
        generator = seeded_generator(seed)
        self.weight = torch.nn.Parameter(torch.randn(classes, dims, generator=generator))
        self.bias = torch.nn.Parameter(torch.randn(classes, generator=generator))
        self.time = torch.nn.Parameter(torch.randn(classes, generator=generator))

    def forward(self, x, t):
        return x @ self.weight.T + self.bias + self.time * t[:, None].float() / 1000  # (B, C)


class _MLPClassifier(torch.nn.Module):
    def __init__(self, dims: int, classes: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(dims + 1, 32), torch.nn.SiLU(), torch.nn.Linear(32, classes))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].float() / 1000], dim=1))


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def cfg_scales():
        require(student, "classifier_free_guidance")
        uncond = torch.randn(8, 3, 4, 4, generator=seeded_generator(50))
        cond = torch.randn(8, 3, 4, 4, generator=seeded_generator(51))
        for scale in (0.0, 0.5, 2.0, 4.0, 7.5):
            assert_close(student.classifier_free_guidance(uncond, cond, scale),
                         guidance.combine_guidance(uncond, cond, scale),
                         f"guided ε at s = {scale} (image-shaped, every channel guided)", atol=1e-5, rtol=1e-5)

    def cfg_one_exact():
        require(student, "classifier_free_guidance")
        uncond = torch.randn(256, 2, generator=seeded_generator(52))
        cond = torch.randn(256, 2, generator=seeded_generator(53)) * 3.7
        guided = student.classifier_free_guidance(uncond, cond, 1.0)
        if not torch.equal(guided, cond):
            differing = int((guided != cond).sum())
            raise CheckFailed(f"s = 1 must return ε_cond bit for bit; {differing} of {cond.numel()} entries differ "
                              "(ε_u + 1·(ε_c - ε_u) rounds differently: write it around ε_c)")

    def cfg_zero_is_uncond():
        uncond = torch.randn(64, 2, generator=seeded_generator(54))
        cond = torch.randn(64, 2, generator=seeded_generator(55))
        assert_close(student.classifier_free_guidance(uncond, cond, 0.0), uncond, "s = 0 must give ε_uncond",
                     atol=1e-6, rtol=1e-6)

    def classifier(make_classifier, what: str, t_of):
        require(student, "classifier_guided_epsilon")
        schedule = make_schedule("cosine", 1000)
        clf = make_classifier(2, 3, 56)
        x_t, epsilon = points(32, seed=57, dtype=torch.float32), points(32, seed=58, dtype=torch.float32)
        labels = timesteps(32, 0, 2, seed=59)
        t = t_of(32)
        for scale in (0.0, 1.0, 3.0):
            reference = guidance.classifier_guidance(lambda x, t_: epsilon, clf, labels, scale, schedule)(x_t, t)
            with torch.no_grad():  # as inside a sampler
                guided = student.classifier_guided_epsilon(schedule, epsilon, x_t, t, clf, labels, scale)
            assert_close(guided, reference, f"ε̃ with a {what} classifier, s = {scale}", atol=1e-5, rtol=1e-5)

    def classifier_gradient_sign():
        # For logits = W x, moving along ∇ log p(y|x) must raise p(y|x): ε̃ = ε - s σ ∇ means x̂_0 moves along +∇.
        schedule = make_schedule("cosine", 1000)
        clf = _LinearClassifier(2, 3, 60)
        x_t = points(16, seed=61, dtype=torch.float32)
        labels = torch.zeros(16, dtype=torch.int64)
        t = torch.full((16,), 500, dtype=torch.int64)
        epsilon = torch.zeros_like(x_t)
        guided = student.classifier_guided_epsilon(schedule, epsilon, x_t, t, clf, labels, 1.0)
        x0_before = predict_x0(schedule, epsilon, t, x_t)
        x0_after = predict_x0(schedule, guided, t, x_t)
        with torch.no_grad():
            before = torch.log_softmax(clf(x0_before, t), -1)[:, 0]
            after = torch.log_softmax(clf(x0_after, t), -1)[:, 0]
        if not bool((after >= before - 1e-6).all()):
            raise CheckFailed("guidance moved x̂_0 away from the requested class: check the sign of the correction")

    return [("classifier-free guidance at s = 0, 0.5, 2, 4, 7.5", cfg_scales),
            ("classifier-free guidance at s = 1 is the conditional output, bit for bit", cfg_one_exact),
            ("classifier-free guidance at s = 0 is the unconditional output", cfg_zero_is_uncond),
            ("classifier guidance, linear classifier, random t",
             lambda: classifier(_LinearClassifier, "linear", lambda b: timesteps(b, 0, 999, seed=62))),
            ("classifier guidance, small MLP classifier, t = 0 and t = T-1",
             lambda: classifier(_MLPClassifier, "MLP", lambda b: torch.tensor([0, 999] * (b // 2)))),
            ("classifier guidance moves x̂_0 towards the class", classifier_gradient_sign)]
