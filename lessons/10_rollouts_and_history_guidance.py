# %% [markdown]
# # Lesson 10 — Rollouts longer than the window, and history guidance
#
# The video DiT of lesson 09 sees a window of W frames.  A longer video is made one window at a
# time: keep the last frames made so far as *history*, generate the next ones, slide on.  Every
# window then conditions on frames the model itself made, so its errors feed back and compound.
# History guidance (Song et al. 2025, "History-Guided Video Diffusion", whose model is called DFoT,
# the Diffusion Forcing Transformer) is classifier-free guidance
# whose condition is the history: the model with its history, against the model with the history
# wiped out by noise — which a diffusion-forcing model has learned for free, since a fully noised
# frame is one of the levels it was trained on.  This lesson rolls videos out to four windows,
# measures their physics with lesson 08's tracker under each kind of history guidance, and shows
# what too much of it does.
#
# Run:   python lessons/10_rollouts_and_history_guidance.py   (figures in runs/lessons/10_rollouts_and_history_guidance/)
# Time:  about 3 min on a 2-core CPU with lessons 08 and 09's checkpoints present (measured: 138-217 s).
#        Measured with `python lessons/run_all.py 09 10 11 12` on an idle 2-core machine, both cores in use;
#        120 s with the 192-wide DiT of today's recipe on a later machine (`python lessons/run_all.py 08 09 10 11 12`),
#        133 s there on lesson 09's DiT trained in fp32; 217 s on the scene-labelled DiT of 2026-12-04 on a
#        2-core machine with AVX-512 BF16 and no AMX (run_all 08-12, idle); 201 s there with the 10-step η = 1 row
#        added, run alone (`python lessons/10_rollouts_and_history_guidance.py`, idle), where the 217 s ran under
#        run_all: the two are single runs measured differently, not a saving; 185 s there on 2026-12-05, the
#        library's default now 10 steps with η = 1 and the lesson's other rows kept at 2 deterministic steps
#        (run alone, idle); 192 s there the same day under run_all 08 09 10 from a fresh clone (idle).

# %%
import math
import time

import numpy as np

from imagediff.plots import save_curves
from videodiff.evaluation import evaluation_table, format_table, rollout_and_score
from videodiff.metrics import format_crowding, format_faults
from videodiff.pipeline import ROLLOUT_ETA, ROLLOUT_SCHEDULING, ROLLOUT_STEPS
from videodiff.plots import save_frame_strips, save_rollout_gif
from videodiff.sampling import HistoryGuidance

from lesson_setup import QUICK, VIDEO_CONTEXT, shared_video_model, start_lesson  # noqa: E402

OUT = start_lesson("10_rollouts_and_history_guidance")
NUM_VIDEOS = 4 if QUICK else 16       # held-out videos rolled out for every row of the table
SAMPLING_STEPS = 2                    # denoising steps per frame: the lesson's cheap sampler, 2 deterministic
SAMPLING_ETA = 0.0                    #   DDIM steps (the library's default is 10 with η = 1: see the steps section)
SCALE = 2.0                           # the history guidance scale of the guided rows
STABILIZATION = 20                    # k_s: generated history is shown re-noised to this timestep
STRONG = 6.0                          # a scale reported to freeze videos (Song et al. 2025)
started = time.perf_counter()


def px(value) -> str:
    return "-" if value is None else f"{value:.2f} px"


def ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


