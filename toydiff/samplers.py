"""Samplers: DDPM ancestral sampling, DDIM (η ∈ [0, 1]) and DDIM inversion.

Every sampler has the same shape (as in k-diffusion):

    sampler(model, x, schedule, *, prediction_type, ..., generator=None, callback=None) -> x

- ``model(x_t, t)`` returns the network output for a batch, ``t`` an int64 tensor of shape (B,).
  Conditioning and guidance are added by wrapping the model (see :mod:`toydiff.guidance`).
- ``callback(state)`` is called after every step with a :class:`SamplerState`, so a lesson can record
  and plot a trajectory without changing the sampler.

The single steps :func:`ddpm_step` and :func:`ddim_step` are public and take timesteps that broadcast
against the sample (an int, (B,) or (B, F) for per-frame noise levels): the video layer calls
``ddim_step`` directly for diffusion forcing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from toydiff.parameterisation import check_prediction_type, predict_epsilon, predict_x0
from toydiff.schedules import NoiseSchedule, as_timesteps, broadcast_to_sample

SPACINGS = ("leading", "trailing", "linspace")
VARIANCES = ("small", "large")


@dataclass
class SamplerState:
    """What a sampler hands its callback after each step."""

    step: int                 # 0-based index of the step just taken
    num_steps: int
    t: int                    # the timestep the model was evaluated at
    t_next: int               # the timestep the new x belongs to (-1: clean)
    x: torch.Tensor           # the new sample, (B, ...)
    pred_x0: torch.Tensor     # the model's estimate of the clean sample at this step, (B, ...)


# ----------------------------------------------------------------------------------------------
# Which timesteps to visit
# ----------------------------------------------------------------------------------------------

def sampling_timesteps(num_train_timesteps: int, num_steps: int, spacing: str = "trailing") -> list[int]:
    """The descending list of timesteps a sampler visits (Lin et al. 2024, Table 2).

    - "leading":  0, T/N, 2T/N, … (T = 1000, N = 10: 900 … 0). Never starts at T-1.
    - "trailing": T-1, T-1-T/N, … (T = 1000, N = 10: 999 … 99). Starts at pure(st) noise.
    - "linspace": round(linspace(0, T-1, N)) (999, 888, … 0).
    The step after the last entry is t = -1 (ᾱ = 1): the sampler always ends on clean data.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {', '.join(SPACINGS)}")
    for name, value in (("num_train_timesteps", num_train_timesteps), ("num_steps", num_steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if num_steps > num_train_timesteps:
        raise ValueError(
            f"num_steps={num_steps} exceeds the {num_train_timesteps} training timesteps; "
            f"use at most {num_train_timesteps}"
        )
    T, N = int(num_train_timesteps), int(num_steps)
    if spacing == "leading":
        steps = np.arange(N) * (T // N)
    elif spacing == "trailing":
        steps = np.round(np.arange(T, 0, -T / N)).astype(np.int64) - 1
    else:
        steps = np.round(np.linspace(0, T - 1, N)).astype(np.int64)
    return sorted({int(s) for s in steps}, reverse=True)


# ----------------------------------------------------------------------------------------------
# Single steps
# ----------------------------------------------------------------------------------------------

def _draw_noise(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _check_clip_x0(clip_x0: Optional[float]) -> None:
    if clip_x0 is not None and not float(clip_x0) > 0:
        raise ValueError(f"clip_x0 must be a positive bound (x̂_0 is clamped to [-clip_x0, clip_x0]) or None, "
                         f"got {clip_x0!r}")


def ddpm_step(schedule: NoiseSchedule, model_output: torch.Tensor, t, x_t: torch.Tensor,
              noise: Optional[torch.Tensor] = None, prediction_type: str = "epsilon",
              variance: str = "small", generator: Optional[torch.Generator] = None,
              clip_x0: Optional[float] = None) -> torch.Tensor:
    """One step of DDPM ancestral sampling, x_t -> x_{t-1} (Ho et al. 2020, Algorithm 2).

    model_output, x_t: (B, ...);  t: int or int64 tensor broadcasting against x_t, e.g. (B,).
    noise: the z of the step (drawn with ``generator`` when None).  No noise is added where t = 0.
    variance: "small" uses the posterior variance β̃_t (right for deterministic data),
              "large" uses β_t (right for data ~ N(0, I)); DDPM sec. 3.2.
    clip_x0: clamp x̂_0 to [-clip_x0, clip_x0] before the posterior mean, as DDPM's image code does with
             1 for pixels in [-1, 1]; None (the default) for data without a fixed range, such as latents.
    Returns x_{t-1}, same shape and dtype as x_t.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; expected one of {', '.join(VARIANCES)}")
    _check_clip_x0(clip_x0)
    t = as_timesteps(t, x_t.device)
    schedule.check_timesteps(t, allow_minus_one=False)
    x0 = predict_x0(schedule, model_output, t, x_t, prediction_type)
    if clip_x0 is not None:
        x0 = x0.clamp(-clip_x0, clip_x0)

    def shaped(values):
        return broadcast_to_sample(values, x_t)

    # 1. Posterior q(x_{t-1} | x_t, x_0) mean, DDPM eq. 7:
    #    μ̃ = sqrt(ᾱ_{t-1}) β_t / (1 - ᾱ_t) · x_0  +  sqrt(α_t) (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · x_t
    a, a_prev, beta = schedule.alpha_bar(t), schedule.alpha_bar(t - 1), schedule.beta(t)
    coef_x0 = shaped(a_prev.sqrt() * beta / (1.0 - a))
    coef_xt = shaped((1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a))
    mean = coef_x0 * x0 + coef_xt * x_t
    # 2. The step's variance: β̃_t or β_t.
    var = schedule.posterior_variance(t) if variance == "small" else beta
    # 3. x_{t-1} = μ̃ + σ_t z, with z = 0 on the last step (t = 0): the output is the mean itself.
    if noise is None:
        noise = _draw_noise(x_t, generator)
    not_last = shaped((t > 0).to(torch.float64))
    return mean + not_last * shaped(var.sqrt()) * noise


def ddim_sigma(schedule: NoiseSchedule, t, t_prev, eta: float) -> torch.Tensor:
    """σ_t(η) = η · sqrt((1 - ᾱ_prev) / (1 - ᾱ_t)) · sqrt(1 - ᾱ_t / ᾱ_prev)   (DDIM eq. 16), float64.

    η = 0: deterministic DDIM; η = 1 with every timestep visited: the DDPM posterior (σ² = β̃_t).
    """
    a, a_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    if float(eta) == 0.0:
        return torch.zeros_like(a)  # also avoids 0/0 when t = -1 (the clean start of inversion)
    ratio = (1.0 - a_prev) / (1.0 - a)
    # clamp: 1 - ᾱ_t/ᾱ_prev is ≥ 0 mathematically; rounding may make it -1e-17.
    return eta * (ratio * (1.0 - a / a_prev)).clamp_min(0.0).sqrt()


def ddim_step(schedule: NoiseSchedule, model_output: torch.Tensor, t, t_prev, x_t: torch.Tensor,
              eta: float = 0.0, noise: Optional[torch.Tensor] = None, prediction_type: str = "epsilon",
              generator: Optional[torch.Generator] = None, clip_x0: Optional[float] = None) -> torch.Tensor:
    """One DDIM step from timestep t to t_prev (Song et al. 2021, eq. 12).

    x_{t_prev} = sqrt(ᾱ_prev) x̂_0  +  sqrt(1 - ᾱ_prev - σ²) ε̂  +  σ z

    model_output, x_t: (B, ...);  t, t_prev: ints or int64 tensors broadcasting against x_t
    ((B,) per sample, (B, F) per video frame).  t_prev = -1 means the clean end, ᾱ = 1.
    eta ∈ [0, 1] scales the fresh noise; noise (z) is drawn with ``generator`` when None and η > 0.
    With t_prev > t the same formula moves *up* the noise levels: that is DDIM inversion.
    clip_x0: clamp x̂_0 to [-clip_x0, clip_x0] (1 for pixels in [-1, 1]; None for latents) and take ε̂
             from the clamped x̂_0, so that the step stays on the DDIM path through it.
    Returns x_{t_prev}, same shape and dtype as x_t.
    """
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    _check_clip_x0(clip_x0)
    t, t_prev = as_timesteps(t, x_t.device), as_timesteps(t_prev, x_t.device)
    schedule.check_timesteps(t)
    schedule.check_timesteps(t_prev)

    def shaped(values):
        return broadcast_to_sample(values, x_t)

    # 1. The clean sample and the noise the model sees in x_t (eq. 12, "predicted x_0").
    x0 = predict_x0(schedule, model_output, t, x_t, prediction_type)
    epsilon = predict_epsilon(schedule, model_output, t, x_t, prediction_type)
    if clip_x0 is not None:
        # Keep ε consistent with the clipped x̂_0, otherwise the step leaves the DDIM path.
        x0 = x0.clamp(-clip_x0, clip_x0)
        a = shaped(schedule.alpha_bar(t))
        # At t = -1 (ᾱ = 1, where inversion starts) x_t is x_0 itself and carries no noise to recover.
        epsilon = torch.where(a < 1, (x_t - a.sqrt() * x0) / (1.0 - a).clamp_min(1e-20).sqrt(), epsilon)
    # 2. σ_t(η), eq. 16, and the "direction pointing to x_t" sqrt(1 - ᾱ_prev - σ²) ε̂.
    a_prev = schedule.alpha_bar(t_prev)
    sigma = ddim_sigma(schedule, t, t_prev, eta)
    # Real for η ∈ [0, 1]; the clamp removes rounding residue (docs/pitfalls.md, pitfall 5).
    direction = (1.0 - a_prev - sigma**2).clamp_min(0.0).sqrt()
    x_prev = shaped(a_prev.sqrt()) * x0 + shaped(direction) * epsilon
    # 3. Fresh noise, only when η > 0.
    if float(eta) > 0.0:
        if noise is None:
            noise = _draw_noise(x_t, generator)
        x_prev = x_prev + shaped(sigma) * noise
    return x_prev


# ----------------------------------------------------------------------------------------------
# Full samplers
# ----------------------------------------------------------------------------------------------

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Optional[Callable[[SamplerState], None]]


def _batch_timesteps(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full(x.shape[:1], t, dtype=torch.int64, device=x.device)  # (B,)


@torch.no_grad()
def ddpm_sample(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, *, prediction_type: str = "epsilon",
                variance: str = "small", generator: Optional[torch.Generator] = None,
                callback: Callback = None, clip_x0: Optional[float] = None, progress: bool = False) -> torch.Tensor:
    """Ancestral sampling through all T timesteps, T-1 down to 0.  x_T: (B, ...) pure noise.

    For fewer steps, use :func:`ddim_sample` with ``eta=1`` (the same stochastic process on a
    sub-sequence of timesteps).
    """
    check_prediction_type(prediction_type, schedule)
    x = x_T
    timesteps = list(range(schedule.num_timesteps - 1, -1, -1))
    for i, t in enumerate(tqdm(timesteps, desc="DDPM", disable=not progress)):
        t_batch = _batch_timesteps(t, x)
        output = model(x, t_batch)
        pred_x0 = predict_x0(schedule, output, t_batch, x, prediction_type)
        x = ddpm_step(schedule, output, t_batch, x, prediction_type=prediction_type, variance=variance,
                      generator=generator, clip_x0=clip_x0)
        if callback is not None:
            callback(SamplerState(i, len(timesteps), t, t - 1, x, pred_x0))
    return x


@torch.no_grad()
def ddim_sample(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, *, num_steps: int = 50,
                eta: float = 0.0, spacing: str = "trailing", prediction_type: str = "epsilon",
                generator: Optional[torch.Generator] = None, callback: Callback = None,
                clip_x0: Optional[float] = None, progress: bool = False) -> torch.Tensor:
    """DDIM sampling in ``num_steps`` steps.  x_T: (B, ...) pure noise.  Returns x_0, (B, ...).

    η = 0 is the deterministic sampler of the *same* trained model (no retraining: DDIM only changes
    the sampling process, via a non-Markovian forward process with the same marginals).
    """
    check_prediction_type(prediction_type, schedule)
    timesteps = sampling_timesteps(schedule.num_timesteps, num_steps, spacing)
    x = x_T
    for i, t in enumerate(tqdm(timesteps, desc="DDIM", disable=not progress)):
        # The previous timestep is the next entry of the list, and -1 (ᾱ = 1) after the last one, never
        # t - T // N (docs/pitfalls.md, pitfall 3).
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = _batch_timesteps(t, x)
        output = model(x, t_batch)
        x_new = ddim_step(schedule, output, t_batch, t_prev, x, eta=eta, prediction_type=prediction_type,
                          generator=generator, clip_x0=clip_x0)
        if callback is not None:
            callback(SamplerState(i, len(timesteps), t, t_prev,
                                  x_new, predict_x0(schedule, output, t_batch, x, prediction_type)))
        x = x_new
    return x


class SelfConditioned:
    """A self-conditioned network as the plain model a sampler calls (Chen, Zhang & Hinton 2022).

    ``SelfConditioned(net, schedule, prediction_type)(x_t, t, *rest)`` calls
    ``net(x_t, t, *rest, previous_x0=x̂_0 of the call before)``: the first call (and any call whose batch
    has another shape) passes None, which the network reads as zeros, as in training. Use a fresh
    wrapper for every sampling run; guidance wraps it like any model, and its batch of 2B (conditional
    and unconditional halves) keeps each half's own previous estimate.
    """

    def __init__(self, model: Callable, schedule: NoiseSchedule, prediction_type: str) -> None:
        check_prediction_type(prediction_type, schedule)
        self.model, self.schedule, self.prediction_type = model, schedule, prediction_type
        self.previous: Optional[torch.Tensor] = None

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, *rest) -> torch.Tensor:
        previous = self.previous if self.previous is not None and self.previous.shape == x_t.shape else None
        output = self.model(x_t, t, *rest, previous_x0=previous)
        self.previous = predict_x0(self.schedule, output, t, x_t, self.prediction_type).to(x_t.dtype)
        return output


SAMPLERS = ("ddim", "ddpm")


def sample(model: Model, x_T: torch.Tensor, schedule: NoiseSchedule, *, sampler: str = "ddim", num_steps: int = 50,
           eta: float = 0.0, spacing: str = "trailing", prediction_type: str = "epsilon",
           generator: Optional[torch.Generator] = None, callback: Callback = None,
           clip_x0: Optional[float] = None) -> torch.Tensor:
    """Draw x_0 (B, ...) from x_T with the named sampler: "ddim" (``num_steps``, ``eta``, ``spacing``) or
    "ddpm" (all T steps); ``clip_x0`` goes to every step of either. The one entry point every layer's
    ``sample`` method calls."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if sampler == "ddpm":
        return ddpm_sample(model, x_T, schedule, prediction_type=prediction_type, generator=generator,
                           callback=callback, clip_x0=clip_x0)
    return ddim_sample(model, x_T, schedule, num_steps=num_steps, eta=eta, spacing=spacing,
                       prediction_type=prediction_type, generator=generator, callback=callback, clip_x0=clip_x0)


@torch.no_grad()
def ddim_invert(model: Model, x_0: torch.Tensor, schedule: NoiseSchedule, *, num_steps: int = 50,
                spacing: str = "trailing", prediction_type: str = "epsilon", callback: Callback = None,
                progress: bool = False) -> torch.Tensor:
    """Run deterministic DDIM backwards: data x_0 -> the noise x_T that DDIM would turn into it.

    Each step is :func:`ddim_step` with η = 0 moving *up* from the current timestep to the next one in
    ascending order. The model is evaluated at the current point and its own noise level (an explicit
    Euler step of the probability-flow ODE, mirroring sampling); at the clean start (t = -1) the model
    is asked at t = 0, the nearest noise level it was trained on.
    With a model that is exact along the DDIM path, ``ddim_sample(ddim_invert(x))`` returns x.
    x_0: (B, ...).  Returns x_T, (B, ...).
    """
    check_prediction_type(prediction_type, schedule)
    ascending = sampling_timesteps(schedule.num_timesteps, num_steps, spacing)[::-1]
    x, t_current = x_0, -1
    for i, t_next in enumerate(tqdm(ascending, desc="DDIM inversion", disable=not progress)):
        t_model = _batch_timesteps(max(t_current, 0), x)
        output = model(x, t_model)
        # Express the output as ε at the level the model saw, then step from t_current to t_next.
        epsilon = predict_epsilon(schedule, output, t_model, x, prediction_type)
        x_new = ddim_step(schedule, epsilon, t_current, t_next, x, eta=0.0, prediction_type="epsilon")
        if callback is not None:
            callback(SamplerState(i, len(ascending), t_current, t_next, x_new,
                                  predict_x0(schedule, epsilon, t_current, x, "epsilon")))
        x, t_current = x_new, t_next
    return x
