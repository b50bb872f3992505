# %% [markdown]
# # Lesson 07 — Guidance on images: asking for a "red circle"
#
# Lesson 04 steered the spiral model to one arm.  The same two tools now steer the latent DiT of
# lesson 06 to a prompt — a class name such as "red circle":
#
# - **classifier-free guidance**: ε̃ = ε_uncond + s (ε_cond - ε_uncond), one network trained with
#   10% null labels (s = 0: unconditional, s = 1: exactly the conditional model, s > 1: further);
# - **classifier guidance**: the unconditional model plus s times the gradient of a classifier
#   p(label | z_t, t) trained on *noisy latents*, ε̃ = ε - s sqrt(1 - ᾱ_t) ∇ log p(label | z_t).
#
# On images we can measure what guidance buys and what it costs: the grader of lesson 05 gives the
# share of samples of the requested class (accuracy) and the Fréchet distance to real images, each
# next to what real images score.  Then two facts that are often garbled: large scales over-saturate
# (guidance rescale corrects it), and guidance does not let the sampler take fewer steps.
#
# Run:   python lessons/07_guidance_on_images.py      (figures in runs/lessons/07_guidance_on_images/)
# Time:  about 9 min on a 2-core CPU the first time, with the checkpoints of lessons 05 and 06 present
#        (measured: 441 s with `python lessons/run_all.py 07` on an idle 2-core machine, the three
#        orientation models' 800 compiled training steps each included, the noisy-latent classifier
#        present; its 1000 steps, trained once, added about 1.5 min in an earlier measurement), about
#        2 min (143 s) once the extra models exist. On a CPU with native bf16 products (AMX), where the
#        DiTs train under bf16 autocast: 201 s the first time, the noisy-latent classifier included;
#        with those products hidden from the recipe, so that it trains in fp32: 293 s.

# %%
import math
import time
from dataclasses import replace

import torch

from imagediff.classifier import load_noisy_classifier, train_noisy_classifier
from imagediff.data import make_dataset
from imagediff.evaluation import balanced_request, format_sweep, guidance_sweep
from imagediff.levers import grade_by_shape
from imagediff.pipeline import GUIDANCE_RESCALE, encode_images, load_image_diffusion, train_image_diffusion
from imagediff.plots import columns_per_class_grid, save_curves, save_image_grid, save_labelled_rows

from lesson_setup import (DATASET_OPTIONS, IMAGE_SIZE, NOISY, PROMPTS, QUICK, finished,  # noqa: E402
                          latent_recipe, noisy_classifier_recipe, shared_grader, shared_latent_model, shared_vae,
                          start_lesson)

OUT = start_lesson("07_guidance_on_images")
SCALES = [0.0, 1.0, 3.0, 5.0, 7.0]
PER_CLASS = 8 if QUICK else 6            # samples per class in every measurement
SAMPLING_STEPS = 10 if QUICK else 25     # DDIM steps, unless a cell says otherwise
STEP_COUNTS = [3, 5, 10] if QUICK else [5, 10, 25, 50]
started = time.perf_counter()

# %% [markdown]
# ## The model and the grader
# The latent DiT of lesson 06 (trained now if it is missing) and the grader of lesson 05, built for
# as many real images as we will score samples (a Fréchet distance is only comparable between sets
# of the same size).

# %%
run = shared_latent_model()
num_classes = len(run.class_names)
grader = shared_grader(num_images=num_classes * PER_CLASS)
print(f"{num_classes} classes; every measurement draws {PER_CLASS} samples of each ({num_classes * PER_CLASS} in all) "
      f"with DDIM, {SAMPLING_STEPS} steps")
print(f"real held-out images: accuracy {grader.reference['accuracy']:.3f}, Fréchet distance "
      f"{grader.reference['frechet_distance']:.2f} (the floor: two sets of real images)")
prompt_labels = [prompt for prompt in PROMPTS for _ in range(2)]  # two samples per prompt for the figures

