# %% [markdown]
# # Lesson 10 — Rollouts longer than the window, and history guidance
#
# The video DiT of lesson 09 sees a window of W frames.  A longer video is made one window at a
# time: keep the last frames made so far as *history*, generate the next ones, slide on.  Every
# window then conditions on frames the model itself made, so its errors feed back and compound.
# History guidance (Song et al. 2025, "History-Guided Video Diffusion") is classifier-free guidance
# whose condition is the history: the model with its history, against the model with the history
# wiped out by noise — which a diffusion-forcing model has learned for free, since a fully noised
# frame is one of the levels it was trained on.  This lesson rolls videos out to four windows,
# measures their physics with lesson 08's tracker under each kind of history guidance, and shows
# what too much of it does.
#
# Run:   python lessons/10_rollouts_and_history_guidance.py   (figures in runs/lessons/10_rollouts_and_history_guidance/)
# Time:  about 6 min on a 2-core CPU with lessons 08 and 09's checkpoints present (measured: 356 s).
#        Measured with `make lessons` on an idle 2-core machine, both cores in use.

# %%
import math
import time

import numpy as np

from imagediff.plots import save_curves
from videodiff.evaluation import evaluation_table, format_table, rollout_and_score
from videodiff.plots import save_frame_strips, save_rollout_gif
from videodiff.sampling import HistoryGuidance

from lesson_setup import QUICK, VIDEO_CONTEXT, shared_video_model, start_lesson  # noqa: E402

OUT = start_lesson("10_rollouts_and_history_guidance")
NUM_VIDEOS = 4 if QUICK else 16       # held-out videos rolled out for every row of the table
SAMPLING_STEPS = 4 if QUICK else 10   # denoising steps per frame (the library's default)
SCALE = 2.0                           # the history guidance scale of the guided rows
STABILIZATION = 20                    # k_s: generated history is shown re-noised to this timestep
STRONG = 6.0                          # a scale reported to freeze videos (DFoT paper)
started = time.perf_counter()


def px(value) -> str:
    return "-" if value is None else f"{value:.2f} px"


def ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


# %% [markdown]
# ## A rollout, one sliding window at a time
# K real frames start the video.  Each window holds the last W - n frames known so far (real ones
# first, generated ones later) followed by n frames of noise, n = W - K; the window is denoised with
# the autoregressive matrix of lesson 09 (the library's default: it scored the lowest position error
# of the three matrices when this was measured), and its n new frames are appended.  Positions
# restart at 0 in every window (RoPE only sees offsets, lesson 09).  `rollout_and_score` continues held-out videos that way
# (`VideoDiffusionModel.rollout`) and scores them with the tracker: the position error of every
# ball against its true place, the share of balls found and of frames that hold exactly the right,
# well-formed balls, and the motion ratio — how far the generated balls move per frame, divided by
# how far the true ones do (0: a frozen video).

# %%
run = shared_video_model()
window, K = run.window, VIDEO_CONTEXT
LENGTH = 4 * window
new_per_window = window - K
print(f"window W = {window}, {K} real frames, then {LENGTH} generated ({LENGTH // window}x the window): "
      f"{math.ceil(LENGTH / new_per_window)} windows of {new_per_window} new frames after {K} of history")
generated, truth, plain = rollout_and_score(run, NUM_VIDEOS, K, LENGTH, HistoryGuidance("none"),
                                            num_steps=SAMPLING_STEPS)
print(f"frames {generated.shape} (N, K + length, H, W, 3) uint8, {SAMPLING_STEPS} steps per frame")
print(f"no guidance: position error {px(plain['position_error_first'])} over the first 8 generated frames, "
      f"{px(plain['position_error'])} over all; balls found {plain['found_share']:.1%}, well-formed frames "
      f"{plain['well_formed_share']:.1%}, motion ratio {ratio(plain['motion_ratio'])}")
print("wrote", save_rollout_gif(generated, truth.frames, OUT / "rollout.gif", num_context=K))
shown = list(range(0, K + LENGTH, 1 if QUICK else 2))
print("wrote", save_frame_strips([v for i in range(2) for v in (truth.frames[i], generated[i])],
                                 [f"{name} {i}" for i in range(2) for name in ("truth", "rollout")],
                                 OUT / "rollout_frames.png", frames=shown, num_context=K,
                                 title=f"Rollouts from {K} real frames to {LENGTH} more (red frames: generated)"))