# %% [markdown]
# ## A rollout, one sliding window at a time
# K real frames start the video.  Each window holds the last W - n frames known so far (real ones
# first, generated ones later) followed by n frames of noise; the window is denoised and its n new
# frames are appended.  n = W - H, with H the history the model was trained to see (lesson 09's
# recipe: half the window, here as many frames as the K real ones).  The library denoises the n new
# frames together, at one shared level — the full-sequence matrix of lesson 09 after a clean history,
# the very task the recipe trains.  Its default takes 10 steps with fresh noise at every step; this
# lesson rolls out some twenty times, so its rows take 2 deterministic steps, five times cheaper (the
# next section measures what the 10 buy, and what the 2 do better).
# Positions restart at 0 in every window (RoPE only sees offsets, lesson 09).  `rollout_and_score` continues held-out videos that way
# (`VideoDiffusionModel.rollout`) and scores them with the tracker: the position error of every
# ball against its true place, the share of balls found and of frames that hold exactly the right,
# well-formed balls, and the motion ratio — how far the generated balls move per frame, divided by
# how far the true ones do (0: a frozen video).  "Well formed" is read against the true frame (the
# right balls in view where the truth has them in view); "intact" judges each frame alone (every ball of
# the scene drawn whole wherever it is, or where the occluder or a larger ball can hide it, nothing
# extra).  A rollout a little off the true path stays intact but fails the first reading wherever a ball
# passes the occluder at another time than in the truth (docs/video_rollouts.md measures how often).
#
# Which frames fail?  The metrics also group the intact share by what the true frame holds: how many
# balls, and how far apart the closest two are, edge to edge (negative where they overlap: the balls
# here pass through each other, and one hides the other for a while).  A ball is 5 to 9 px wide and the
# DiT reads the latent in tokens of 8 x 8 pixels, so two balls that meet share a token and the model
# must keep two discs and two colours apart inside it.  On the bench's model the first window (whose
# history is real) kept a lone ball intact 83% of the time and two overlapping balls 22%
# (docs/video_rollouts.md, "Where the first window fails"); here the groups are small, so read them
# loosely.  Finer tokens are not the cure: patches of one latent pixel, narrowed to train in the same
# time, did worse at every gap.  Training videos that all hold two or three balls (the unlabelled recipe's) did
# better over the first window on two training seeds, but not where the balls overlap, and not over a
# long rollout (the same page, its last sections).
#
# How do they fail?  The metrics name each fault of a frame: a ball missing, too small, too large or
# smeared, or colour where no ball of it should be.  In the first window the failures are smears where
# balls meet; over the long rollout they are balls that vanish, change colour or appear, lone balls
# included: the model forgets what its scene holds (docs/video_rollouts.md, "How the long rollout's
# frames fail").  That is why lesson 09's model is told each video's scene (its scene label, which every
# rollout here passes): it holds more of a long rollout than a model without, not all of it.  The
# autoguidance section below shows what a stronger guide does to those faults.

# %%
run = shared_video_model()
window, K = run.window, VIDEO_CONTEXT
LENGTH = 4 * window
history = run.config.history_frames() or K                       # H (K for a model trained without a fixed H)
new_per_window = window - history                                 # n = W - H
print(f"window W = {window}, {K} real frames, then {LENGTH} generated ({LENGTH // window}x the window): "
      f"{math.ceil(LENGTH / new_per_window)} windows of {new_per_window} new frames after {history} of history")
generated, truth, plain = rollout_and_score(run, NUM_VIDEOS, K, LENGTH, HistoryGuidance("none"),
                                            num_steps=SAMPLING_STEPS, eta=SAMPLING_ETA)
print(f"frames {generated.shape} (N, K + length, H, W, 3) uint8, {SAMPLING_STEPS} steps per frame, η = "
      f"{SAMPLING_ETA:g} ({ROLLOUT_SCHEDULING.replace('_', ' ')} matrix)")
print(f"no guidance: position error {px(plain['position_error_first'])} over the first 8 generated frames, "
      f"{px(plain['position_error'])} over all; balls found {plain['found_share']:.1%}, well-formed frames "
      f"{plain['well_formed_share']:.1%}, intact {plain['intact_share']:.1%}, motion ratio "
      f"{ratio(plain['motion_ratio'])}")
print("wrote", save_rollout_gif(generated, truth.frames, OUT / "rollout.gif", num_context=K))
# Which frames fail (the paragraph above): intact share (generated frames in the group)
print(format_crowding(plain["intact_by_crowding"]))
# And how they fail: a ball missing (vanished, or drawn in another colour), too small, too large, smeared,
# or colour where no ball of that colour is
print(format_faults(plain["faults"]))
shown = list(range(0, K + LENGTH, 1 if QUICK else 2))
print("wrote", save_frame_strips([v for i in range(2) for v in (truth.frames[i], generated[i])],
                                 [f"{name} {i}" for i in range(2) for name in ("truth", "rollout")],
                                 OUT / "rollout_frames.png", frames=shown, num_context=K,
                                 title=f"Rollouts from {K} real frames to {LENGTH} more (red frames: generated)"))