# %% [markdown]
# ## Classifier-free guidance, s = 0, 1, 3, 5, 7
# The same starting noise in every row, two samples per prompt.  s = 0 ignores the prompt: the
# unconditional model draws any class.  s = 1 is the conditional model.  Larger s pushes each sample
# further from what the unconditional model would draw, towards what is most typical of the prompt:
# cleaner, more saturated, and more alike (the two samples of a prompt converge).
#
# Every sample of this lesson is drawn with plain guidance (`rescale=0.0`), to show what guidance itself
# does, except in the section on guidance rescale, which the sampler adds by default above s = 1.

# %%
rows = [run.sample(labels=prompt_labels, guidance_scale=scale, rescale=0.0, num_steps=SAMPLING_STEPS, seed=0)
        for scale in SCALES]
print("wrote", save_labelled_rows(rows, [f"s = {scale:g}" for scale in SCALES], OUT / "cfg_grid.png",
                                  f"Classifier-free guidance at s = 0 … 7 (DDIM {SAMPLING_STEPS} steps, same noise "
                                  "in every row)"))
print(f"columns: {', '.join(prompt_labels)}")

# %% [markdown]
# ## What guidance buys and what it costs
# `guidance_sweep` draws the same balanced request at every scale (same seeds, so the rows differ only
# by s).  Accuracy should climb from chance at s = 0 towards the real-image ceiling.  The Fréchet
# distance measures the whole distribution: it improves as samples take the right class, then
# worsens again at large s, when samples crowd onto a few typical images and lose the variety of
# the real ones.

# %%
cfg_rows = guidance_sweep(run, grader, SCALES, per_class=PER_CLASS, num_steps=SAMPLING_STEPS, rescale=0.0)
print(format_sweep(cfg_rows, grader.reference, "CFG scale"))
print(f"chance accuracy: {1 / num_classes:.3f}")

# %% [markdown]
# ## Classifier guidance
# A second network, p(label | z_t, t), is trained on noised latents at every t (a small DiT trunk with
# a pooled head), so that its gradient means something all along the sampling path.  It steers the
# *unconditional* pass of the same DiT (the null label): no label reaches the denoiser itself.  It is
# trained once and saved.  First, how well it classifies noisy latents of held-out images:

# %%
noisy_recipe = noisy_classifier_recipe()
checkpoint = NOISY / "checkpoint.pt"
if finished(checkpoint, noisy_recipe.train.steps):
    noisy = load_noisy_classifier(checkpoint)
else:
    noisy = train_noisy_classifier(run, noisy_recipe, out_dir=NOISY)
held_out = make_dataset("shapes", num_classes * PER_CLASS, seed=300, image_size=IMAGE_SIZE, **DATASET_OPTIONS)
clean = encode_images(run.vae, held_out.images)                          # (N, 4, h, w) scaled latents
T = run.schedule.num_timesteps
for t_value in (0, T // 4, T // 2, 3 * T // 4):
    t = torch.full((len(clean),), t_value)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(t_value))
    with torch.no_grad():
        predicted = noisy(run.schedule.add_noise(clean, noise, t), t).argmax(dim=1)
    print(f"noisy-latent classifier at t = {t_value:3d}: accuracy {(predicted == held_out.labels).double().mean():.3f} "
          f"(chance {1 / num_classes:.3f}, the floor)")

# %%
classifier_rows = guidance_sweep(run, grader, SCALES, per_class=PER_CLASS, classifier=noisy, num_steps=SAMPLING_STEPS)
print(format_sweep(classifier_rows, grader.reference, "classifier scale"))
rows = [run.sample(labels=prompt_labels, guidance_scale=scale, classifier=noisy, num_steps=SAMPLING_STEPS, seed=0)
        for scale in SCALES]
print("wrote", save_labelled_rows(rows, [f"s = {scale:g}" for scale in SCALES], OUT / "classifier_guidance_grid.png",
                                  "Classifier guidance of the unconditional DiT by a noisy-latent classifier"))

