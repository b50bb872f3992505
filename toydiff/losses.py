"""The denoising objective: noise a clean batch at random timesteps and regress the network's output.

    t ~ U{0, …, T-1},  ε ~ N(0, I),  x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε
    loss = w(t) · || f_θ(x_t, t, y) - target ||²,   target ∈ {ε, x_0, v}        (DDPM eq. 14, "L_simple")

An objective is a callable ``objective(model, batch, generator) -> (loss, logs)``; the shared training
loop (:mod:`toydiff.training`) knows nothing else about diffusion.  Later layers subclass
:class:`DiffusionObjective` (e.g. one noise level per video frame) instead of writing their own loss.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch

from toydiff.guidance import drop_labels
from toydiff.parameterisation import check_prediction_type, predict_x0, training_target
from toydiff.schedules import NoiseSchedule, broadcast_to_sample

WEIGHTINGS = ("uniform", "min_snr")
TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")


def sample_levels(shape, num_timesteps: int, generator: Optional[torch.Generator], device=None,
                  sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
    """Timesteps of the given shape, int64 in [0, T-1], drawn by ``sampling``:

    "uniform": t ~ U{0, …, T-1}, as in DDPM.
    "logit_normal": t = floor(T · sigmoid(m + s·n)), n ~ N(0, 1) (the density of Stable Diffusion 3's
    training timesteps): it trains the middle of the schedule more than its ends, and with m > 0 it
    shifts the training towards high noise levels, where a sample's layout is decided.
    """
    if sampling == "uniform":
        return torch.randint(0, num_timesteps, tuple(shape), generator=generator, device=device)
    if sampling == "logit_normal":
        normal = torch.randn(tuple(shape), generator=generator, device=device)
        fraction = torch.sigmoid(logit_mean + logit_std * normal)
        return (fraction * num_timesteps).long().clamp(0, num_timesteps - 1)
    raise ValueError(f"unknown timestep sampling {sampling!r}; expected one of {', '.join(TIMESTEP_SAMPLINGS)}")


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-γ loss weights (Hang et al. 2023), expressed for each prediction type.

    The ideal weight on the x_0-error is min(snr, γ); an ε-error equals the x_0-error times snr, and a
    v-error times (snr + 1), so those are divided out.
    """
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "x0":
        return clipped
    return clipped / (snr + 1.0)