# %% [markdown]
# ## How many steps, along which matrix
# For the next few frames, more denoising steps are not better.  Each step is a call to a model that
# errs; the autoregressive matrix denoises the new frames one after another (N steps each, so N · n calls per
# window) and every window builds on the last.  One reading: with few steps a DDIM sample stays close
# to the model's *average* guess of the new frames given the history, while many steps draw one
# particular future; the tracker compares against the one true future, so the average guess scores
# better when the history nearly decides what comes next — as it does for balls under gravity.  On the bench's
# model (7000 training steps) the full-sequence matrix at 2 steps scored 1.33 px over the first 8
# generated frames, against 1.92 px for the autoregressive matrix at 10 steps, and it is about 20x
# cheaper.  The lesson's model (3000 training steps, 16 videos) when this was written: full sequence
# 1.92 px at 1 step, 1.82 at 2, 2.93 at 10; autoregressive 1.95 at 2 steps, 2.40 at 10.
#
# The average guess has a price over a long rollout, though.  An average over the places a ball might
# be is a dimmer, wider, paler ball, and the next window builds on it; more steps draw sharp balls.
# DDIM's η says how much fresh noise each step adds (0: none, the deterministic DDIM of lesson 03; 1:
# the DDPM step).  On the bench's labelled model, 10 steps kept 0.37-0.41 (η = 0) and 0.43 (η = 1) of 64
# generated frames intact against 0.25-0.29 for 2 deterministic steps (the default until 2026-12-05), lone
# balls 0.78 against 0.50; over 96 videos, with fresh noise the error over the first 8 frames stayed about
# that of the 2 steps, without it it grew by a quarter of a pixel (docs/video_rollouts.md, "Fresh noise
# at every step").  That is why the library's default is now 10 steps with η = 1 (`ROLLOUT_STEPS`,
# `ROLLOUT_ETA`); they cost five times the calls of the 2 deterministic steps this lesson's other rows
# take.  Measured now (intact judges each frame alone; the last row, fresh noise at every step, is the
# library's default):

# %%
for kind, steps, eta in (("full_sequence", 1, 0.0), ("full_sequence", SAMPLING_STEPS, SAMPLING_ETA),
                         ("full_sequence", 10, 0.0), ("autoregressive", SAMPLING_STEPS, 0.0),
                         ("autoregressive", 10, 0.0),
                         (ROLLOUT_SCHEDULING, ROLLOUT_STEPS, ROLLOUT_ETA)):
    tic = time.perf_counter()
    metrics = plain if (kind, steps, eta) == (ROLLOUT_SCHEDULING, SAMPLING_STEPS, SAMPLING_ETA) else rollout_and_score(
        run, NUM_VIDEOS, K, LENGTH, HistoryGuidance("none"), num_steps=steps, scheduling=kind, eta=eta)[2]
    print(f"{kind:15s} {steps:2d} steps, η = {eta:g}: position error {px(metrics['position_error_first'])} over the "
          f"first 8, well-formed {metrics['well_formed_share']:.1%}, intact {metrics['intact_share']:.1%}, motion "
          f"ratio {ratio(metrics['motion_ratio'])}{'' if metrics is plain else f'  ({time.perf_counter() - tic:.1f} s)'}")

# %% [markdown]
# A sampler should ask the question the model was trained on.  The recipe trains nine clips in ten on a clean
# history of exactly four frames and one shared noise level for the frames after it: the full-sequence matrix's
# question.  On the bench's model at the default 10 steps with η = 1, over 64 generated frames of 64 videos, the
# pyramid matrix kept 32% of the frames intact and the autoregressive one 19%, against 47% for full sequence; a
# history of six frames 33%.  A model trained on the pyramid's staggered levels (`train --future-level-lag 100`)
# took it to 37% at 10 steps and 42-44% at 16-20, about the recipe's full sequence at twice the calls
# (docs/video_rollouts.md, "Other samplers under fresh noise").

# %% [markdown]
# ## History guidance
# Every mode is built from *branches*: the same window shown with its history frames at different
# noise levels, all in one batch.  With s the scale, and u, c, f, c_i the model's predictions on the branches:
# - vanilla:    u + s (c - u), c with the history as given, u with it fully noised (pure noise at T - 1);
# - fractional: c + (s - 1)(f - u), f with the history noised to k_H = 500: the guidance term sees only
#   the coarse part of the history that survives that noise;
# - temporal:   u + s Σ ŵ_i (c_i - u), c_i with only the last few history frames given (here the last
#   2, and all of them, equally weighted).
# s = 1 is the conditional model itself, computed with one branch: it is the unguided rollout, bit
# for bit.  *Stabilisation* shows generated history re-noised to a small level k_s, telling the model
# "these frames may hold small errors" so that it does not copy them — real frames stay clean.

# %%
once_guided = run.rollout(truth.frames[:, :K], LENGTH, HistoryGuidance("vanilla", 1.0), num_steps=SAMPLING_STEPS,
                          eta=SAMPLING_ETA, labels=run.labels_for(truth))
print(f"vanilla guidance at s = 1 equals no guidance bit for bit: {np.array_equal(once_guided, generated)}")
table = evaluation_table(run, NUM_VIDEOS, K, LENGTH, SCALE, STABILIZATION, SAMPLING_STEPS, eta=SAMPLING_ETA)
print(f"{NUM_VIDEOS} held-out videos, {K} real frames then {LENGTH} generated, guided rows at s = {SCALE:g}, "
      f"stabilised rows at k_s = {STABILIZATION}:")