# %%
for key, short, label, logy in (("accuracy", "accuracy", "accuracy (requested class)", False),
                                ("frechet_distance", "Fréchet distance", "Fréchet distance to real images", True)):
    curves = {"classifier-free guidance": (SCALES, [row[key] for row in cfg_rows]),
              "classifier guidance": (SCALES, [row[key] for row in classifier_rows])}
    print("wrote", save_curves(curves, OUT / f"guidance_{key}.png", "guidance scale s", label,
                               f"Guidance on images: {short} over s", reference=grader.reference[key], logy=logy))

# %% [markdown]
# Both kinds steer towards the prompt; neither is free.  Classifier guidance needs a second network, and a
# backward pass through it at every step; it pushes the sample towards whatever makes *that*
# classifier confident, which is not always what makes the image right.  That is why the grader is a
# separate network on clean pixels: a sampler steered by its own judge would be graded on fooling it.
#
# ## Large scales over-saturate; guidance rescale
# At large s, ε̃ = ε_cond + (s - 1)(ε_cond - ε_uncond) is an extrapolation: its standard deviation
# grows beyond that of any prediction the network was trained to make, and the sampled latents come
# out with more contrast than real latents have (whose std is 1, by lesson 05's scale factor).
# Guidance rescale (Lin et al. 2024) rescales each guided prediction to the std of the conditional
# one, and blends: φ · rescaled + (1 - φ) · guided.  φ = 0.7 is the paper's choice.
#
# The sampler rescales by default wherever guidance extrapolates (s > 1), with φ = 1
# (`imagediff.pipeline.GUIDANCE_RESCALE`, `default_rescale`): on two of the bench's models at s = 3 (504
# samples, two seeds each) the Fréchet distance fell from 48.8–54.2 to 28.8–31.5 with φ = 1 and to
# 35.8–39.0 with φ = 0.7, while accuracy fell by one and a half to two points (0.976–0.992 to 0.962–0.974):
# much of what large s costs in variety is the inflated spread, not the direction (docs/image_levers.md).
# At s <= 1 nothing extrapolates, and s = 0 stays the unconditional model, s = 1 the conditional one.
# This lesson's model, trained for fewer steps, pays more: a full-mode run measured 0.952 / 88 at s = 3
# without rescale and 0.913 / 60 with φ = 1 (252 samples, 25 steps).

# %%
labels = balanced_request(num_classes, PER_CLASS)
real_std = clean.std().item()
picks = torch.cat([torch.nonzero(labels == run.class_index(prompt))[:2, 0] for prompt in PROMPTS])
rescale_rows, titles = [], []
for scale, rescale in ((1.0, 0.0), (3.0, 0.0), (3.0, GUIDANCE_RESCALE), (SCALES[-1], 0.0), (SCALES[-1], 0.7)):
    images, latents = run.sample(labels=labels, guidance_scale=scale, rescale=rescale, num_steps=SAMPLING_STEPS,
                                 seed=0, return_samples=True)
    score = grader.score(images, labels)
    print(f"s = {scale:g}, φ = {rescale:g}: std of the sampled latents {latents.std():.3f} (real latents: "
          f"{real_std:.3f}); accuracy {score['accuracy']:.3f}, Fréchet distance {score['frechet_distance']:.2f}")
    rescale_rows.append(images[picks])
    titles.append(f"s = {scale:g}\nφ = {rescale:g}")
print(f"{'real images':>16}: accuracy {grader.reference['accuracy']:.3f}, Fréchet distance "
      f"{grader.reference['frechet_distance']:.2f}")
print("wrote", save_labelled_rows(rescale_rows, titles, OUT / "guidance_rescale.png",
                                  "Guidance rescale pulls the latents' spread back"))

# %% [markdown]
# ## Guidance does not reduce the number of steps
# Some introductions to diffusion say that classifier-free guidance "accelerates the sampling
# process".  It does not.  Guidance changes the *direction* of each step (towards the prompt); how
# many steps the sampler needs to follow its path accurately is a property of the sampler and of
# the path's curvature.  Compare each scale with itself: few steps are worse than many whatever s is —
# and every guided step (s other than 0 and 1) runs the network twice, conditional and
# unconditional, so a guided sample costs nearly twice as much, step for step (a little less where
# decoding and other fixed costs weigh in, as with the tiny models of quick mode).

