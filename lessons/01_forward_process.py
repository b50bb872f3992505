# %% [markdown]
# # Lesson 01 — The forward process and noise schedules
#
# Diffusion learns to map a normal distribution onto a data distribution — here a 2-D spiral — by
# first doing the easy opposite: add Gaussian noise to the data, a little at a time, until it cannot
# be told apart from a draw of N(0, I).  This lesson builds that *forward process*, shows the closed
# form that jumps to any noise level in one step, and compares the schedules that decide how fast
# the signal fades — including why a short linear schedule never reaches noise.
#
# Run:   python lessons/01_forward_process.py      (figures in runs/lessons/01_forward_process/)
# Time:  about 5 s on a 2-core CPU (measured: 3.7 s).  No training.
#        Measured with `make lessons` on an idle 2-core machine, both cores in use.
#
# Notation (toydiff/schedules.py): β_t is the variance added at step t, α_t = 1 - β_t, and
# ᾱ_t = α_0 α_1 … α_t (the DDIM paper calls it α_t).  Timesteps run 0 … T-1; as in the papers, x_T
# and ᾱ_T name the noisiest of them, t = T-1 (in code `num_timesteps - 1`).

# %%
import time

import torch

from toydiff import plots
from toydiff.data import make_dataset
from toydiff.metrics import compare_to_data, format_comparison
from toydiff.schedules import NoiseSchedule, make_schedule

from lesson_setup import QUICK, start_lesson  # noqa: E402 (sibling module)

OUT = start_lesson("01_forward_process")
NUM_POINTS = 1000 if QUICK else 4000
started = time.perf_counter()

# %% [markdown]
# ## The data
# 4000 points on three interleaved spiral arms, standardised to mean 0 and standard deviation 1 per
# coordinate.  The label (which arm) is trained on from lesson 02 and steered by in lesson 04.

# %%
data, labels = make_dataset("spiral", NUM_POINTS, seed=1)  # (N, 2), (N,)
print(f"data: {tuple(data.shape)}, mean {data.mean(0).tolist()}, std {data.std(0).tolist()}")

# %% [markdown]
# ## Adding noise, one step at a time (the naive way)
# The forward process is a Markov chain (DDPM eq. 2):
#
#     q(x_t | x_{t-1}) = N( sqrt(1 - β_t) x_{t-1},  β_t I )
#
# Shrinking by sqrt(1 - β_t) before adding variance β_t keeps the total variance near 1, so the
# points end up as N(0, I) rather than spreading out forever.  Written literally, reaching step t
# takes t loops:

# %%
schedule = make_schedule("cosine", 1000)  # cosine (improved DDPM) for the figures; the recipe trains on linear
T = schedule.num_timesteps
t_check = T // 4

x = data.clone()
generator = torch.Generator().manual_seed(0)
for t in range(t_check + 1):
    beta = schedule.beta(t).item()
    x = (1 - beta) ** 0.5 * x + beta**0.5 * torch.randn(x.shape, generator=generator)
step_by_step = x

# %% [markdown]
# ## The closed form: any t in one jump
# A sum of independent Gaussians is Gaussian, so the t steps collapse into one (DDPM eq. 4):
#
#     x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,     ε ~ N(0, I)
#
# This is `schedule.add_noise`, what training uses to noise a batch at random timesteps without
# looping.  The two must give the same *distribution* (not the same points: the noise differs).  We
# measure the energy distance between them, next to its floor: the same distance between two
# independent closed-form draws.

# %%
def closed_form(seed: int) -> torch.Tensor:
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(seed))
    return schedule.add_noise(data, noise, t_check)


comparison = compare_to_data(step_by_step, closed_form(1), closed_form(2))
print(f"t = {t_check}: step-by-step vs closed form: {format_comparison(comparison)}")

