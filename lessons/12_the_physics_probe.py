# %% [markdown]
# # Lesson 12 — The physics probe: does the DiT know a video is impossible?
#
# Lesson 08 made impossible twins: videos identical to a plausible one up to an event frame, after
# which a law breaks (a ball teleports or vanishes, gravity reverses, a bounce gains energy).  A model
# that has learned physics should treat the two differently.  This lesson asks whether that difference
# can be read off the video DiT's hidden states by a *linear probe* — a logistic regression from pooled
# activations to "plausible or impossible" — and, above all, how to measure that without fooling
# ourselves: the twins, the choice among many places in the network, the tuning of the probe and the
# lack of a baseline each leak into a naive figure.  The whole experiment is one library call,
# `videodiff.interp.experiment.run_probe_experiment` (what `python -m videodiff probe` runs); the lesson
# explains its parts, runs it at a size that fits the lesson's time, and reads what it measured.
#
# Run:   python lessons/12_the_physics_probe.py   (figures in runs/lessons/12_the_physics_probe/)
# Time:  about 4 min on a 2-core CPU with lessons 08 and 09's checkpoints present (measured: 259 s on an
#        idle 2-core machine, both cores in use; 246 s with the 192-wide DiT of today's recipe on a later machine;
#        404 s with the scene-labelled DiT of 2026-12-04 on a slower 2-core machine, AVX-512 BF16 and no AMX
#        (`python lessons/run_all.py 08 09 10 11 12`, idle).

# %%
import time
from collections import Counter

import numpy as np

from videodiff.interp.activations import pool_tokens
from videodiff.interp.experiment import (ProbeExperimentConfig, held_history_frames, pair_windows, quick_probe_config,
                                         run_probe_experiment)
from videodiff.interp.probes import grouped_folds, nested_probe
from videodiff.interp.trajectories import invert_video, sample_video
from videodiff.plots import save_frame_strips

from lesson_setup import QUICK, shared_video_model, start_lesson  # noqa: E402

OUT = start_lesson("12_the_physics_probe")
# The lesson's size, chosen to fit its time: the command line's 200 pairs, three sites (residual stream,
# attention and MLP outputs) and 10 inversion steps, but a sweep to 10 steps rather than 20 and 99
# relabellings for the permutation null rather than 199 (the smallest p it can give is 1/100).  Each
# relabelling reruns the whole nested probe; batched together (probes.nested_statistics) the 99 took
# about a minute when this was written, as long as the intervention sweep.  `python -m videodiff probe
# --checkpoint ...` runs the full size.  Quick mode: smoke-test sizes, its figures mean nothing.
CONFIG = quick_probe_config() if QUICK else ProbeExperimentConfig(step_sweep=(1, 2, 5, 10), num_permutations=99)
started = time.perf_counter()

# %% [markdown]
# ## Matched pairs
# Each plausible video comes with an impossible twin drawn from the same seed: same balls, same start,
# same frames up to the event.  The probe sees a window of the model's W frames cut around the event
# (it starts `frames_before_event` frames before it), so both twins of a pair are shown the same span
# of time, and the only difference between them is the event and what follows.  Any feature that
# separates them has to come from there.

# %%
run = shared_video_model()
model, schedule = run.model.eval(), run.schedule
windows = pair_windows(run, CONFIG)
P, W = CONFIG.num_pairs, run.window
plausible, impossible = windows.frames[:P], windows.frames[P:]                   # (P, W, height, width, 3) each
offsets = windows.event_offset[:P]
same_before = all(np.array_equal(plausible[i, :offsets[i]], impossible[i, :offsets[i]]) for i in range(P))
differ_at_event = sum(not np.array_equal(plausible[i, offsets[i]], impossible[i, offsets[i]]) for i in range(P))
print(f"{P} pairs, {2 * P} videos, windows of W = {W} frames; labels: {int(windows.labels.sum())} plausible, "
      f"{int((windows.labels == 0).sum())} impossible")
print(f"kinds of impossibility (pairs each): {dict(sorted(Counter(windows.kinds[:P].tolist()).items()))}")
print(f"event frame within the window (pairs each): {dict(sorted(Counter(offsets.tolist()).items()))}")
print(f"twins identical before their event: {same_before}; different at the event frame: {differ_at_event} of {P}")