# %%
step_rows = {scale: [] for scale in (1.0, 3.0)}
for num_steps in STEP_COUNTS:
    for row in guidance_sweep(run, grader, (1.0, 3.0), per_class=PER_CLASS, num_steps=num_steps, rescale=0.0):
        step_rows[row["scale"]].append(row)
        print(f"{num_steps:3d} DDIM steps, s = {row['scale']:g}: accuracy {row['accuracy']:.3f}, Fréchet distance "
              f"{row['frechet_distance']:8.2f}, {row['seconds']:6.2f} s")
print(f"real images: accuracy {grader.reference['accuracy']:.3f}, Fréchet distance "
      f"{grader.reference['frechet_distance']:.2f}")
ratio = sum(r["seconds"] for r in step_rows[3.0]) / sum(r["seconds"] for r in step_rows[1.0])
print(f"a guided sample (s = 3) took {ratio:.1f}x the time of an unguided one (s = 1), for the same number of steps")
print("wrote", save_curves({f"s = {scale:g}": (STEP_COUNTS, [r["frechet_distance"] for r in entries])
                            for scale, entries in step_rows.items()},
                           OUT / "steps_and_guidance.png", "DDIM steps", "Fréchet distance to real images",
                           "Guided or not, fewer steps give worse samples",
                           reference=grader.reference["frechet_distance"], logy=True))

# %% [markdown]
# ## Why the recipe learns every shape upright: choosing an angle, or drawing every angle?
# Every shape in the data set is drawn at a random angle, and that brings two difficulties.  Early in
# sampling the best guess of x_0 for "red square" is the average over all angles — a disc — so the
# sampler must *choose* an angle and keep every token to it.  And the network must learn to *draw* a
# square at every angle, with edges that cross the latent grid at any slant: every (class,
# orientation) pair is another picture to learn, seen proportionally less often.
#
# Three models of the same recipe, each for fewer steps than the model above, pull the two apart:
# - **every angle**: the DiT learns the images as they are (`canonical_frame=False`): it must choose
#   an angle and draw every one;
# - **told the angle**: the same images, and the DiT is also given each image's angle
#   (`DiTConfig.angle_conditioning`: the data set records it, and a table of 64 angle bins, embedded
#   like the label, is added to the condition c).  Sampling draws an angle per image from the training
#   range, so nothing is left to choose — but every orientation must still be drawn;
# - **own frame** (the recipe's default, `DiffusionRunConfig.canonical_frame`): the DiT learns every
#   shape upright — the same draws of size, position and colour at angle 0 — and the sampler turns each
#   decoded sample by an angle drawn from the training angles, about the centre of what it drew
#   (`imagediff.data.shapes.turn_images`).  Nothing to choose, and one orientation to draw.
#
# All three are graded on the turned shapes of the data set by the same classifier.

