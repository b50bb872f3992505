# %% [markdown]
# # Lesson 03 — DDIM: the same model, fewer steps; and DDIM inversion
#
# DDPM needed 1000 network evaluations per sample.  DDIM (Song et al. 2021) samples the *same trained
# network* in a few dozen.  Nothing is retrained: DDIM changes only the sampling process.  It is
# derived from a non-Markovian forward process that has the same marginals q(x_t | x_0) as DDPM's —
# and the training objective only ever sees those marginals, so a network trained for DDPM is
# already a network for DDIM.  With η = 0 the sampler is deterministic: the same noise always gives
# the same point, which also makes it invertible (DDIM inversion, last section).
#
# One DDIM step from t to an earlier t_prev (eq. 12; the paper writes our ᾱ as α):
#
#     x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)
#     x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε̂ + σ z,   σ = η · sqrt((1-ᾱ_prev)/(1-ᾱ_t)) · sqrt(1 - ᾱ_t/ᾱ_prev)
#
# Its link to the score: ε̂ = -sqrt(1 - ᾱ_t) ∇ log p_t(x_t), so the η = 0 step is a step along the
# score — an Euler step of the probability-flow ODE, which is why few, large steps still work.
#
# Run:   python lessons/03_ddim_and_inversion.py   (figures in runs/lessons/03_ddim_and_inversion/)
# Time:  about 20 s on a 2-core CPU with the checkpoint of lesson 02 present (measured: 18.5 s;
#        it is trained first if it is missing).
#        Measured with `make lessons` on an idle 2-core machine, both cores in use.

# %%
import time

import torch

from toydiff import plots
from toydiff.data import make_dataset
from toydiff.experiment import ToyRunConfig, load_toy_model, train_toy_model
from toydiff.metrics import compare_to_data, format_comparison
from toydiff.samplers import ddim_invert, ddim_sample, ddpm_step, sampling_timesteps
from toydiff.training import TrainConfig

from lesson_setup import QUICK, SPIRAL, start_lesson  # noqa: E402 (sibling module)

OUT = start_lesson("03_ddim_and_inversion")
NUM_SAMPLES = 300 if QUICK else 2000
started = time.perf_counter()

# %% [markdown]
# ## The trained model of lesson 02
# Loaded from its checkpoint, or trained now if lesson 02 has not been run.

# %%
checkpoint = SPIRAL / "checkpoint.pt"
if checkpoint.exists():
    run = load_toy_model(checkpoint)
else:
    recipe = ToyRunConfig()
    if QUICK:
        recipe.train = TrainConfig(steps=200, batch_size=256, log_every=50, progress=False)
    run = train_toy_model(recipe, out_dir=SPIRAL)
schedule, T = run.schedule, run.schedule.num_timesteps
model = run.denoiser()  # the unconditional model(x, t) the samplers call
fresh, fresh_labels = make_dataset("spiral", NUM_SAMPLES, seed=20)
second_fresh, _ = make_dataset("spiral", NUM_SAMPLES, seed=21)


def measure(samples: torch.Tensor) -> dict:
    """Distances of the samples to fresh data, each with its floor (data against data)."""
    return compare_to_data(samples, fresh, second_fresh)


def timed_sample(**options) -> tuple[torch.Tensor, float]:
    tick = time.perf_counter()
    samples = run.sample(NUM_SAMPLES, seed=0, **options)
    return samples, time.perf_counter() - tick


# %% [markdown]
# ## The reference: DDPM, all 1000 steps

# %%
ddpm_samples, ddpm_seconds = timed_sample(sampler="ddpm")
ddpm_quality = measure(ddpm_samples)
print(f"DDPM, {T} steps: {ddpm_seconds:6.2f} s   {format_comparison(ddpm_quality)}")

# %% [markdown]
# ## The naive shortcut: skip steps in DDPM
# Why not just run the DDPM step at every 20th timestep?  Because each DDPM step removes the noise of
# *one* step, t -> t-1: visiting 50 timesteps removes 50 steps' worth of noise, and the result is
# still mostly noise.  (The library's `ddpm_step` is called directly here, in a hand-written loop.)

# %%
generator = torch.Generator().manual_seed(0)
x = torch.randn(NUM_SAMPLES, 2, generator=generator)
for t in sampling_timesteps(T, 50):
    t_batch = torch.full((NUM_SAMPLES,), t, dtype=torch.int64)
    with torch.no_grad():
        x = ddpm_step(schedule, model(x, t_batch), t_batch, x, generator=generator)
