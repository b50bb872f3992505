"""Checks of exercise 10, vanilla history guidance: its two branches and their combination.

The student's function and ``videodiff.sampling.history_guided_prediction`` (``HistoryGuidance("vanilla",
s)``, given the same noise for the history) call the same fake denoiser, which records every window
it is shown and mixes all frames and levels into its output, so that any difference in what a branch
shows reaches the result.  Besides matching the library at several scales, for history at the start
of the window and for a mask (interpolation), the checks read the branches the denoiser was shown
and name what is wrong in them (history not wiped, wiped with zeros instead of noise, shown at the
wrong level, generated frames replaced too, two calls instead of one), and they check s = 1 bit for
bit and s = 0 without the library."""
from __future__ import annotations

from typing import Callable

import torch

from toydiff.schedules import make_schedule
from videodiff.sampling import HistoryGuidance, history_guided_prediction

from .assertions import CheckFailed, assert_close, assert_tensor_of_shape, require
from .inputs import seeded_generator

TOPIC = "vanilla history guidance: the two branches in one batch, and their combination"
LIBRARY = "videodiff.sampling.history_guided_prediction (HistoryGuidance('vanilla', s))"

T = 1000
SCHEDULE = make_schedule("linear", T)


class RecordingDenoiser:
    """A fake denoiser that keeps every input; its output mixes every frame and every level."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x_t.detach().clone(), t.detach().clone()))
        level = (t.to(x_t.dtype) / T).view(*t.shape, *[1] * (x_t.ndim - 2))  # (n, F, 1, 1, 1)
        window = x_t.mean(dim=1, keepdim=True) * (1.0 + level.mean(dim=1, keepdim=True))  # (n, 1, C, H, W)
        return 0.6 * x_t + 0.3 * window + torch.cos(3.0 * level)  # (n, F, C, H, W)


def _window(seed: int, history: torch.Tensor, batch: int = 3):
    """x (B, F, C, H, W) float64, t (B, F) with arbitrary levels in the history columns too, noise."""
    generator = seeded_generator(seed)
    frames = len(history)
    x = torch.randn(batch, frames, 2, 3, 3, generator=generator, dtype=torch.float64)
    t = torch.randint(1, T - 1, (batch, frames), generator=generator)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return x, t, noise


def _leading(count: int, frames: int) -> torch.Tensor:
    return torch.arange(frames) < count


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def run_student(x, t, history, noise, scale):
        denoiser = RecordingDenoiser()
        result = student.vanilla_history_guidance(denoiser, x.clone(), t.clone(), history.clone(), noise.clone(),
                                                  scale, T)
        assert_tensor_of_shape(result, x.shape, f"the guided prediction at s = {scale:g}", "(B, F, C, H, W)")
        return result, denoiser

    def library(x, t, history, noise, scale):
        return history_guided_prediction(RecordingDenoiser(), x, t, history, SCHEDULE, HistoryGuidance("vanilla", scale),
                                         history_noise=noise)

    def matches(history: torch.Tensor, what: str, seed: int):
        def check():
            require(student, "vanilla_history_guidance")
            for scale in (0.0, 2.0, 3.5):
                x, t, noise = _window(seed, history)
                result, _ = run_student(x, t, history, noise, scale)
                assert_close(result, library(x, t, history, noise, scale),
                             f"the guided prediction at s = {scale:g}, {what}", atol=1e-12, rtol=1e-12)
        return check

    def scale_one_is_the_conditional_prediction():
        require(student, "vanilla_history_guidance")
        history = _leading(2, 5)
        x, t, noise = _window(100, history)
        result, _ = run_student(x, t, history, noise, 1.0)
        conditional = RecordingDenoiser()(x, torch.where(history, 0, t))  # history clean, at level 0
        if not torch.equal(result, conditional):
            if torch.allclose(result, conditional, atol=1e-12, rtol=1e-12):
                raise CheckFailed(f"s = 1 must return the conditional prediction bit for bit; "
                                  f"{int((result != conditional).sum())} entries differ in the last bits: "
                                  "u + s (c − u) rounds differently, write c + (s − 1)(c − u)")
            assert_close(result, conditional, "s = 1: the conditional prediction (history clean, at level 0)",
                         atol=1e-12)

    def scale_zero_is_the_unconditional_prediction():
        require(student, "vanilla_history_guidance")
        history = _leading(3, 6)
        x, t, noise = _window(101, history)
        result, _ = run_student(x, t, history, noise, 0.0)
        wiped = torch.where(history.view(1, -1, 1, 1, 1), noise, x)
        unconditional = RecordingDenoiser()(wiped, torch.where(history, T - 1, t))
        assert_close(result, unconditional, "s = 0: the prediction with the history replaced by pure noise at "
                     "level T − 1", atol=1e-12)

    def one_call():
        require(student, "vanilla_history_guidance")
        history = _leading(2, 4)
        x, t, noise = _window(102, history)
        _, denoiser = run_student(x, t, history, noise, 2.0)
        sizes = [len(call[0]) for call in denoiser.calls]
        if sizes != [2 * len(x)]:
            raise CheckFailed(f"the denoiser was called {len(sizes)} time(s) on batches of {sizes}; call it once on "
                              f"both branches stacked along the batch ({2 * len(x)} windows for B = {len(x)}): a "
                              "sampling row then costs one call")

    def branches():
        """The windows and levels the denoiser was shown, split into B-sized branches: [(x, t), ...]."""
        history = torch.tensor([True, False, True, False, False])  # history need not lead the window
        x, t, noise = _window(103, history)
        _, denoiser = run_student(x, t, history, noise, 2.0)
        if not denoiser.calls:
            raise CheckFailed("the denoiser was never called")
        shown = torch.cat([call[0] for call in denoiser.calls])
        levels = torch.cat([call[1] for call in denoiser.calls])
        batch = len(x)
        if len(shown) != 2 * batch:
            raise CheckFailed(f"the denoiser was shown {len(shown)} windows in all; expected 2 · B = {2 * batch}, "
                              "one conditional and one unconditional branch")
        pieces = list(zip(shown.split(batch), levels.split(batch)))
        return x, t, noise, history, pieces

    def conditional_branch():
        require(student, "vanilla_history_guidance")
        x, t, noise, history, pieces = branches()
        kept = [(shown, levels) for shown, levels in pieces if torch.equal(shown[:, history], x[:, history])]
        if not kept:
            raise CheckFailed("no branch showed the history frames as given: the conditional branch is x itself, "
                              "history clean")
        shown, levels = kept[0]
        if not torch.equal(levels[:, history], torch.zeros_like(levels[:, history])):
            raise CheckFailed(f"the conditional branch shows the clean history at levels "
                              f"{levels[0, history].tolist()}: a clean frame is shown at level 0")
        if not (torch.equal(shown[:, ~history], x[:, ~history]) and torch.equal(levels[:, ~history], t[:, ~history])):
            raise CheckFailed("the conditional branch changed the frames being generated (or their levels): only the "
                              "history columns are set")

    def unconditional_branch():
        require(student, "vanilla_history_guidance")
        x, t, noise, history, pieces = branches()
        others = [(shown, levels) for shown, levels in pieces if not torch.equal(shown[:, history], x[:, history])]
        if not others:
            raise CheckFailed("both branches show the history as given: the unconditional branch replaces the "
                              "history frames by the noise")
        shown, levels = others[0]
        if torch.equal(shown[:, history], torch.zeros_like(shown[:, history])):
            raise CheckFailed("the unconditional branch shows the history as zeros; a wiped-out frame is pure noise "
                              "(the given `noise`), what the model saw at level T − 1 in training")
        if not torch.equal(shown[:, history], noise[:, history]):
            raise CheckFailed("the unconditional branch's history frames are not the given noise: replace them by it "
                              "(torch.where(in_history, noise, x)), do not add it")
        if not torch.equal(shown[:, ~history], x[:, ~history]):
            raise CheckFailed("the unconditional branch changed the frames being generated: only the history is "
                              "replaced by noise, the other frames are the same noisy latents in both branches")
        if not torch.equal(levels[:, history], torch.full_like(levels[:, history], T - 1)):
            raise CheckFailed(f"the unconditional branch shows the wiped history at levels {levels[0, history].tolist()}: "
                              f"pure noise is level T − 1 = {T - 1}")
        if not torch.equal(levels[:, ~history], t[:, ~history]):
            raise CheckFailed("the unconditional branch changed the levels of the frames being generated: they keep t")

    return [("equals the library at s = 0, 2, 3.5, two history frames of five",
             matches(_leading(2, 5), "history = frames 0-1 of 5", 104)),
            ("equals the library with the first and last frames as history (interpolation)",
             matches(torch.tensor([True, False, False, False, True]), "history = frames 0 and 4", 105)),
            ("s = 1 returns the conditional prediction bit for bit", scale_one_is_the_conditional_prediction),
            ("s = 0 returns the prediction with the history wiped out", scale_zero_is_the_unconditional_prediction),
            ("one denoiser call on both branches", one_call),
            ("the conditional branch: history clean, at level 0", conditional_branch),
            ("the unconditional branch: history = pure noise, at level T − 1", unconditional_branch)]
