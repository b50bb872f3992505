# %% [markdown]
# # Lesson 02 — Training a denoiser and sampling with DDPM
#
# Lesson 01 turned the spiral into noise.  Here a small network learns to undo it: shown a noised
# point x_t and its timestep t, it predicts the noise ε that was added (DDPM, Ho et al. 2020).
# Sampling then starts from pure noise and removes the predicted noise one step at a time, T steps
# in all, re-noising slightly after each step (Algorithm 2) — and lands on the spiral.
#
# Run:   python lessons/02_training_ddpm.py      (figures in runs/lessons/02_training_ddpm/)
# Time:  about 25 s on a 2-core CPU the first time (measured: 21 s, training included), about 10 s once
#        runs/lessons/spiral/checkpoint.pt exists.
#        Measured with `make lessons` on an idle 2-core machine, both cores in use.
#
# The checkpoint trained here is shared by lessons 03 and 04: it is trained once.

# %%
import time

import torch

from toydiff import plots
from toydiff.data import make_dataset
from toydiff.experiment import ToyRunConfig, build_denoiser, train_toy_model
from toydiff.losses import DiffusionObjective
from toydiff.metrics import compare_to_data, format_comparison
from toydiff.schedules import make_schedule
from toydiff.training import TrainConfig

from lesson_setup import QUICK, SPIRAL, start_lesson  # noqa: E402 (sibling module)

OUT = start_lesson("02_training_ddpm")
NUM_SAMPLES = 300 if QUICK else 2000
started = time.perf_counter()

# %% [markdown]
# ## The recipe
# `ToyRunConfig` holds every choice of the run: the data, the schedule, what the network predicts,
# the network, and the training settings.  Its defaults are the recipe of this project.

# %%
recipe = ToyRunConfig()
if QUICK:
    recipe.train = TrainConfig(steps=200, batch_size=256, log_every=50, progress=False)
print(f"data: {recipe.num_train_points} points of the {recipe.dataset}; schedule: {recipe.schedule}, "
      f"T = {recipe.num_timesteps}; the network predicts {recipe.prediction_type}")
print(f"network: MLP, {recipe.model.num_blocks} residual blocks of width {recipe.model.hidden_dim}, "
      f"{recipe.model.fourier_frequencies} Fourier frequencies of the input")
print(f"training: {recipe.train.steps} steps of batch {recipe.train.batch_size}, learning rate "
      f"{recipe.train.learning_rate}, EMA decay {recipe.train.ema_decay}")

# %% [markdown]
# ## One training step, by hand
# The objective (DDPM eq. 14, "L_simple") is plain regression:
#
#     t ~ U{0 … T-1},  ε ~ N(0, I),  x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,   loss = ‖ε̂(x_t, t) - ε‖²
#
# Before training anything, a baseline: a "network" that always answers ε̂ = 0 scores E‖ε‖² / D = 1
# per coordinate (a little more or less on one batch).  Any useful network must beat it; an untrained
# one does no better.

# %%
schedule = make_schedule(recipe.schedule, recipe.num_timesteps)
T = schedule.num_timesteps
generator = torch.Generator().manual_seed(0)
x0, _ = make_dataset("spiral", 512, seed=2)                                  # (512, 2)
t = torch.randint(0, T, (512,), generator=generator)                        # (512,)
noise = torch.randn(x0.shape, generator=generator)                          # (512, 2)
x_t = schedule.add_noise(x0, noise, t)                                      # (512, 2)
print(f"loss of always predicting ε̂ = 0: {(noise ** 2).mean().item():.3f}")

torch.manual_seed(0)
untrained = build_denoiser(ToyRunConfig()).eval()  # freshly initialised weights
with torch.no_grad():
    by_hand = ((untrained(x_t, t) - noise) ** 2).mean()                     # ‖ε̂(x_t, t) - ε‖², per coordinate
print(f"loss of the untrained network, by hand:     {by_hand.item():.3f}")
# The library's objective does the same for any target, drawing its own t and ε (and, in training,
# dropping labels); here with the recipe's target, explained in the next cell.
loss, _ = DiffusionObjective(schedule, recipe.prediction_type)(untrained, (x0,), generator)
print(f"loss of the untrained network, DiffusionObjective (target {recipe.prediction_type}): {loss.item():.3f}")

# %% [markdown]
# ## Why the recipe predicts v, not ε
# Predicting ε, x_0 or the velocity v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0 is the same regression with a
# different target: given x_t, each determines the other two (`toydiff.parameterisation`), so every
# sampler below works with any of them.  They differ in where errors hurt.  From ε̂ the sampler
# computes x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t), and at high noise sqrt(ᾱ_t) is about 0.006:
# a small error in ε̂ becomes a large one in x̂_0.  Trained with ε, about 0.5% of this project's
# spiral samples (those that start in the far tail of x_T) were pushed outwards and ended at
# |x| > 4, up to |x| = 45.  With v, x̂_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v̂ has no division, and no
# sample ran away.  The ε = 0 baseline above is also the v = 0 baseline: E‖v‖² / D = 1 for
# standardised data (D = 2, the coordinates of a point).