# %%
common = Counter(offsets.tolist()).most_common(1)[0][0]                          # one event column for the figure
shown = [i for i in range(P) if offsets[i] == common][:3]
print("wrote", save_frame_strips(
    [video for i in shown for video in (plausible[i], impossible[i])],
    [f"{windows.kinds[i]}\n{label}" for i in shown for label in ("plausible", "impossible")],
    OUT / "impossible_pairs.png", num_context=common,
    title=f"Twins, identical until the event (red: frame {common} on)"))

# %% [markdown]
# ## What the probe reads: pooled states along a DDIM inversion
# The DiT's activations depend on the noise level it is shown, and a clean video at t = 0 is only one
# of the levels it was trained on.  DDIM run backwards (lesson 03) turns the video's latents into the
# noise that deterministic sampling would turn back into it (exactly so only in the limit of small
# steps), evaluating the model at a ladder of levels on the way: the model's own trajectory for *that*
# video.  At every level the residual stream after every block, and each block's attention and MLP
# outputs (the three *sites*), are averaged over the window's tokens: one vector of D numbers per video and
# *cell* (site, block, level).  Averaging keeps a linear probe honest in size: a few hundred videos
# cannot support a probe on all T · D numbers of a site.
#
# One thing sets a diffusion-forcing model apart from the image DiT here: most of its training clips
# began with a clean history (lesson 09), and a rollout shows it one (lesson 10).  So the window's first
# frames — the history before the event, the same in both twins — are held clean along the inversion, at
# the clean level with their latents, and only the frames from the event on travel to noise: the model is
# asked what it was trained to answer, how this history goes on, while the frames that followed it are
# shown at each noise level.  `ProbeExperimentConfig(history_frames=0)` (`--history-frames 0`) inverts
# every frame instead, as one would probe a model that was never shown a clean history.
#
# The model is called here without a scene label, that is with its null label (lesson 09: a tenth of
# its training clips were shown it), so the probe reads what the model makes of the frames alone, as
# the probes of models trained before scene labels did.  The label would not give the answer away (it
# names the colours of a video's first frame, which both twins share), but it is not the frames either.

# %%
history = held_history_frames(run, CONFIG)                                      # the run's trained history
latents = run.encode(windows.frames[[0, P]])                                    # (2, W, C, h, w): pair 0's twins
trajectory = invert_video(model, latents, schedule, num_steps=CONFIG.inversion_steps, history_frames=history,
                          prediction_type=run.config.prediction_type, names=["resid_post"], select=pool_tokens)
back = sample_video(model, trajectory.end, schedule, num_steps=CONFIG.inversion_steps, history_frames=history,
                    prediction_type=run.config.prediction_type).end
level = trajectory.levels[-1]
print(f"the first {history} of the window's {W} frames held clean; the event is frame {offsets[0]} of pair 0's window")
print(f"DDIM inversion in {CONFIG.inversion_steps} steps evaluates the model at levels {trajectory.levels}")
pooled = trajectory.caches[level]["resid_post", 0]                              # (2, D)
print(f"at level {level}: resid_post of block 0 pooled over tokens {tuple(pooled.shape)} (videos, D); cells per site:"
      f" {model.config.depth} blocks x {len(trajectory.levels)} levels")
print(f"inverted, then sampled back in {CONFIG.inversion_steps} steps: relative error "
      f"{((back - latents).norm() / latents.norm()).item():.3f} (the round trip is exact only in the limit of small "
      f"steps; the probe reads the states along the way either way)")