# %%
EXPERIMENT_STEPS = 100 if QUICK else 800
own_recipe = latent_recipe()
own_recipe.train = replace(own_recipe.train, steps=EXPERIMENT_STEPS,
                           warmup_steps=min(own_recipe.train.warmup_steps, EXPERIMENT_STEPS // 10))
recipes = {"own frame": own_recipe,
           "every angle": replace(own_recipe, canonical_frame=False),
           "told the angle": replace(own_recipe, canonical_frame=False,
                                     dit=replace(own_recipe.dit, angle_conditioning=True, angle_bins=64))}
models = {}
for name, recipe in recipes.items():
    checkpoint = OUT / name.replace(" ", "_") / "checkpoint.pt"
    if finished(checkpoint, EXPERIMENT_STEPS, recipe):
        models[name] = load_image_diffusion(checkpoint)
    else:
        models[name] = train_image_diffusion(recipe, out_dir=checkpoint.parent, vae=shared_vae().vae)
labels = balanced_request(num_classes, PER_CLASS)
for name, model in models.items():
    drawn = model.sample(labels=labels, guidance_scale=3.0, rescale=0.0, num_steps=SAMPLING_STEPS, seed=0)
    predicted = grader.classifier.predict(drawn.clamp(-1, 1))[0].argmax(dim=1)
    grade = grade_by_shape(model.class_names, labels, predicted)
    print(f"{name}, {EXPERIMENT_STEPS} steps: accuracy {(predicted == labels).float().mean().item():.3f} at s = 3; "
          + ", ".join(f"{shape} {accuracy:.2f}" for shape, accuracy in grade["per_shape_accuracy"].items()))
    wrong = {shape: max((n, other) for other, n in seen.items() if other != shape)
             for shape, seen in grade["shape_confusion"].items()}
    print("  most often seen instead: " + ", ".join(f"{shape} -> {other} ({n})" for shape, (n, other) in wrong.items() if n))
    one_each = model.sample(labels=balanced_request(num_classes, 1), guidance_scale=3.0, rescale=0.0,
                            num_steps=SAMPLING_STEPS, seed=1)
    print("wrote", save_image_grid(one_each, OUT / f"{name.replace(' ', '_')}_samples.png",
                                   columns=columns_per_class_grid(model.class_names),
                                   title=f"{name}, {EXPERIMENT_STEPS} training steps, s = 3"))
# What the own-frame model draws before it is turned: the same noise, angle 0.
upright = models["own frame"].sample(labels=balanced_request(num_classes, 1), guidance_scale=3.0, rescale=0.0,
                                     num_steps=SAMPLING_STEPS, seed=1, angles=0.0)
print("wrote", save_image_grid(upright, OUT / "own_frame_upright_samples.png",
                               columns=columns_per_class_grid(models["own frame"].class_names),
                               title=f"own frame, {EXPERIMENT_STEPS} training steps, s = 3, before turning"))

# %% [markdown]
# Does the told model use the angle it is given?  Ask it for squares and triangles at 0°, 15°, ..., 75°:
# a model that draws what it is told turns the shape along each row and keeps its corners.

# %%
turns = [k * 15.0 for k in range(6)]
turn_prompts = ["red cross", "blue cross"] if QUICK else ["red square", "blue triangle"]
turned = models["told the angle"].sample(labels=[prompt for prompt in turn_prompts for _ in turns],
                                         angles=[math.radians(a) for a in turns] * len(turn_prompts),
                                         guidance_scale=3.0, rescale=0.0, num_steps=SAMPLING_STEPS, seed=3)
print("wrote", save_image_grid(turned, OUT / "told_the_angle_turned.png", columns=len(turns),
                               title=f"told the angle: {', '.join(turn_prompts)} at 0°, 15°, ..., 75°"))

# %% [markdown]
# A full-mode run measured, at 800 steps each: own frame 0.643 (squares 0.61, triangles 0.78, diamonds
# 0.81), every angle 0.456 (squares 0.19, triangles 0.11, diamonds 0.33), told the angle 0.405.  The
# model told the angle does not draw better than the one that must choose: removing the choice leaves
# the drawing, and the drawing is what fails.  Removing the *drawing of every angle* is what works, and
# it keeps working: the lesson-06 model, which learns upright for 2000 steps, reached 0.952 in the sweep
# above, and the bench's (3000 steps) 0.976; the same recipe learning every angle reached at most 0.75
# at every budget measured: 0.48-0.63 in the lever tables of docs/image_levers.md (where the two are
# compared at equal wall time), 0.72-0.75 autoguided.  The turn itself is exact geometry, not learned: the data set is the
# same under any rotation, so a model of the upright shapes and a random angle is a model of the data set.  It needs
# to know each training image's angle, which this generator records and a folder of photographs would
# not: there the symmetry has to be learned, or built into the network.
#
# ## Guiding the model away from its younger self
# CFG buys accuracy by moving away from the unconditional guess, and pays in variety (the Fréchet
# distance above worsens past a moderate s).  **Autoguidance** (Karras et al. 2024) compares the model
# with a *weaker* model of the same prompt instead:
#
#     D_guided = D(x | c) + (s - 1)(D(x | c) - D(x | ∅)) + (w - 1)(D(x | c) - D_weak(x | c))
#
# Both blur what they cannot resolve, but the weak one blurs more, so the last term points away from
# blur — towards sharper samples of the same prompt, without pushing them all towards the most typical
# one.  (Learning every angle, where the conditional guess for "red square" is a disc, it is what brought
# the squares back: docs/image_levers.md.)  The weak model costs nothing here: the training loop kept the
# EMA weights after 15% of the steps in the checkpoint (`run.guide`), and `sample(guide_scale=w)` adds the
# term (w = 1: off).  Compare the shapes, and the Fréchet distance, with and without it.

# %%
print(f"the guide: the EMA weights at step {run.config.guide_step()} of {run.config.train.steps}")
for scale, guide_scale in ((3.0, 1.0), (1.0, 2.0), (2.0, 2.0)):
    drawn = run.sample(labels=labels, guidance_scale=scale, guide_scale=guide_scale, rescale=0.0,
                       num_steps=SAMPLING_STEPS, seed=0)
    score = grader.score(drawn, labels)
    predicted = grader.classifier.predict(drawn.clamp(-1, 1))[0].argmax(dim=1)
    per_shape = grade_by_shape(run.class_names, labels, predicted)["per_shape_accuracy"]
    print(f"CFG s = {scale:g}, autoguidance w = {guide_scale:g}: accuracy {score['accuracy']:.3f}, Fréchet distance "
          f"{score['frechet_distance']:.1f}; " + ", ".join(f"{shape} {value:.2f}" for shape, value in per_shape.items()))
one_each = run.sample(labels=balanced_request(num_classes, 1), guidance_scale=2.0, guide_scale=2.0, rescale=0.0,
                      num_steps=SAMPLING_STEPS, seed=1)
print("wrote", save_image_grid(one_each, OUT / "autoguided_samples.png", columns=columns_per_class_grid(run.class_names),
                               title="CFG s = 2 with autoguidance w = 2 by the run's early EMA"))

# %% [markdown]
# Read the Fréchet distance.  On this lesson's model (2000 steps) a full-mode run measured 0.952 of the
# samples right and a distance of 88 with CFG alone at s = 3 (real images: 16.7), 0.873 and 42 with
# autoguidance alone (s = 1, w = 2), and 0.940 and 69 with both (s = 2, w = 2): autoguidance keeps most
# of the accuracy and more than halves the distance.  On the bench's default model (3000 steps,
# docs/image_levers.md) CFG 3 reads 0.976 / 48.8, autoguidance alone 0.942 / 19.2, both 0.978 / 29.4.

# %% [markdown]
# ## What to remember
# - Classifier-free guidance trades diversity for adherence to the prompt: accuracy rises with s,
#   the Fréchet distance is best at a moderate s and worsens beyond it.
# - Classifier guidance does the same with a second network trained on noisy latents; the grader
#   must be yet another network, trained on clean pixels.
# - Large scales inflate the spread of the prediction; guidance rescale pulls it back, and the sampler
#   applies it by default above s = 1 (φ = 1), which cut the Fréchet distance at s = 3 by 32% and 41%
#   in two full-mode runs of this lesson, by 35–45% on the bench's model (docs/image_levers.md).
# - Guidance does not reduce the number of sampling steps; a guided step costs two network passes.
# - What the image DiT finds hard is drawing each shape at many angles, more than choosing one: told the
#   angle, it still draws blobs.  So the recipe learns every shape upright, in its own frame, and turns
#   each sample to a drawn angle — a symmetry built in (canonicalisation), not learned.
# - Autoguidance — guiding away from a weaker version of the model, here its own early EMA weights —
#   sharpens the samples without crowding them onto the most typical one, at no extra training cost.
# - Exercise: `python -m lessons.exercises.check 07` — write guidance rescale and the Fréchet distance.

# %%
print(f"lesson 07 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