naive_quality = measure(x)
print(f"DDPM step at 50 of the {T} timesteps: {format_comparison(naive_quality)}")

# %% [markdown]
# DDIM's step goes from ᾱ_t straight to ᾱ_prev, however far apart they are: each step lands on the
# right noise level.
#
# ## Speed against quality: 1 to 100 steps
# Deterministic DDIM (η = 0) and its stochastic version η = 1 (DDPM's posterior noise, on a
# sub-sequence of timesteps) at 1, 5, 10, 20, 50 and 100 steps: time and energy distance.

# %%
step_counts = [1, 5, 10, 20, 50, 100]
results = {0.0: {}, 1.0: {}}
sweep_samples = {}
print(f"{'steps':>5s}  {'η':>3s}  {'seconds':>8s}  distances to fresh data")
for num_steps in step_counts:
    for eta in results:
        samples, seconds = timed_sample(sampler="ddim", num_steps=num_steps, eta=eta)
        quality = measure(samples)
        results[eta][num_steps] = (seconds, quality["energy_distance"]["value"])
        print(f"{num_steps:5d}  {eta:3.0f}  {seconds:8.2f}  {format_comparison(quality)}")
        if eta == 0.0:
            sweep_samples[f"DDIM, {num_steps} step{'s' if num_steps > 1 else ''}"] = samples
floor = ddpm_quality["energy_distance"]["floor"]

# %%
series = {f"DDIM η = {eta:g}": [results[eta][n][1] for n in step_counts] for eta in results}
series[f"DDPM, {T} steps (reference)"] = [ddpm_quality["energy_distance"]["value"]] * len(step_counts)
figure = plots.plot_sweep(step_counts, series, xlabel="sampling steps (network evaluations)",
                          ylabel="energy distance to fresh data", floor=floor, logx=True, logy=True,
                          title="Quality against steps: DDIM sampling of the same trained model")
print("wrote", plots.save_figure(figure, OUT / "quality_vs_steps.png"))
series = {f"DDIM η = {eta:g}": [results[eta][n][0] for n in step_counts] for eta in results}
series[f"DDPM, {T} steps (reference)"] = [ddpm_seconds] * len(step_counts)
figure = plots.plot_sweep(step_counts, series, xlabel="sampling steps", ylabel=f"seconds for {NUM_SAMPLES} points",
                          logx=True, logy=True, title="Time against steps: one network evaluation per step")
print("wrote", plots.save_figure(figure, OUT / "time_vs_steps.png"))
shown = {"fresh data": fresh, **{k: v for k, v in sweep_samples.items() if k.split(", ")[1] in
                                 ("1 step", "5 steps", "10 steps", "50 steps")}}
figure = plots.plot_sample_grid(shown, "Deterministic DDIM (η = 0) of one trained model with 1, 5, 10 and 50 steps")
print("wrote", plots.save_figure(figure, OUT / "ddim_steps.png"))

# %% [markdown]
# Time grows linearly with the number of steps; quality saturates after a few dozen.  With few
# steps the deterministic sampler (η = 0) is far better than the stochastic one: fresh noise added
# in a handful of big steps is not removed again.
#
# ## η: between deterministic DDIM and DDPM
# η scales the fresh noise of each step, keeping the marginals unchanged (eq. 16).  At 20 steps:

# %%
for eta in (0.0, 0.2, 0.5, 1.0):
    samples, seconds = timed_sample(sampler="ddim", num_steps=20, eta=eta)
    print(f"η = {eta:3.1f}, 20 steps: {format_comparison(measure(samples))}")

# %% [markdown]
# ## Which timesteps to visit: the spacing
# With N steps out of T, the sampler visits a sub-sequence of timesteps (Lin et al. 2024, Table 2).
# "trailing" starts at t = T-1, where the forward process really ends.  "leading" (0, 100, …, 900)
# never visits T-1: it hands pure noise to the model as if it were x_900, a level at which a share
# sqrt(ᾱ_900) of the data should still be present.  "linspace" includes both ends.  Whatever the
# spacing, the step after the last visited timestep is t = -1, ᾱ = 1: clean data.

