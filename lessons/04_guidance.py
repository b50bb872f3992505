# %% [markdown]
# # Lesson 04 — Guidance: asking for one arm of the spiral
#
# So far the model drew points from the whole spiral.  Now we ask for one arm.  The spiral model of
# lesson 02 was trained *with* labels (the arm), and one time in five with the label replaced by a
# reserved "null" label: so the one network knows both p(x | arm) and p(x).  Two ways to steer it:
#
# - **classifier-free guidance** (Ho & Salimans 2022): ε̃ = ε_uncond + s (ε_cond - ε_uncond).
#   s = 0 is the unconditional model, s = 1 is *exactly* the conditional model, s > 1 pushes further
#   away from the unconditional answer: sharper conditioning, less diversity.
# - **classifier guidance** (Dhariwal & Nichol 2021): add the gradient of a classifier trained on
#   noisy points to the score, ∇ log p_t(x) + s ∇ log p(y | x_t), i.e. ε̃ = ε - s sqrt(1 - ᾱ_t) ∇ log p(y | x_t).
#
# Guidance changes *where* samples go; it does not make sampling need fewer steps — a guided step
# even costs two network passes instead of one.
#
# Run:   python lessons/04_guidance.py      (figures in runs/lessons/04_guidance/)
# Time:  about 15 s on a 2-core CPU the first time, with the checkpoint of lesson 02 present
#        (measured: 14 s, the noisy classifier's training included).
#        Measured with `make lessons` on an idle 2-core machine, both cores in use.

# %%
import time

import torch

from toydiff import plots
from toydiff.data import make_dataset
from toydiff.experiment import (ToyRunConfig, load_noisy_classifier, load_toy_model, train_noisy_classifier,
                                train_toy_model)
from toydiff.metrics import compare_to_data, energy_distance, format_comparison
from toydiff.training import TrainConfig

from lesson_setup import QUICK, SPIRAL, start_lesson  # noqa: E402 (sibling module)

OUT = start_lesson("04_guidance")
NUM_SAMPLES = 200 if QUICK else 1000
ARM = 0  # the arm we ask for
SCALES = [0.0, 1.0, 2.0, 4.0]
started = time.perf_counter()

# %%
recipe = ToyRunConfig()
if QUICK:
    recipe.train = TrainConfig(steps=200, batch_size=256, log_every=50, progress=False)
checkpoint = SPIRAL / "checkpoint.pt"
run = load_toy_model(checkpoint) if checkpoint.exists() else train_toy_model(recipe, out_dir=SPIRAL)
schedule, T = run.schedule, run.schedule.num_timesteps
print(f"classes: {', '.join(run.class_names)}; label dropout in training: {run.config.label_dropout}; "
      f"null label: {run.model.null_label}")

# %% [markdown]
# ## Measuring "on the requested arm"
# A sample counts as on arm k when its nearest neighbour in a large labelled draw of real data
# belongs to arm k *and* is closer than 0.1 (a tenth of the data's standard deviation, about half an
# arm's width): a point in the gap between two arms is on neither.  Real data of one arm scores
# close to, not always exactly, 100%: near the centre the arms touch.

# %%
reference, reference_labels = make_dataset("spiral", 6000, seed=40)


def on_arm_fraction(points: torch.Tensor, arm: int, radius: float = 0.1) -> float:
    distance, nearest = torch.cdist(points, reference).min(dim=1)  # (N,), (N,)
    return ((reference_labels[nearest] == arm) & (distance < radius)).double().mean().item()


def arm_data(num_points: int, arm: int, seed: int) -> torch.Tensor:
    points, labels = make_dataset("spiral", 4 * num_points, seed=seed)
    return points[labels == arm][:num_points]


arm_fresh, arm_second_fresh = arm_data(NUM_SAMPLES, ARM, 41), arm_data(NUM_SAMPLES, ARM, 42)
print(f"real data of arm {ARM}: {100 * on_arm_fraction(arm_fresh, ARM):.1f}% on arm {ARM} (the ceiling)")


def report(name: str, samples: torch.Tensor) -> tuple[float, float]:
    """Print and return the share of samples on the arm, and their energy distance to the arm's data."""
    fraction = on_arm_fraction(samples, ARM)
    quality = compare_to_data(samples, arm_fresh, arm_second_fresh)
    print(f"{name:34s} on arm {ARM}: {100 * fraction:5.1f}%   against arm-{ARM} data: {format_comparison(quality)}")
    return fraction, quality["energy_distance"]["value"]


arm_floor = energy_distance(arm_second_fresh, arm_fresh)  # the floor: real arm data against real arm data


# %% [markdown]
# ## s = 1 is the conditional model, bit for bit
# toydiff writes the combination as ε_cond + (s - 1)(ε_cond - ε_uncond), so at s = 1 it returns the
# conditional output exactly (and skips the unconditional pass).