# %% [markdown]
# ## Honest evaluation: what leaks, and what closes each leak
# - A video's twin shares its whole set-up.  If one twin is in the training folds and the other in the
#   test fold, the probe can succeed by recognising the set-up.  Closed by *grouped* folds: a pair lies
#   wholly in one fold.
# - Standardising the features with the mean and std of all rows lets the test rows shape the training.
#   Closed by standardising with the training rows only (inside `fit_logistic`).
# - Tuning the L2 strength on the test fold.  Closed by inner grouped folds on the training rows.
# - Picking the best of many cells by its test accuracy.  Closed by *nesting*: the cell is chosen on
#   inner folds, and reported on outer folds it never saw.
# - A figure without a baseline.  Closed by the same procedure on the VAE latents the DiT starts from,
#   on the noisy latents x_t themselves, on a DiT of the same shape with random weights, and under
#   permuted labels (the permutation null), plus a control task (Hewitt and Liang 2019) for what the
#   probe's capacity alone decodes.
# First the folds: ordinary folds (every video its own group) split pairs; grouped folds never do.

# %%
def split_pairs(folds) -> int:
    """How many pairs have one twin in a fold's training rows and the other in its test rows."""
    return sum(len(set(windows.pair_ids[train]) & set(windows.pair_ids[test])) for train, test in folds)


print(f"pairs split by ordinary folds (5 folds): {split_pairs(grouped_folds(np.arange(2 * P), 5))}; "
      f"by folds grouped by pair: {split_pairs(grouped_folds(windows.pair_ids, 5))}")

# %% [markdown]
# Then the choice of a cell.  Forty cells of pure noise, no signal anywhere: the best cell's own
# held-out accuracy, picked after looking, is the maximum of forty coin-flip scores; the nested figure
# — chosen on inner folds, scored on outer ones — reports what a fresh set of videos would see.

# %%
rng = np.random.default_rng(0)
noise_cells = {cell: rng.normal(size=(2 * P, 8)) for cell in range(40)}
noise = nested_probe(noise_cells, windows.labels, windows.pair_ids, windows.pair_ids,
                     outer_folds=CONFIG.outer_folds, inner_folds=CONFIG.inner_folds, l2_grid=CONFIG.l2_grid)
print(f"40 cells of pure noise: the best cell picked by its held-out accuracy scores "
      f"{max(noise.cell_accuracy.values()):.3f}; the nested figure is {noise.per_video_accuracy:.3f} (chance 0.5)")

# %% [markdown]
# ## The experiment
# One call runs it all: the pairs, the inversions of the trained and of a random DiT, the nested probes
# over every cell (once per probe seed, each a different split into folds, whose spread is reported), the baselines,
# the permutation null (the whole nested procedure for relabelled pairs, over the best site's cells),
# the control task, leave-one-kind-out, the sweep over inversion steps, and an intervention: noise
# injected into one block at every inversion step, counting how often the best cell's held-out
# verdicts flip.  It writes probe.json (every number), features.npz (every feature the probes were fit
# on) and the two figures.

# %%
print(f"config: {CONFIG.num_pairs} pairs, {CONFIG.inversion_steps} inversion steps, sites {list(CONFIG.sites)}, "
      f"{CONFIG.outer_folds} outer x {CONFIG.inner_folds} inner folds, probe seeds {list(CONFIG.probe_seeds)}, "
      f"{CONFIG.num_permutations} relabellings, step sweep {list(CONFIG.step_sweep)}")
result = run_probe_experiment(run, CONFIG, out_dir=OUT)
print("wrote", OUT / "probe_heatmaps.png")
print("wrote", OUT / "probe_sweeps.png")

# %% [markdown]
# ## The selected cell, against its baselines
# The reported figure is the nested one: per-video accuracy (threshold at margin 0), pairwise accuracy
# (of the two twins, is the plausible one given the higher margin? ties count half) and AUROC, each the
# mean over the probe seeds, ± their spread.  The baselines went through the same procedure.

# %%
best = result["best"]


def figures(entry: dict) -> str:
    return (f"per-video {entry['per_video_accuracy']:.3f} ± {entry['per_video_accuracy_std']:.3f}, pairwise "
            f"{entry['pairwise_accuracy']:.3f}, AUROC {entry['auroc']:.3f}")


print(f"levels of the heatmap: {result['heatmap']['levels']}")
print(f"selected cell: {best['site']}, block {best['block']}, level {best['noise_level']}; chosen per probe seed: "
      + ", ".join(f"({c['site']}, {c['block']}, {c['noise_level']})" for c in best["chosen_cells_per_seed"]))