# %%
figure = plots.plot_forward_process(
    data, schedule, [0, T // 20, T // 10, T // 4, T // 2, T - 1], labels=labels,
    title="The forward process on the spiral: x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε (cosine schedule, T = 1000; colour = arm)")
print("wrote", plots.save_figure(figure, OUT / "forward_process.png"))

# %% [markdown]
# ## Noise schedules
# A schedule is the list of β_t; all that matters to the marginals is ᾱ_t, the share of the data's
# variance left at step t, or equivalently the signal-to-noise ratio SNR(t) = ᾱ_t / (1 - ᾱ_t).
# - **linear** (DDPM): β from 1e-4 to 0.02 over T = 1000 steps.
# - **scaled_linear** (latent diffusion): linear in sqrt(β); gentler.
# - **cosine** (improved DDPM): ᾱ follows a cosine, so the SNR falls evenly instead of collapsing
#   early; the linear schedule wastes its last few hundred steps on almost pure noise.
# - **sigmoid**: ᾱ follows a sigmoid.
#
# And one bad one: DDPM's β range (1e-4 to 0.02) used over only 100 steps, as short tutorials do.

# %%
schedules = {f"{kind}, T = 1000": make_schedule(kind, 1000) for kind in ("linear", "scaled_linear", "cosine", "sigmoid")}
schedules["DDPM β range over T = 100"] = NoiseSchedule(torch.linspace(1e-4, 0.02, 100, dtype=torch.float64),
                                                       kind="linear, unscaled")
schedules["scaled_linear + zero terminal SNR"] = make_schedule("scaled_linear", 1000, zero_terminal_snr=True)
figure = plots.plot_schedules(schedules, title="Noise schedules: ᾱ_t and log SNR; the dot is ᾱ at the last step")
print("wrote", plots.save_figure(figure, OUT / "schedules.png"))

# %% [markdown]
# ## Why ᾱ at the last step matters
# Sampling (lesson 02) starts from x_T ~ N(0, I) and runs the process backwards.  That is only right
# if the forward process really ends at N(0, I) *whatever x_0 was*, i.e. if ᾱ_T ≈ 0.  With
# ᾱ_T = 0.36 a share sqrt(ᾱ_T) ≈ 0.6 of each point is still there at the "end": x_T remembers x_0,
# the model is never trained on pure noise, and a sampler that starts from pure noise starts
# somewhere the model has never been.
#
# The naive check — is the cloud of all x_T Gaussian? — is fooled: the spiral is standardised, so
# blurring it already gives mean 0 and variance 1.  The telling check conditions on x_0: take the
# points of one arm only, noise them to the last step, and measure how far they are from N(0, I),
# against the floor (two independent draws of N(0, I) of the same size).

# %%
arm = data[labels == 0]  # (N_arm, 2): one arm of the spiral


def standard_normal(seed: int, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(like.shape, generator=torch.Generator().manual_seed(seed))


last_steps = {}
print(f"{'schedule':36s} {'ᾱ_T':>10s} {'√ᾱ_T':>8s}   one arm's x_T against N(0, I)")
for name, each in schedules.items():
    last = each.num_timesteps - 1
    alpha_bar_T = each.alpha_bar(last).item()
    arm_T = each.add_noise(arm, standard_normal(3, arm), last)
    comparison = compare_to_data(arm_T, standard_normal(4, arm), standard_normal(5, arm))
    print(f"{name:36s} {alpha_bar_T:10.3g} {alpha_bar_T ** 0.5:8.3f}   {format_comparison(comparison)}")
    last_steps[f"{name}\nᾱ_T = {alpha_bar_T:.2g}"] = each.add_noise(data, standard_normal(6, data), last)
last_steps["N(0, I): where sampling starts"] = standard_normal(7, data)
figure = plots.plot_sample_grid(last_steps, "The data noised to the last step of each schedule (colour = arm), "
                                            "against N(0, I)",
                                labels={key: labels for key in last_steps if not key.startswith("N(0")})
print("wrote", plots.save_figure(figure, OUT / "last_step.png"))

# %% [markdown]
# Only the short schedule fails: one arm's x_T sits measurably away from N(0, I), and in the
# figure the colours of its last step are still sorted by arm.  The scaled-linear one has
# ᾱ_T ≈ 0.005 — small, yet its SNR is not zero, and on images that leftover low-frequency signal is
# enough to bias every sample's brightness (Lin et al. 2024).  Rescaling it to *zero terminal SNR*
# makes ᾱ_T = 0 exactly; then x_T holds no data at all, predicting ε at t = T-1 is pointless
# (ε = x_T), and the model must predict v or x_0 instead — toydiff refuses the ε combination.
#
# ## The other way round: too few steps for a linear schedule
# DDPM's linear schedule is usually *scaled* by 1000 / T so that short schedules still reach noise.
# For very few steps that pushes β past 1, which is not a variance any more.  toydiff refuses it
# instead of silently producing NaNs; the cosine schedule clips β at 0.999 for the same reason.

# %%
for num_timesteps in (20, 10):
    try:
        short = make_schedule("linear", num_timesteps)
        print(f"linear, T = {num_timesteps}: largest β = {short.betas.max().item():.3f}, ᾱ_T = {short.alphas_cumprod[-1].item():.2g}")
    except ValueError as error:
        print(f"linear, T = {num_timesteps}: refused: {error}")

# %% [markdown]
# ## What to remember
# - q(x_t | x_0) has a closed form: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε.  Training never loops.
# - A schedule is judged by its ᾱ_t (or SNR) curve, and above all by ᾱ at its last step, which
#   must be close to 0 for sampling from N(0, I) to make sense.
# - Exercise: `python -m lessons.exercises.check 01` — write ᾱ_t and add_noise yourself.
#
# Next, lesson 02: train a network to undo one step of this process, and sample the spiral.

# %%
print(f"lesson 01 finished in {time.perf_counter() - started:.1f} s; figures in {OUT}")