print(format_table(table))

# %% [markdown]
# ## Autoguidance: the model against its own early self
# Every rollout above was also *autoguided*, the library's default for a model that kept a guide.  A run
# keeps its EMA weights after 15% of its training (`guide_fraction`): a weaker model of the same videos.
# Both blur what they cannot resolve, the weak one more, so their difference points from "the ball is
# somewhere around here" towards one place; every call of the denoiser becomes
# D + (w - 1)(D - D_weak) (`toydiff.guidance.autoguided`, the image layer's autoguidance of lesson 07;
# model and guide are both given the video's scene label), history-guided branches included.  w = 1 is the model alone, and never calls the
# guide; the table's last row is that rollout.  On the bench's model (7000 steps, 32 videos), error over
# the first 8 / balls found / well-formed frames / motion ratio: w = 1: 1.33 px / 0.46 / 0.15 / 0.79;
# w = 1.5: 1.21 px / 0.64 / 0.16 / 1.34; w = 2: 1.67 px / 0.72 / 0.10 / 1.98 — more balls found, but past
# a mild scale they grow, smear and move too far.  In the faults' terms (the same page, "How the long
# rollout's frames fail"): a stronger guide turns missing balls into stray colour and smears — at w = 4
# almost no ball is missing and almost every frame is over-painted.  Measured now, without history guidance:

# %%
if run.guide is None:
    print("this model kept no guide (trained before guides existed): every rollout above was the model alone")
else:
    print(f"autoguidance: the guide is the EMA at step {run.config.guide_step()} of {run.config.train.steps}; "
          f"rollouts above used w = {run.default_guide_scale:g}")
    for w in (1.0, run.default_guide_scale, 2.0, 3.0):
        metrics = plain if w == run.default_guide_scale else rollout_and_score(
            run, NUM_VIDEOS, K, LENGTH, HistoryGuidance("none"), num_steps=SAMPLING_STEPS, eta=SAMPLING_ETA,
            guide_scale=w)[2]
        faults = metrics["faults"]["all"]
        print(f"autoguidance w = {w:g}: position error {px(metrics['position_error_first'])} over the first 8, "
              f"balls found {metrics['found_share']:.1%}, well-formed {metrics['well_formed_share']:.1%}, "
              f"motion ratio {ratio(metrics['motion_ratio'])}; frames with a ball missing {faults['missing']:.1%}, "
              f"with stray colour {faults['stray colour']:.1%}")

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
        run, NUM_VIDEOS, K, LENGTH, guidance, num_steps=SAMPLING_STEPS, eta=SAMPLING_ETA,
        stabilization_level=stabilization)[2]
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
# the DFoT paper (Song et al. 2025) reports that at large scales videos go static (its fractional guidance was designed
# against that).  Measure it, by the motion ratio against the unguided rollout above.  On the lesson's
# model (3000 steps) the opposite happened when this was written: no guidance 0.99, vanilla s = 6 3.77 —
# pushed that hard, the balls jitter far more than they truly move; a frozen video is one way strong
# guidance fails, not the only one.

# %%
_, _, strong = rollout_and_score(run, NUM_VIDEOS, K, LENGTH, HistoryGuidance("vanilla", STRONG),
                                 num_steps=SAMPLING_STEPS, eta=SAMPLING_ETA)
print(f"motion ratio (generated displacement per frame / true): no guidance {ratio(plain['motion_ratio'])}, "
      f"vanilla s = {STRONG:g} {ratio(strong['motion_ratio'])}")
print(f"balls still move (ratio >= 0.25): no guidance {plain['moves']}, vanilla s = {STRONG:g} {strong['moves']}")

# %% [markdown]
# ## What to remember
# - A video longer than the window is rolled out window by window; each window's history holds
#   frames the model made, so errors compound over time.
# - Count the steps: fewer calls to a model that errs can be the better sampler, and the cheaper one,
#   for the next few frames; over a long rollout more steps, with fresh noise (η = 1), kept more balls whole
#   on the bench's model, which made them the library's default.
# - History guidance is classifier-free guidance with the history as the condition, dropped by
#   noising it; a diffusion-forcing model provides every branch with no extra training.  s = 1 is
#   the unguided model, exactly.
# - Strong history guidance is reported to trade motion for consistency (videos freeze).  Measure
#   motion, not only position error: a frozen video keeps its balls perfectly formed.
# - Autoguidance by the run's own early EMA costs no training and finds balls that would have faded;
#   a mild scale helps, a strong one deforms them.
# - Exercise: `python -m lessons.exercises.check 10` — write vanilla history guidance: its two
#   branches in one batch, and their combination.

# %%
print(f"lesson 10 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