# %%
x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
t = torch.full((8,), T // 2, dtype=torch.int64)
labels = torch.full((8,), ARM, dtype=torch.int64)
with torch.no_grad():
    guided_at_one = run.denoiser(label=ARM, guidance_scale=1.0, batch_size=8)(x, t)
    conditional = run.model(x, t, labels)
print(f"CFG at s = 1 equals the conditional model bit for bit: {torch.equal(guided_at_one, conditional)}")

# %% [markdown]
# ## Classifier-free guidance: s = 0, 1, 2, 4
# DDIM with 50 steps, asking for arm 0.

# %%
cfg_results, cfg_samples = [], {}
for scale in SCALES:
    samples = run.sample(NUM_SAMPLES, num_steps=50, label=ARM, guidance_scale=scale, seed=0)
    cfg_results.append(report(f"classifier-free, s = {scale:g}", samples))
    cfg_samples[f"classifier-free, s = {scale:g}"] = samples
figure = plots.plot_sample_grid(cfg_samples, f"Classifier-free guidance towards arm {ARM} (DDIM, 50 steps; grey: data)",
                                background=reference)
print("wrote", plots.save_figure(figure, OUT / "classifier_free_guidance.png"))

# %% [markdown]
# s = 0 ignores the label and fills all three arms; s = 1 already mostly stays on the arm; larger s
# concentrates the samples further — at the price of diversity (they crowd onto part of the arm, and
# the distance to the arm's real data stops improving or grows).
#
# ## Guidance does not reduce the number of steps
# Some introductions to diffusion say guidance "accelerates" sampling.  It does not: it changes the
# direction of each step, not how many steps the sampler needs to follow its path accurately.
# Compare each s with itself: 5 steps are worse than 50 whatever the scale, so guidance lets you cut
# no steps — and every guided step (s other than 0 and 1) runs the network twice, conditional and
# unconditional, so a guided sample costs about double.

# %%
for num_steps in (5, 50):
    for scale in (1.0, 4.0):
        tick = time.perf_counter()
        samples = run.sample(NUM_SAMPLES, num_steps=num_steps, label=ARM, guidance_scale=scale, seed=0)
        seconds = time.perf_counter() - tick
        report(f"{num_steps:2d} steps, s = {scale:g} ({seconds:.2f} s)", samples)

# %% [markdown]
# ## Classifier guidance
# A separate classifier p(arm | x_t, t), trained on noised points at random t (so its gradient means
# something all along the sampling path), steers the *unconditional* model.  It is trained once and
# saved next to the model.

# %%
classifier_path = SPIRAL / "classifier.pt"
if classifier_path.exists():
    classifier = load_noisy_classifier(classifier_path)
else:
    steps = 100 if QUICK else 1500
    classifier = train_noisy_classifier(recipe, TrainConfig(steps=steps, progress=not QUICK), out_dir=SPIRAL)
test_points, test_labels = make_dataset("spiral", 2000, seed=43)
for t_value in (0, T // 4, T // 2):
    t_batch = torch.full((len(test_points),), t_value, dtype=torch.int64)
    noisy = schedule.add_noise(test_points, torch.randn(test_points.shape, generator=torch.Generator().manual_seed(1)), t_batch)
    with torch.no_grad():
        accuracy = (classifier(noisy, t_batch).argmax(dim=1) == test_labels).double().mean().item()
    print(f"classifier accuracy on points noised to t = {t_value:3d}: {100 * accuracy:.1f}%")

# %%
classifier_results, classifier_samples = [], {}
for scale in SCALES:
    samples = run.sample(NUM_SAMPLES, num_steps=50, label=ARM, guidance_scale=scale, classifier=classifier, seed=0)
    classifier_results.append(report(f"classifier guidance, s = {scale:g}", samples))
    classifier_samples[f"classifier guidance, s = {scale:g}"] = samples
figure = plots.plot_sample_grid(classifier_samples, f"Classifier guidance of the unconditional model towards arm {ARM} "
                                                    "(DDIM, 50 steps; grey: data)", background=reference)
print("wrote", plots.save_figure(figure, OUT / "classifier_guidance.png"))
figure = plots.plot_sweep(SCALES, {"classifier-free guidance": [100 * r[0] for r in cfg_results],
                                   "classifier guidance": [100 * r[0] for r in classifier_results]},
                          xlabel="guidance scale s", ylabel=f"% of samples on arm {ARM}",
                          floor=100 * on_arm_fraction(arm_fresh, ARM), floor_label=f"real arm-{ARM} data",
                          title=f"Asking for arm {ARM}: share of samples that land on it")
print("wrote", plots.save_figure(figure, OUT / "guidance_sweep.png"))
figure = plots.plot_sweep(SCALES, {"classifier-free guidance": [r[1] for r in cfg_results],
                                   "classifier guidance": [r[1] for r in classifier_results]},
                          xlabel="guidance scale s", ylabel=f"energy distance to arm-{ARM} data", floor=arm_floor,
                          logy=True, title=f"The price of guidance: distance to the whole of arm {ARM} "
                                           "(diversity lost as s grows)")
print("wrote", plots.save_figure(figure, OUT / "guidance_diversity.png"))

# %% [markdown]
# ## The guided score
# Guidance is a change of the score the sampler follows.  Drawn on a grid, the classifier-free
# guided score at s = 4 points onto arm 0 alone, where the unconditional score pointed onto all
# three arms (lesson 03's figure).

# %%
grid_size = 17
guided = run.denoiser(label=ARM, guidance_scale=4.0, batch_size=grid_size**2)
figure = plots.plot_score_field(guided, schedule, [T // 2, T // 5, T // 20], prediction_type=run.config.prediction_type,
                                points=reference, grid_size=grid_size,
                                title=f"Score of the classifier-free guided model (s = 4, arm {ARM}) over the data")
print("wrote", plots.save_figure(figure, OUT / "guided_score_field.png"))

# %% [markdown]
# ## What to remember
# - One network, trained with label dropout, gives both ε_cond and ε_uncond; classifier-free
#   guidance extrapolates from one to the other.  s = 1 *is* the conditional model.
# - Classifier guidance needs a second network trained on noisy inputs, and a gradient per step.
# - Both trade diversity for adherence to the label.  Neither reduces the number of steps.
# - Exercise: `python -m lessons.exercises.check 04` — write both guidance rules yourself.

# %%
print(f"lesson 04 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
