"""Trajectories through the video DiT: DDIM inversion of a real video, and a sampling run, with the
activations of chosen sites cached at chosen noise levels along the way.

DDIM run backwards (toydiff.samplers.ddim_invert) turns a real video's clean latents x_0 into the noise
x_T that deterministic DDIM would turn back into it, evaluating the model once per step, at levels
0, t_1, t_2, ... on the way up. Every one of those evaluations sees the real video at a known noise
level, so the DiT's states along the inverted trajectory describe *that* video, as the model
understands it, at every noise level: the features a probe reads (videodiff.interp.probes).

    trajectory = invert_video(run.model, latents, run.schedule, num_steps=10, prediction_type="v",
                              names=["resid_post"], select=pool_tokens)
    trajectory.levels                      # [0, 99, 199, ..., 899]: where the model was evaluated
    trajectory.caches[499]["resid_post", 2]  # block 2's pooled residual stream at level 499, (B, D)

By default all frames of the window share one noise level (full-sequence inversion): the question is
what the network makes of a whole clip. With ``history_frames=h`` the first h frames are held clean
instead — shown at every step with their clean latents at CLEAN_LEVEL, as a rollout shows its history —
and only the frames after them travel the trajectory: the question becomes how the network continues
that history, the task a diffusion-forcing model is mostly trained on. Hooks attached around the call (an
intervention, videodiff.interp.ablations) act at every step of the trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional

import torch

from imagediff.hooks import ActivationCache, caching, hook_points
from toydiff.samplers import SamplerState, ddim_invert, ddim_sample
from toydiff.schedules import NoiseSchedule
from videodiff.dit import require_plain_windows
from videodiff.sampling import CLEAN_LEVEL

# model(x_t (B, F, C, H, W), t (B, F)) -> prediction; the VideoDiT itself, or any function of that shape.
VideoDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Trajectory:
    """A DDIM inversion or sampling run: where the model was evaluated, what it saw, what was cached.

    levels: the timesteps of the model's evaluations, in the order they ran.
    states: x at each evaluation, (B, F, C, H, W) each (kept only with keep_states=True).
    caches: level -> ActivationCache of that evaluation (only the levels asked for).
    end: the last x: the inverted noise x_T, or the sampled x_0.
    """

    levels: list[int] = field(default_factory=list)
    states: list[torch.Tensor] = field(default_factory=list)
    caches: dict[int, ActivationCache] = field(default_factory=dict)
    end: Optional[torch.Tensor] = None


class _RecordingDenoiser:
    """Wraps a video model for toydiff's samplers: (x, t (B,)) -> model(x, t per frame), caching on the way.
    history (B, h, C, H, W) or None: clean latents that replace the first h frames of every x the model
    is shown, at CLEAN_LEVEL (the sampler's update of those frames is thrown away at the next call)."""

    def __init__(self, model: VideoDenoiser, trajectory: Trajectory, names, layers, select, levels,
                 keep_states: bool, history: Optional[torch.Tensor] = None) -> None:
        require_plain_windows(model, "a DDIM trajectory")
        self.model, self.trajectory = model, trajectory
        self.names, self.layers, self.select = names, layers, select
        self.levels = None if levels is None else {int(level) for level in levels}
        self.keep_states = keep_states
        self.history = history

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        level = int(t[0])
        per_frame = t[:, None].expand(-1, x.shape[1]).contiguous()  # (B, F): the same level for every frame
        if self.history is not None:
            x = _with_history(x, self.history)
            per_frame[:, :self.history.shape[1]] = CLEAN_LEVEL
        self.trajectory.levels.append(level)
        if self.keep_states:
            self.trajectory.states.append(x.detach().clone())
        wanted = self.names is not None and (self.levels is None or level in self.levels)
        if not wanted:
            return self.model(x, per_frame)
        with caching(self.model, self.names, self.layers, self.select) as store:
            output = self.model(x, per_frame)
        self.trajectory.caches[level] = ActivationCache(dict(store), hook_points(self.model))
        return output


def _with_history(x: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """x (B, F, ...) with its first h frames replaced by ``history`` (B, h, ...)."""
    return torch.cat([history, x[:, history.shape[1]:]], dim=1)


def _holding_history(callback: Callable[[SamplerState], None], history: torch.Tensor):
    """The callback, handed states whose first frames are the held history (the sampler's own x and
    x_0-estimate for those frames are the updates the next model call throws away)."""

    def held(state: SamplerState) -> None:
        callback(replace(state, x=_with_history(state.x, history), pred_x0=_with_history(state.pred_x0, history)))

    return held


def _check_request(latents: torch.Tensor, schedule: NoiseSchedule, num_steps, history_frames=0) -> None:
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"expected video latents of shape (B, F, C, H, W), got {got}.")
    if not isinstance(num_steps, int) or not 1 <= num_steps <= schedule.num_timesteps:
        raise ValueError(f"num_steps must be an integer in 1..{schedule.num_timesteps}, got {num_steps!r}.")
    frames = latents.shape[1]
    if isinstance(history_frames, bool) or not isinstance(history_frames, int) or not 0 <= history_frames < frames:
        raise ValueError(f"history_frames must be an integer in 0..{frames - 1} (the clip has {frames} frames and "
                         f"at least one must travel the trajectory), got {history_frames!r}.")


@torch.no_grad()
def invert_video(model: VideoDenoiser, latents: torch.Tensor, schedule: NoiseSchedule, *, num_steps: int = 10,
                 prediction_type: str = "v", names=None, layers: Optional[Iterable[int]] = None,
                 select=None, levels: Optional[Iterable[int]] = None, keep_states: bool = False,
                 spacing: str = "trailing", history_frames: int = 0) -> Trajectory:
    """DDIM-invert clean latents (B, F, C, H, W) in ``num_steps`` steps, caching along the way.

    names, layers, select: what to cache, as in imagediff.hooks.caching (names None: cache nothing).
    levels: the evaluation levels to cache at (None: all of them; see Trajectory.levels for which
    levels a run visits). history_frames h: the first h frames are held clean at every step (shown at
    CLEAN_LEVEL with their latents) and only the others are inverted; 0: every frame is.
    Returns a Trajectory whose ``end`` is the noise x_T (B, F, C, H, W) (the first h frames clean).
    """
    _check_request(latents, schedule, num_steps, history_frames)
    trajectory = Trajectory()
    history = latents[:, :history_frames].clone() if history_frames else None
    denoiser = _RecordingDenoiser(model, trajectory, names, layers, select, levels, keep_states, history)
    end = ddim_invert(denoiser, latents, schedule, num_steps=num_steps, spacing=spacing,
                      prediction_type=prediction_type)
    trajectory.end = end if history is None else _with_history(end, history)
    return trajectory


@torch.no_grad()
def sample_video(model: VideoDenoiser, noise: torch.Tensor, schedule: NoiseSchedule, *, num_steps: int = 10,
                 prediction_type: str = "v", names=None, layers: Optional[Iterable[int]] = None,
                 select=None, levels: Optional[Iterable[int]] = None, keep_states: bool = False,
                 spacing: str = "trailing", history_frames: int = 0,
                 callback: Optional[Callable[[SamplerState], None]] = None) -> Trajectory:
    """Deterministic DDIM from noise (B, F, C, H, W) to a clip, every frame at the same level, caching
    as `invert_video` does. ``sample_video(invert_video(x).end)`` returns x up to the discretisation
    error, smaller with more steps. history_frames h: the first h frames of ``noise`` are a clean
    history, held at every step (so ``sample_video(invert_video(x, history_frames=h).end,
    history_frames=h)`` continues x's history back to x); the callback sees them held too.
    Returns a Trajectory whose ``end`` is the sampled latents."""
    _check_request(noise, schedule, num_steps, history_frames)
    trajectory = Trajectory()
    history = noise[:, :history_frames].clone() if history_frames else None
    denoiser = _RecordingDenoiser(model, trajectory, names, layers, select, levels, keep_states, history)
    if history is not None and callback is not None:
        callback = _holding_history(callback, history)
    end = ddim_sample(denoiser, noise, schedule, num_steps=num_steps, spacing=spacing,
                      prediction_type=prediction_type, callback=callback)
    trajectory.end = end if history is None else _with_history(end, history)
    return trajectory