print(f"trained DiT, nested: {figures(best)}")
for name in ("vae_latent_baseline", "x_t_baseline", "random_init_baseline"):
    print(f"{name:20s}: {figures(result[name])}")
for name, what in (("vae_latent_baseline", "the VAE latents it starts from"), ("x_t_baseline", "the noisy latents x_t"),
                   ("random_init_baseline", "a random DiT of the same shape")):
    difference = best["per_video_accuracy"] - result[name]["per_video_accuracy"]
    print(f"trained DiT against {what}: {difference:+.3f} per-video accuracy "
          f"({'higher' if difference > 0 else 'not higher'})")

# %% [markdown]
# ## Is it more than chance, and more than capacity?
# The permutation null reruns the nested procedure (over the best site's cells, with a smaller L2 grid)
# for pairs whose labels were swapped at random; p = (1 + #{null ≥ observed}) / (1 + N), so the
# smallest p that N relabellings can give is 1 / (N + 1).  The control task gives every video a random
# label fixed by a nuisance attribute (its number of balls and ball 0's colour): a probe can only learn
# it by memorising, so task accuracy minus control accuracy (the *selectivity*) is what the
# representation adds beyond the probe's capacity.

# %%
permutation, control = result["permutation"], result["control_task"]
N = permutation["num_permutations"]
p_value = result["permutation_p_value"]
print(f"permutation null over {permutation['cells']}: observed {permutation['observed']:.3f}, null mean "
      f"{permutation['null_mean']:.3f}, null max {permutation['null_max']:.3f}; p = {p_value:.4f} "
      f"(smallest possible {1 / (N + 1):.4f}, N = {N})")
print(f"at the 5 % level the observed accuracy is {'above' if p_value <= 0.05 else 'not distinguishable from'} "
      f"the null")
if control["accuracy"] is None:
    print("control task: skipped (a fold had one control class only)")
else:
    print(f"control task: accuracy {control['accuracy']:.3f}, task accuracy on the same cells "
          f"{control['task_accuracy_same_cells']:.3f}, selectivity {control['selectivity']:.3f}")

# %% [markdown]
# ## Does it generalise to a kind it never saw, and where does it live?
# Leave one kind out: train on the pairs of every other kind of impossibility, test on the held-out
# kind.  A probe that learned "something broke" transfers; one that learned "a ball vanished" does not.
# The step sweep redoes the inversion with 1, 2, 5, ... steps; the intervention injects noise into one
# block's output at every inversion step and counts the verdicts that flip (a block whose noise flips
# many carries what the probe reads, or feeds it).

# %%
for kind, value in sorted(result["leave_one_type_out"].items()):
    print(f"leave one kind out: {kind:20s} accuracy on the unseen kind {value:.3f}")
for steps, value in sorted(result["inversion_steps"].items(), key=lambda item: int(item[0])):
    print(f"inversion with {int(steps):2d} steps: nested per-video accuracy {value:.3f}")
for block, share in sorted(result["intervention"].items(), key=lambda item: int(item[0])):
    print(f"noise into block {block} (α = {CONFIG.intervention_alpha:g}): verdicts flipped {share:.3f}, "
          f"accuracy then {result['intervention_accuracy'][block]:.3f}")
loto = result["leave_one_type_out"]
above = [kind for kind, value in loto.items() if value > 0.5]
print(f"kinds on which the transferred probe is above 0.5: {len(above)} of {len(loto)}")
flips = result["intervention"]
print(f"the block whose noise flips the most verdicts: block {max(flips, key=flips.get)}")

# %% [markdown]
# ## What to remember
# - A probe's accuracy is a claim about held-out videos only if nothing about them was used to fit,
#   tune or choose it: group twins, standardise on training rows, tune inside, choose the cell inside.
# - Report it next to what the same procedure gives on the inputs (VAE latents, x_t), on a random
#   network of the same shape, under permuted labels, and on a control task.  The DiT "knows" only
#   what it adds over those.
# - Decodable is not used: the intervention and lesson 11's ablations ask whether the model relies on
#   what the probe reads.
# - Exercise: `python -m lessons.exercises.check 12` — write grouped folds, standardisation on the
#   training fold, and the pairwise accuracy.

# %%
print(f"lesson 12 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
