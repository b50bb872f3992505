"""What the network predicts: the noise ε, the clean sample x_0, or the velocity v — and exact conversions.

Given x_t and t, any one of (ε, x_0, v) determines the other two, because
    x_t = sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε          (forward process)
    v   = sqrt(ᾱ) ε  - sqrt(1 - ᾱ) x_0         (velocity, Salimans & Ho 2022, eq. in sec. 4)
so
    x_0 = (x_t - sqrt(1 - ᾱ) ε) / sqrt(ᾱ)      ε = (x_t - sqrt(ᾱ) x_0) / sqrt(1 - ᾱ)
    x_0 = sqrt(ᾱ) x_t - sqrt(1 - ᾱ) v          ε = sqrt(1 - ᾱ) x_t + sqrt(ᾱ) v
The conversions are affine in the model output for a fixed (x_t, t), which is why guidance can be applied
to whichever quantity the model predicts.

The score of the noisy marginal is  ∇ log p_t(x_t) = -ε / sqrt(1 - ᾱ_t)  (Tweedie / denoising score matching).
"""
from __future__ import annotations

import torch

from toydiff.schedules import NoiseSchedule, as_timesteps, broadcast_to_sample

PREDICTION_TYPES = ("epsilon", "x0", "v")


def check_prediction_type(prediction_type: str, schedule: NoiseSchedule | None = None) -> None:
    """Refuse unknown prediction types, and ε-prediction where ᾱ_T = 0 (docs/pitfalls.md, pitfall 12).

    At ᾱ_T = 0 the input is pure noise, so predicting ε is trivial (ε = x_T) and x_0 = (x_T - ε) / 0 is
    undefined: the sampler's first step would divide by zero.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {', '.join(PREDICTION_TYPES)}")
    if schedule is not None and prediction_type == "epsilon" and schedule.has_zero_terminal_snr:
        raise ValueError(
            "a zero-terminal-SNR schedule (ᾱ_T = 0) cannot be used with prediction_type='epsilon': "
            "x_0 cannot be recovered from ε where no signal is left. Use prediction_type='v' or 'x0'"
        )


def _coefficients(schedule: NoiseSchedule, t, x: torch.Tensor):
    """sqrt(ᾱ_t) and sqrt(1 - ᾱ_t) shaped to broadcast against x."""
    a = broadcast_to_sample(schedule.alpha_bar(as_timesteps(t, x.device)), x, dtype=torch.float64)
    return a.sqrt(), (1.0 - a).sqrt()


def _to_dtype(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.to(like.dtype)


def predict_x0(schedule: NoiseSchedule, model_output: torch.Tensor, t, x_t: torch.Tensor,
               prediction_type: str = "epsilon") -> torch.Tensor:
    """The model's estimate of the clean sample x_0.  All tensors (B, ...); t a prefix-shaped int64."""
    check_prediction_type(prediction_type)
    if prediction_type == "x0":
        return model_output
    signal, noise = _coefficients(schedule, t, x_t)
    signal, noise = _to_dtype(signal, x_t), _to_dtype(noise, x_t)
    if prediction_type == "epsilon":
        return (x_t - noise * model_output) / signal
    return signal * x_t - noise * model_output  # v


def predict_epsilon(schedule: NoiseSchedule, model_output: torch.Tensor, t, x_t: torch.Tensor,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """The model's estimate of the noise ε.  All tensors (B, ...)."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return model_output
    signal, noise = _coefficients(schedule, t, x_t)
    signal, noise = _to_dtype(signal, x_t), _to_dtype(noise, x_t)
    if prediction_type == "x0":
        return (x_t - signal * model_output) / noise
    return noise * x_t + signal * model_output  # v


def predict_v(schedule: NoiseSchedule, model_output: torch.Tensor, t, x_t: torch.Tensor,
              prediction_type: str = "epsilon") -> torch.Tensor:
    """The model's estimate of the velocity v = sqrt(ᾱ) ε - sqrt(1 - ᾱ) x_0.  All tensors (B, ...)."""
    check_prediction_type(prediction_type)
    if prediction_type == "v":
        return model_output
    signal, noise = _coefficients(schedule, t, x_t)
    signal, noise = _to_dtype(signal, x_t), _to_dtype(noise, x_t)
    epsilon = predict_epsilon(schedule, model_output, t, x_t, prediction_type)
    x0 = predict_x0(schedule, model_output, t, x_t, prediction_type)
    return signal * epsilon - noise * x0


def convert_prediction(schedule: NoiseSchedule, model_output: torch.Tensor, t, x_t: torch.Tensor,
                       source: str, target: str) -> torch.Tensor:
    """Re-express a prediction of kind ``source`` as kind ``target`` ("epsilon", "x0" or "v")."""
    check_prediction_type(target)
    convert = {"epsilon": predict_epsilon, "x0": predict_x0, "v": predict_v}[target]
    return convert(schedule, model_output, t, x_t, source)


def training_target(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor, t,
                    prediction_type: str) -> torch.Tensor:
    """What the network is regressed onto for a clean x0 noised with ``noise`` at timestep t."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "x0":
        return x0
    signal, noise_scale = _coefficients(schedule, t, x0)
    return _to_dtype(signal, x0) * noise - _to_dtype(noise_scale, x0) * x0


def score_from_epsilon(schedule: NoiseSchedule, epsilon: torch.Tensor, t) -> torch.Tensor:
    """The score ∇_x log p_t(x) = -ε / sqrt(1 - ᾱ_t).  epsilon: (B, ...); t prefix-shaped."""
    _, noise = _coefficients(schedule, t, epsilon)
    return -epsilon / _to_dtype(noise, epsilon)


def epsilon_from_score(schedule: NoiseSchedule, score: torch.Tensor, t) -> torch.Tensor:
    """Inverse of :func:`score_from_epsilon`: ε = -sqrt(1 - ᾱ_t) · score."""
    _, noise = _coefficients(schedule, t, score)
    return -_to_dtype(noise, score) * score