# %% [markdown]
# ## History guidance
# Every mode is built from *branches*: the same window shown with its history frames at different
# noise levels, all in one batch.  With p(·) the model's prediction and s the scale:
# - vanilla:    u + s (c - u), c with the history as given, u with it fully noised (pure noise at T - 1);
# - fractional: c + (s - 1)(f - u), f with the history noised to k_H = 500: the guidance term sees only
#   the coarse part of the history that survives that noise;
# - temporal:   u + s Σ ŵ_i (c_i - u), c_i with only the last few history frames given (here the last
#   2, and all of them, equally weighted).
# s = 1 is the conditional model itself, computed with one branch: it is the unguided rollout, bit
# for bit.  *Stabilisation* shows generated history re-noised to a small level k_s, telling the model
# "these frames may hold small errors" so that it does not copy them — real frames stay clean.

# %%
once_guided = run.rollout(truth.frames[:, :K], LENGTH, HistoryGuidance("vanilla", 1.0), num_steps=SAMPLING_STEPS)
print(f"vanilla guidance at s = 1 equals no guidance bit for bit: {np.array_equal(once_guided, generated)}")
table = evaluation_table(run, NUM_VIDEOS, K, LENGTH, SCALE, STABILIZATION, SAMPLING_STEPS)
print(f"{NUM_VIDEOS} held-out videos, {K} real frames then {LENGTH} generated, guided rows at s = {SCALE:g}, "
      f"stabilised rows at k_s = {STABILIZATION}:")
print(format_table(table))

# %% [markdown]
# ## How the error grows along the rollout
# The table's averages hide *when* a rollout goes wrong.  The position error of every generated
# frame, for a few of the rows: it starts near the VAE's floor of lesson 08 right after the real
# frames and grows as each window builds on generated history.

# %%
curves = {}
for name, guidance, stabilization in (("none", HistoryGuidance("none"), 0),
                                      (f"vanilla, s = {SCALE:g}", HistoryGuidance("vanilla", SCALE), 0),
                                      (f"fractional, s = {SCALE:g}", HistoryGuidance("fractional", SCALE, fractional_level=500), 0),
                                      (f"vanilla, s = {SCALE:g}, stabilised", HistoryGuidance("vanilla", SCALE),
                                       STABILIZATION)):
    metrics = plain if name == "none" else rollout_and_score(
        run, NUM_VIDEOS, K, LENGTH, guidance, num_steps=SAMPLING_STEPS, stabilization_level=stabilization)[2]
    errors = [math.nan if e is None else e for e in metrics["position_error_per_frame"]]
    curves[name] = (list(range(K, K + LENGTH)), errors)
    print(f"{name:30s}: mean position error {px(metrics['position_error'])}")
print("wrote", save_curves(curves, OUT / "error_over_time.png", "frame (the first generated one is K)",
                           "ball position error (px)",
                           f"Rollout error per generated frame, {NUM_VIDEOS} videos, window {window}"))

# %% [markdown]
# ## Does too much guidance freeze the video?
# Guidance pushes the prediction towards what the history makes likely and away from what the model
# would draw without it.  For a video the most history-like next frame is the last frame again, and
# the DFoT paper reports that at large scales videos go static (its fractional guidance was designed
# against that).  Measure it, by the motion ratio against the unguided rollout above.  On the lesson's
# model (3000 steps) it did not happen when this was written: no guidance 1.54, vanilla s = 6 1.45 —
# the balls jitter more than they move, and a model this rough has little motion to lose.

# %%
_, _, strong = rollout_and_score(run, NUM_VIDEOS, K, LENGTH, HistoryGuidance("vanilla", STRONG),
                                 num_steps=SAMPLING_STEPS)
print(f"motion ratio (generated displacement per frame / true): no guidance {ratio(plain['motion_ratio'])}, "
      f"vanilla s = {STRONG:g} {ratio(strong['motion_ratio'])}")
print(f"balls still move (ratio >= 0.25): no guidance {plain['moves']}, vanilla s = {STRONG:g} {strong['moves']}")

# %% [markdown]
# ## What to remember
# - A video longer than the window is rolled out window by window; each window's history holds
#   frames the model made, so errors compound over time.
# - History guidance is classifier-free guidance with the history as the condition, dropped by
#   noising it; a diffusion-forcing model provides every branch with no extra training.  s = 1 is
#   the unguided model, exactly.
# - Strong history guidance is reported to trade motion for consistency (videos freeze).  Measure
#   motion, not only position error: a frozen video keeps its balls perfectly formed.
# - Exercise: `python -m lessons.exercises.check 10` — write vanilla history guidance: its two
#   branches in one batch, and their combination.

# %%
print(f"lesson 10 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
