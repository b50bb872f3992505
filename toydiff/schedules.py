"""Noise schedules: how much signal survives at each timestep of the forward process.

Notation, used in every module of this project
----------------------------------------------
- ``T``                  number of training timesteps; timesteps are integers ``0 … T-1``.
- ``betas[t]``           variance of the noise added at step t:  q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I).
- ``alphas[t]``          ``1 - betas[t]``.
- ``alphas_cumprod[t]``  ᾱ_t = Π_{s ≤ t} α_s.  The DDIM paper (Song et al. 2021) writes this as α_t.
- forward process        x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,   ε ~ N(0, I)          (DDPM eq. 4)
- signal-to-noise ratio  snr(t) = ᾱ_t / (1 - ᾱ_t)
- velocity               v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0                       (Salimans & Ho 2022)
- ``t = -1``             the step after the last sampling step: no noise at all, ᾱ_{-1} = 1.

Everything is built in float64 (docs/pitfalls.md, pitfall 6: ᾱ near 1 and near 0 loses digits in float32)
and only cast to the sample's dtype at the moment it is used.

Timesteps ``t`` may be a Python int or an int64 tensor whose shape is a prefix of the sample's shape:
``()`` for one timestep, ``(B,)`` for one per point or image, ``(B, F)`` for one per video frame.
:func:`broadcast_to_sample` appends the trailing singleton dimensions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


# ----------------------------------------------------------------------------------------------
# Indexing helpers
# ----------------------------------------------------------------------------------------------

def as_timesteps(t, device=None) -> torch.Tensor:
    """Turn an int or tensor of timesteps into an int64 tensor, never through bf16 (docs/pitfalls.md,
    pitfall 13)."""
    if isinstance(t, torch.Tensor):
        if t.is_floating_point() or t.is_complex():
            raise TypeError(
                f"timesteps must be integers (int64), got a {t.dtype} tensor; "
                "round them explicitly before calling, e.g. t.round().long()"
            )
        return t.to(dtype=torch.int64, device=device if device is not None else t.device)
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"timesteps must be an int or an int64 tensor, got {type(t).__name__}")
    return torch.tensor(t, dtype=torch.int64, device=device)


def broadcast_to_sample(values: torch.Tensor, sample: torch.Tensor, dtype=None) -> torch.Tensor:
    """Give per-timestep ``values`` (shape a prefix of ``sample.shape``) trailing singleton dims.

    (B,) against (B, 2) -> (B, 1);  (B, F) against (B, F, C, H, W) -> (B, F, 1, 1, 1).
    The result is on the sample's device, in ``dtype`` (default: the sample's dtype).
    """
    leading_ok = values.ndim <= sample.ndim and all(
        a == b or a == 1 for a, b in zip(values.shape, sample.shape)
    )
    if not leading_ok:
        raise ValueError(
            f"timesteps of shape {tuple(values.shape)} do not broadcast against a sample of shape "
            f"{tuple(sample.shape)}: expected a prefix of the sample's shape, e.g. () or "
            f"({sample.shape[0]},)"
        )
    trailing = [1] * (sample.ndim - values.ndim)
    return values.reshape(*values.shape, *trailing).to(dtype=dtype or sample.dtype, device=sample.device)


# ----------------------------------------------------------------------------------------------
# The schedule object
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete noise schedule of ``T = len(betas)`` steps, stored in float64.

    Build one with :func:`make_schedule`.  All lookups accept an int or an int64 tensor of timesteps,
    including ``-1`` (meaning ᾱ = 1, no noise).
    """

    betas: torch.Tensor  # (T,) float64
    kind: str = "custom"

    def __post_init__(self):
        validate_betas(self.betas)
        alphas = 1.0 - self.betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        # Prepending ᾱ_{-1} = 1 lets index t + 1 serve t = -1 without a special case.
        padded = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod])
        object.__setattr__(self, "alphas", alphas)
        object.__setattr__(self, "alphas_cumprod", alphas_cumprod)
        object.__setattr__(self, "_alphas_cumprod_padded", padded)
        object.__setattr__(self, "_device_copies", {})

    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        """A float64 lookup table on ``device``, copied there once (no host sync in the hot loop)."""
        key = (name, str(device))
        if key not in self._device_copies:
            self._device_copies[key] = getattr(self, name).to(device)
        return self._device_copies[key]

    # -- sizes -----------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def __len__(self) -> int:
        return self.num_timesteps

    @property
    def has_zero_terminal_snr(self) -> bool:
        return bool(self.alphas_cumprod[-1] == 0)

    # -- lookups ---------------------------------------------------------------------------
    def check_timesteps(self, t: torch.Tensor, allow_minus_one: bool = True) -> None:
        low = -1 if allow_minus_one else 0
        if t.numel() and (int(t.min()) < low or int(t.max()) >= self.num_timesteps):
            raise ValueError(
                f"timesteps must lie in [{low}, {self.num_timesteps - 1}] for this {self.num_timesteps}-step "
                f"schedule, got values from {int(t.min())} to {int(t.max())}"
            )

    def alpha_bar(self, t) -> torch.Tensor:
        """ᾱ_t in float64, same shape as ``t``; ``t = -1`` gives exactly 1."""
        t = as_timesteps(t)
        self.check_timesteps(t)
        return self._table("_alphas_cumprod_padded", t.device)[t + 1]

    def beta(self, t) -> torch.Tensor:
        t = as_timesteps(t)
        self.check_timesteps(t, allow_minus_one=False)
        return self._table("betas", t.device)[t]

    def snr(self, t) -> torch.Tensor:
        """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) in float64 (inf at t = -1)."""
        a = self.alpha_bar(t)
        return a / (1.0 - a)

    def log_snr(self, t) -> torch.Tensor:
        a = self.alpha_bar(t)
        return torch.log(a) - torch.log1p(-a)

    # -- the forward process ---------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
        """Sample q(x_t | x_0):  x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε   (DDPM eq. 4).

        x0, noise: (B, ...) ; t: int or int64 tensor whose shape is a prefix of x0's, e.g. (B,).
        Returns x_t with the shape and dtype of x0.
        """
        if x0.shape != noise.shape:
            raise ValueError(f"x0 has shape {tuple(x0.shape)} but noise has shape {tuple(noise.shape)}")
        a = broadcast_to_sample(self.alpha_bar(as_timesteps(t, x0.device)), x0)
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    # -- the posterior q(x_{t-1} | x_t, x_0), used by DDPM ---------------------------------------
    def posterior_variance(self, t) -> torch.Tensor:
        """β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t)   (DDPM eq. 7), float64, shaped like ``t``.

        Exactly zero at t = 0 (ᾱ_{-1} = 1): the last DDPM step adds no noise, and log β̃_0 = -inf, so
        code that takes the log (a likelihood) must treat t = 0 apart (docs/pitfalls.md, pitfall 4).
        """
        t = as_timesteps(t)
        a, a_prev = self.alpha_bar(t), self.alpha_bar(t - 1)
        return self.beta(t) * (1.0 - a_prev) / (1.0 - a)

    def to_dict(self) -> dict:
        """Plain-type description, enough for :func:`schedule_from_dict` (used in checkpoints)."""
        return {"kind": self.kind, "betas": self.betas.tolist()}