class DiffusionObjective:
    """Denoising loss for any prediction type, weighting, and optional label dropout.

    batch: (x0,), (x0, labels) or (x0, labels, *extras); x0: (B, ...), labels: (B,) int64.
    extra_inputs: the names by which the model receives the extra tensors of a batch, in order: with
    ``extra_inputs=("angles",)`` a batch (x0, labels, a) calls ``model(x_t, t, labels, angles=a)``
    (imagediff's angle conditioning). They are never dropped: only the label has a null value.
    label_dropout: probability of replacing a label by ``null_label`` — in training mode only, so an
    evaluation pass with ``model.eval()`` always sees the real labels (docs/pitfalls.md, pitfall 8).
    self_condition: probability that a training batch is self-conditioned (Chen, Zhang & Hinton 2022):
    the model first denoises x_t with no estimate (without gradients), then again with its own x̂_0
    as ``previous_x0``; the loss is the second pass's. The other batches get ``previous_x0=None``
    (zeros), which is what the first sampling step sees. The model must accept ``previous_x0=``
    (a DiT built with ``self_condition=True``); 0 (the default) never passes it.
    """

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "epsilon", weighting: str = "uniform",
                 min_snr_gamma: float = 5.0, label_dropout: float = 0.0, null_label: Optional[int] = None,
                 timestep_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 self_condition: float = 0.0, extra_inputs: Sequence[str] = ()):
        check_prediction_type(prediction_type, schedule)
        if not 0.0 <= self_condition <= 1.0:
            raise ValueError(f"self_condition is the probability that a batch is self-conditioned, in [0, 1]; "
                             f"got {self_condition}")
        if timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"unknown timestep sampling {timestep_sampling!r}; expected one of "
                             f"{', '.join(TIMESTEP_SAMPLINGS)}")
        if not logit_std > 0:
            raise ValueError(f"logit_std must be positive, got {logit_std}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}")
        if label_dropout > 0 and null_label is None:
            raise ValueError("label_dropout needs a null_label (the reserved 'no label' index)")
        self.schedule = schedule
        self.prediction_type = prediction_type
        self.weighting = weighting
        self.min_snr_gamma = min_snr_gamma
        self.label_dropout = label_dropout
        self.null_label = null_label
        self.timestep_sampling = timestep_sampling
        self.logit_mean = logit_mean
        self.logit_std = logit_std
        self.self_condition = float(self_condition)
        self.extra_inputs = tuple(extra_inputs)

    def draw_levels(self, shape, generator: Optional[torch.Generator], device) -> torch.Tensor:
        """Timesteps of ``shape`` drawn by this objective's ``timestep_sampling`` (see `sample_levels`)."""
        return sample_levels(shape, self.schedule.num_timesteps, generator, device, self.timestep_sampling,
                             self.logit_mean, self.logit_std)

    def sample_timesteps(self, x0: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """One timestep per example, (B,) int64.  Override for other shapes (e.g. per frame)."""
        return self.draw_levels(x0.shape[:1], generator, x0.device)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        if self.weighting == "uniform":
            return torch.ones(t.shape, dtype=torch.float64, device=t.device)
        return min_snr_weight(self.schedule.snr(t), self.min_snr_gamma, self.prediction_type)

    def __call__(self, model, batch, generator: Optional[torch.Generator] = None):
        x0, labels, extras = self.unpack(batch)
        t = self.sample_timesteps(x0, generator)                                  # (B,) or (B, F)
        return self.loss_at_levels(model, x0, t, labels, extras, generator)

    def unpack(self, batch) -> tuple:
        """A batch (x0[, labels[, extras...]]) -> (x0, labels or None, {extra input's name: tensor})."""
        x0 = batch[0]
        labels = batch[1] if len(batch) > 1 else None
        if len(batch) != 2 + len(self.extra_inputs) and (self.extra_inputs or len(batch) > 2):
            raise ValueError(f"a batch of {len(batch)} tensors, but this objective expects (x0, labels"
                             f"{''.join(', ' + name for name in self.extra_inputs)}) (extra_inputs={self.extra_inputs})")
        return x0, labels, dict(zip(self.extra_inputs, batch[2:]))

    def loss_at_levels(self, model, x0: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor], extras: dict,
                       generator: Optional[torch.Generator] = None):
        """The loss of ``__call__`` with the levels t already drawn: a subclass whose examples depend on
        their levels draws t, edits x0, then calls this."""
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = self.schedule.add_noise(x0, noise, t)                               # (B, ...)
        if labels is not None and model.training:
            labels = drop_labels(labels, self.label_dropout, self.null_label, generator)
        output = self.denoise(model, x_t, t, labels, generator, extras)
        target = training_target(self.schedule, x0, noise, t, self.prediction_type)
        squared_error = (output.float() - target.float()) ** 2                    # (B, ...)
        # Mean over everything the timestep does not index: per example, or per frame.
        per_item = squared_error.flatten(t.ndim).mean(dim=-1)                     # shape of t
        weighted = per_item * self.loss_weight(t).to(per_item.dtype)
        return weighted.mean(), {"t": t.detach(), "per_example_loss": per_item.detach()}

    def denoise(self, model, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor],
                generator: Optional[torch.Generator], extras: Optional[dict] = None) -> torch.Tensor:
        """The model's output on x_t, self-conditioned on its own first estimate with probability
        ``self_condition`` in training (always in eval mode, which is how a sampler runs it);
        ``extras`` (name -> tensor) are passed as keyword arguments."""
        arguments = (x_t, t) if labels is None else (x_t, t, labels)
        network = functools.partial(model, **extras) if extras else model
        if self.self_condition == 0.0:
            return network(*arguments)
        # One draw per batch, only for a self-conditioned objective, so other runs keep their random stream.
        draw = torch.rand((), generator=generator, device=x_t.device)
        chosen = not model.training or bool(draw < self.self_condition)
        if not chosen:
            return network(*arguments, previous_x0=None)
        with torch.no_grad():
            first = network(*arguments, previous_x0=None)
        estimate = predict_x0(self.schedule, first, t, x_t, self.prediction_type).to(x_t.dtype)  # (B, ...)
        return network(*arguments, previous_x0=estimate.detach())

    def config_dict(self) -> dict:
        return {"prediction_type": self.prediction_type, "weighting": self.weighting,
                "min_snr_gamma": self.min_snr_gamma, "label_dropout": self.label_dropout,
                "null_label": self.null_label, "timestep_sampling": self.timestep_sampling,
                "logit_mean": self.logit_mean, "logit_std": self.logit_std,
                "self_condition": self.self_condition}


class ClassifierObjective:
    """Cross-entropy of a noisy classifier p(y | x_t, t), for classifier guidance.

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε at uniform random t: the classifier must label points at
    every noise level the sampler will show it. Works for any sample shape (points, images, latents).
    batch: (x0 (B, ...), labels (B,) int64).
    """

    def __init__(self, schedule):
        self.schedule = schedule

    def __call__(self, model, batch, generator=None):
        x0, labels = batch
        t = torch.randint(0, self.schedule.num_timesteps, x0.shape[:1], generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        logits = model(self.schedule.add_noise(x0, noise, t), t)
        per_example = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
        return per_example.mean(), {"t": t, "per_example_loss": per_example.detach()}