# %%
for num_steps in (5, 10):
    for spacing in ("leading", "trailing", "linspace"):
        visited = sampling_timesteps(T, num_steps, spacing)
        samples, _ = timed_sample(sampler="ddim", num_steps=num_steps, spacing=spacing)
        print(f"{num_steps:2d} steps, {spacing:9s} starts at t = {visited[0]:3d} (√ᾱ = {schedule.alpha_bar(visited[0]).sqrt().item():.3f}),"
              f" visits {visited}\n      -> {format_comparison(measure(samples))}")

# %% [markdown]
# Read the numbers before believing the rule.  On the spiral the three spacings are close, and
# leading can even win with few steps: it spends its steps at low noise, where the arms take shape,
# and — as lesson 01 showed — the noised spiral is already hard to tell from N(0, I) long before
# t = T-1, so starting "too early" costs little here.  The rule matters where the leftover signal at
# the first visited step is visible: an image's overall brightness survives to high noise, and with
# leading spacing samples cannot stray far from mid-grey (Lin et al. 2024); with a zero-terminal-SNR
# schedule only trailing starts from the right place.  toydiff samples with trailing by default.

# %% [markdown]
# ## The score the sampler follows
# ε̂ = -sqrt(1 - ᾱ_t) ∇ log p_t(x), so the network's output *is* (a scaled) score.  Drawn on a
# grid: at large t it points to the centre of the data; at small t it points onto the arms.

# %%
figure = plots.plot_score_field(model, schedule, [T - 1, T // 2, T // 5, T // 20],
                                prediction_type=run.config.prediction_type, points=sweep_samples["DDIM, 50 steps"],
                                title="The model's score ∇ log p_t(x) = -ε̂(x, t) / √(1 - ᾱ_t), over DDIM-50 samples")
print("wrote", plots.save_figure(figure, OUT / "score_field.png"))

# %% [markdown]
# ## DDIM inversion
# Because the η = 0 sampler is a deterministic map from noise to data, it can be run backwards:
# the same step moving *up* the noise levels (t_prev > t) takes a real data point to the noise that
# DDIM would turn into it.  (Image and video editing methods start here; so does the probing lesson
# of the video layer.)  Going up, the network is asked at the point's current noise level, so the
# round trip is exact only where ε̂ barely changes between neighbouring levels: with an exact
# ("oracle") model it is exact; with a learned one the error shrinks as the steps get smaller.

# %%
points = fresh[: min(500, NUM_SAMPLES)]
for num_steps in ((10, 50) if QUICK else (10, 50, 200)):
    inverted = ddim_invert(model, points, schedule, num_steps=num_steps, prediction_type=run.config.prediction_type)
    restored = ddim_sample(model, inverted, schedule, num_steps=num_steps, prediction_type=run.config.prediction_type)
    error = (restored - points).norm(dim=1)
    print(f"{num_steps:4d} steps: round-trip error mean {error.mean().item():.4f}, "
          f"median {error.median().item():.4f} (data spread: std 1 per coordinate)")
gaussian = torch.randn(inverted.shape, generator=torch.Generator().manual_seed(1))
second_gaussian = torch.randn(inverted.shape, generator=torch.Generator().manual_seed(2))
print(f"inverted points against N(0, I): {format_comparison(compare_to_data(inverted, gaussian, second_gaussian))}")
figure = plots.plot_sample_grid(
    {"data x_0": points, f"DDIM-inverted x_T ({num_steps} steps)": inverted, "DDIM sampled back from x_T": restored},
    "DDIM inversion round trip: data -> noise -> data, colour = arm",
    labels={"data x_0": fresh_labels[: len(points)], f"DDIM-inverted x_T ({num_steps} steps)": fresh_labels[: len(points)],
            "DDIM sampled back from x_T": fresh_labels[: len(points)]})
print("wrote", plots.save_figure(figure, OUT / "inversion.png"))

# %% [markdown]
# ## What to remember
# - DDIM is a sampler, not a model: the DDPM-trained network, a non-Markovian forward process with
#   the same marginals, and a step that jumps between any two noise levels.
# - η = 0 is deterministic; η = 1 with every step visited is exactly DDPM.
# - Time is linear in the steps; quality saturates after a few dozen.  Start at t = T-1 (trailing),
#   where the model was trained to see pure noise.
# - Deterministic DDIM can be inverted: data -> noise -> data, exact up to the model's error.
# - Exercise: `python -m lessons.exercises.check 03` — write the DDIM step yourself.

# %%
print(f"lesson 03 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