def schedule_from_dict(description: dict) -> NoiseSchedule:
    return NoiseSchedule(torch.tensor(description["betas"], dtype=torch.float64), kind=description["kind"])


def validate_betas(betas: torch.Tensor) -> None:
    """Refuse betas that do not describe a valid forward process (docs/pitfalls.md, pitfall 2)."""
    if not isinstance(betas, torch.Tensor) or betas.ndim != 1 or betas.numel() == 0:
        raise ValueError("betas must be a non-empty 1-D tensor")
    if betas.dtype != torch.float64:
        raise ValueError(f"betas must be float64 (schedules are built in float64), got {betas.dtype}")
    if not torch.isfinite(betas).all():
        raise ValueError("betas contain NaN or inf")
    if (betas <= 0).any() or (betas > 1).any():
        bad = betas[(betas <= 0) | (betas > 1)][0].item()
        raise ValueError(
            f"every beta must lie in (0, 1]; found {bad!r}. A linear schedule scaled to few steps can "
            "exceed 1: use more timesteps or a cosine schedule"
        )
    if (betas[:-1] == 1).any():
        raise ValueError("only the last beta may equal 1 (zero terminal SNR); an earlier one erases all signal")


# ----------------------------------------------------------------------------------------------
# Named schedules
# ----------------------------------------------------------------------------------------------

def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020), β from 1e-4 to 0.02 over T = 1000 steps.

    For other T the endpoints are scaled by 1000 / T so that ᾱ_T stays near zero (as in improved DDPM);
    for T < 20 that pushes β_end past 1, which :func:`validate_betas` refuses.
    """
    scale = 1000.0 / num_timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, num_timesteps, dtype=torch.float64)


def scaled_linear_betas(num_timesteps: int, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Linear in sqrt(β), the schedule of latent diffusion (Rombach et al. 2022)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2) / ᾱ(0).

    β_t = 1 - ᾱ_t / ᾱ_{t-1}, clipped at 0.999 because the last steps would otherwise reach β = 1.
    """
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)


def sigmoid_betas(num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                  max_beta: float = 0.999) -> torch.Tensor:
    """Sigmoid schedule (Jabri et al. 2023 / Chen 2023): ᾱ follows a rescaled sigmoid in t."""
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = (-torch.sigmoid((steps * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    f = f.clamp(min=0.0)
    alphas_cumprod = f / f[0]
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(ᾱ) so the last step has ᾱ_T = 0 exactly (Lin et al. 2024, Algorithm 1).

    The first ᾱ is kept; sqrt(ᾱ) is moved linearly so its last value becomes 0. Pair it with
    v- or x0-prediction: ε-prediction is meaningless where there is no signal left (docs/pitfalls.md,
    pitfall 12).
    """
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_cumprod = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


_BUILDERS = {
    "linear": linear_betas,
    "scaled_linear": scaled_linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
}
SCHEDULE_KINDS = tuple(_BUILDERS)  # the names make_schedule accepts, read off the table above


def make_schedule(kind: str = "cosine", num_timesteps: int = 1000, zero_terminal_snr: bool = False,
                  **options) -> NoiseSchedule:
    """Build a named noise schedule of ``num_timesteps`` steps in float64.

    kind: "linear" (DDPM), "scaled_linear" (latent diffusion), "cosine" (improved DDPM), "sigmoid".
    options: passed to the builder, e.g. ``beta_start``/``beta_end`` for the linear ones, ``s`` for cosine.
    zero_terminal_snr: rescale so that ᾱ at the last step is exactly 0 (use with v- or x0-prediction).
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown schedule {kind!r}; expected one of {', '.join(SCHEDULE_KINDS)}")
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    try:
        betas = _BUILDERS[kind](num_timesteps, **options)
    except TypeError as error:
        raise ValueError(f"bad option for the {kind} schedule: {error}") from None
    if zero_terminal_snr:
        betas = rescale_zero_terminal_snr(betas)
    return NoiseSchedule(betas, kind=kind + ("+zero_terminal_snr" if zero_terminal_snr else ""))