# %% [markdown]
# ## Training
# `train_toy_model` runs the project's one training loop (AdamW, warm-up then cosine decay, gradient
# clipping, an exponential moving average of the weights) on that objective, and writes the
# checkpoint.  Running this lesson again resumes from the checkpoint; once it is complete, nothing
# is retrained.  We sample from the EMA weights, which are smoother than the last step's.

# %%
run = train_toy_model(recipe, out_dir=SPIRAL)
final = run.history[-1]
print(f"trained {final['step']} steps ({run.seconds:.0f} s of training in all sessions); final loss {final['loss']:.4f} "
      f"(the ε̂ = 0 baseline is 1)")

# %% [markdown]
# ## Where is the loss?
# The training loop also logs the loss in ten bins of t.  What is hard depends on the target.  With
# ε-prediction the loss is high at *small* t: there x_t is almost x_0, and the tiny noise in it
# cannot be told apart from the data's own spread; at large t, x_t is almost ε itself and the loss
# is near 0.  With v-prediction, v ≈ ε at small t (just as hard) and v ≈ -x_0 at large t, where the
# clean point cannot be read from nearly pure noise: both ends are hard, and the loss is nearly flat
# across t (about 0.7-0.8 in this project's run).

# %%
print("loss by bin of t (last log interval):")
for index, value in enumerate(final["loss_by_t"]):
    low, high = index * T // len(final["loss_by_t"]), (index + 1) * T // len(final["loss_by_t"]) - 1
    print(f"  t in [{low:4d}, {high:4d}]: {value:.4f}")
figure = plots.plot_training_history(run.history, num_timesteps=T,
                                     title="Training the spiral denoiser: the loss, and the loss by timestep "
                                           f"(target {recipe.prediction_type})")
print("wrote", plots.save_figure(figure, OUT / "training_loss.png"))

# %% [markdown]
# ## Sampling with DDPM
# Ancestral sampling (Algorithm 2) walks t = T-1 … 0.  At each step the network's prediction gives an
# estimate of the clean point — from our recipe's v̂, x̂_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v̂; from an ε̂
# it would be (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t) — and the next point is drawn
# from the posterior q(x_{t-1} | x_t, x̂_0), a Gaussian whose mean mixes x̂_0 and x_t (DDPM eq. 7), and
# no noise is added on the last step.  That is T = 1000 network evaluations per sample.
#
# The network was trained with the arm label (dropped to a null label a fifth of the time, which
# lesson 04 uses). To draw from p(x), `run.sample` first draws each point's arm from the data's
# class frequencies, then x from p(x | arm): exact ancestral sampling, and sharper than the
# null-label pass (`null_label=True`), which learned from only a fifth of the batches.
#
# A callback records the states along the way (every 20th step) for the figures.

# %%
recorder = plots.TrajectoryRecorder(keep_every=max(1, T // 50))
tick = time.perf_counter()
samples = run.sample(NUM_SAMPLES, sampler="ddpm", seed=0, callback=recorder)  # (N, 2)
ddpm_seconds = time.perf_counter() - tick
print(f"DDPM, {T} steps, {NUM_SAMPLES} points: {ddpm_seconds:.1f} s")

# %% [markdown]
# How good are the samples?  We compare them to fresh data with two sample distances, each next to
# its floor: the same distance between two independent draws of real data of the same size.  As a
# yardstick, the starting noise itself is compared the same way.

# %%
fresh, fresh_labels = make_dataset("spiral", NUM_SAMPLES, seed=10)
second_fresh, _ = make_dataset("spiral", NUM_SAMPLES, seed=11)
start = torch.randn(NUM_SAMPLES, 2, generator=torch.Generator().manual_seed(0))
print(f"N(0, I), the start:  {format_comparison(compare_to_data(start, fresh, second_fresh))}")
print(f"DDPM, {T} steps:     {format_comparison(compare_to_data(samples, fresh, second_fresh))}")

# %%
figure = plots.plot_sample_grid(
    {"fresh data": fresh, "N(0, I): where sampling starts": start, f"DDPM, {T} steps": samples},
    f"DDPM samples of the trained model against the data ({NUM_SAMPLES} points each)",
    labels={"fresh data": fresh_labels})
print("wrote", plots.save_figure(figure, OUT / "samples.png"))
figure = plots.plot_trajectories(recorder, data=fresh, num_paths=8,
                                 title=f"DDPM trajectories (every {recorder.keep_every}th of {T} steps): "
                                       "the points jitter (fresh noise each step); x̂_0 settles early")
print("wrote", plots.save_figure(figure, OUT / "trajectories.png"))
print("wrote", plots.animate_sampling(recorder, OUT / "ddpm_sampling.gif", data=fresh, title="DDPM"))

# %% [markdown]
# ## What to remember
# - Training is regression of a target (v here, ε in the DDPM paper) on noised data at uniform random t;
#   it never runs the sampler.
# - Where the loss sits across t depends on the target (with ε very uneven, with v nearly flat): a
#   single number hides where the network is good.
# - DDPM sampling needs all T steps, each one a network evaluation: slow.  Lesson 03 shows DDIM,
#   which samples the *same* trained model in a few dozen steps.
# - Exercise: `python -m lessons.exercises.check 02` — write the DDPM step's posterior yourself.

# %%
print(f"lesson 02 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
