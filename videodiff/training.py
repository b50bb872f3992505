"""Diffusion-forcing training: toydiff's objective and loop, with one noise level per frame.

The only thing that changes from image diffusion is *how the noise levels are drawn* for a clip of
F frames (`VideoDiffusionObjective.sample_timesteps`); the noising, the prediction target, the
weighting and the loop are toydiff's, unchanged — `DiffusionObjective` already averages the squared
error per frame when t has shape (B, F).

Three ways of drawing the levels t (B, F), the paper's method and its two baselines:

    diffusion_forcing  every frame its own level, independently uniform       t[b, f] ~ U{0..T-1}
                       (Chen et al. 2024). The model sees every mix of clean and noisy frames, so
                       at sampling time any pattern works: a clean past and a noisy future
                       (prediction), clean ends and a noisy middle (interpolation), a pyramid…
                       Options: `clean_history_probability`, the share of clips whose first frames
                       (a random number of them, or `clean_history_frames`) are made clean,
                       `shared_future_level`, one level for the rest of those clips (or with
                       `future_level_lag` staggered levels, as the pyramid matrix samples them),
                       `history_noise_max`, that history lightly noised instead,
                       `model_history_probability`, that history made by the model itself
                       from the real frames before it, `corrupt_history_probability`,
                       that history with a ball lost or repainted, and `whole_window_probability`,
                       a share q of all clips, taken from those without a clean history, given one
                       level over the whole window (a video from nothing starts so); see `__init__`.
    full_sequence      one level shared by the whole clip                     t[b, :] = k ~ U{0..T-1}
                       (a video diffusion model as usually trained): it has never seen a clean frame
                       beside a noisy one, so conditioning on real frames is out of distribution.
    clean_context      the first `context_frames` frames clean (level 0), one shared level on the
                       rest, and no loss on the context: a model trained for exactly one task,
                       prediction from that many frames.

Clips are random windows of F consecutive frames of longer videos (`VideoClips`). With `anchor_frame`
(a model built with VideoDiTConfig.anchor_frame) every clip has one more frame in front, an earlier frame
of the same video, and with `memory_frames` M more after it, frames from further back at a stride
(VideoDiTConfig.memory_frames); these leading frames are always clean and never learned, and the levels of
the window after them are drawn as above.
"""

from __future__ import annotations

from typing import Optional

import torch

from toydiff.losses import DiffusionObjective
from toydiff.schedules import NoiseSchedule
from toydiff.training import TensorBatches, unwrap_distributed
# CLEAN_LEVEL: a clean frame's level, as the sampler shows context
from videodiff.sampling import CLEAN_LEVEL, memory_indices, rollout, with_labels

NOISE_MODES = ("diffusion_forcing", "full_sequence", "clean_context")


def whole_window_fits(whole_window_probability: float, clean_history_probability: float) -> bool:
    """Whether a share q of whole-window clips fits beside a share p of clean-history clips: 0 <= q <= 1 - p
    (up to rounding, so that p = 0.9 and q = 0.1 fit)."""
    return 0.0 <= whole_window_probability <= 1.0 - clean_history_probability + 1e-9


class VideoDiffusionObjective(DiffusionObjective):
    """The denoising loss on clips x0 (B, F, C, H, W), with per-frame levels drawn by ``noise_mode``."""

    def __init__(self, schedule: NoiseSchedule, prediction_type: str = "v", weighting: str = "uniform",
                 min_snr_gamma: float = 5.0, noise_mode: str = "diffusion_forcing", context_frames: int = 0,
                 clean_history_probability: float = 0.0, shared_future_level: bool = False,
                 clean_history_frames: Optional[int] = None, clean_frame_loss: bool = True,
                 history_noise_max: int = 0, model_history_probability: float = 0.0, model_history_steps: int = 2,
                 anchor_frame: bool = False, corrupt_history_probability: float = 0.0,
                 corrupt_history_end: bool = False, memory_frames: int = 0,
                 label_dropout: float = 0.0, null_label: Optional[int] = None,
                 timestep_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                 future_level_lag: int = 0, whole_window_probability: float = 0.0):
        super().__init__(schedule, prediction_type, weighting, min_snr_gamma, label_dropout, null_label,
                         timestep_sampling, logit_mean, logit_std)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"unknown noise_mode {noise_mode!r}; expected one of {', '.join(NOISE_MODES)}")
        if noise_mode == "clean_context" and context_frames < 1:
            raise ValueError(f"noise_mode 'clean_context' needs context_frames >= 1, got {context_frames}")
        if not 0.0 <= clean_history_probability <= 1.0:
            raise ValueError(f"clean_history_probability must lie in [0, 1], got {clean_history_probability}")
        if noise_mode != "diffusion_forcing" and (clean_history_probability > 0 or shared_future_level):
            raise ValueError(f"clean_history_probability and shared_future_level apply to noise_mode "
                             f"'diffusion_forcing' only; got {clean_history_probability} and {shared_future_level} "
                             f"with noise_mode {noise_mode!r} (set them to 0 and False)")
        self.noise_mode = noise_mode
        self.context_frames = context_frames if noise_mode == "clean_context" else 0
        # Independent uniform levels almost never show several clean frames before noisy ones (with
        # T = 1000, four frames all below level 50 come up once in 160 000 clips), yet that is exactly
        # what prediction from real frames asks. With this probability a clip instead gets a clean
        # history of random length 1..F-1 (level 0), the other frames keeping their independent levels;
        # clean_history_frames fixes that length instead (a rollout's context, say).
        self.clean_history_probability = clean_history_probability
        if clean_history_frames is not None and clean_history_frames < 1:
            raise ValueError(f"clean_history_frames must be a number of frames >= 1 (or None for a random "
                             f"length), got {clean_history_frames}")
        self.clean_history_frames = clean_history_frames
        # shared_future_level: the frames after such a clean history share one level drawn for the clip
        # instead of keeping independent ones — the task a rollout window poses (clean history, then new
        # frames noised together), as clean_context trains it, but with a history of any length and with the
        # other clips still at independent levels, so every pattern the samplers and guidance use is seen.
        if shared_future_level and not clean_history_probability > 0:
            raise ValueError("shared_future_level applies to the clips given a clean history: set "
                             "clean_history_probability > 0")
        self.shared_future_level = shared_future_level
        # future_level_lag L > 0 (with shared_future_level): the frames after the history are staggered instead of
        # sharing one level, the g-th new frame L timesteps noisier than the one before, as the pyramid scheduling
        # matrix shows them at every row (videodiff.sampling.scheduling_matrix; L = T / N for N steps). The first
        # new frame's level s is drawn uniformly from -(G - 1) L .. T - 1 for G new frames; frame g sits at
        # s + g L, capped at T - 1, and below 0 it is clean: a frame the pyramid has finished, which the sampler
        # shows as history (at the history's level, so with history_noise_max at that level too) and which gets
        # no loss, so clean_frame_loss is refused. Every row of the pyramid matrix at N = T / L steps along the
        # trailing ladder is such a pattern (at s = T - 1 - m L); other spacings and step counts are not. The
        # level draw is uniform whatever timestep_sampling says, so both are refused.
        if isinstance(future_level_lag, bool) or not isinstance(future_level_lag, int) \
                or not 0 <= future_level_lag < schedule.num_timesteps:
            raise ValueError(f"future_level_lag must be a number of timesteps in 0..{schedule.num_timesteps - 1} "
                             f"(0 = one shared level), got {future_level_lag!r}")
        if future_level_lag and not shared_future_level:
            raise ValueError("future_level_lag staggers the levels of the frames after a clean history: set "
                             "shared_future_level=True (and clean_history_probability > 0)")
        if future_level_lag and clean_frame_loss:
            raise ValueError("future_level_lag makes the frames the pyramid has finished clean, and a clean frame's "
                             "target is not learnable: set clean_frame_loss=False")
        if future_level_lag and timestep_sampling != "uniform":
            raise ValueError(f"future_level_lag draws its levels uniformly; got timestep_sampling "
                             f"{timestep_sampling!r}")
        self.future_level_lag = future_level_lag
        # A frame at the clean level is shown as x_t = sqrt(ᾱ_0) x_0 + sqrt(1 - ᾱ_0) ε with sqrt(1 - ᾱ_0)
        # = 0.01 (linear β): its ε (and so its v ≈ ε) cannot be told from x_0 and is not learnable; its
        # squared error stays near 1 while the learnable frames' falls, so those frames add gradient
        # noise and nothing else. clean_frame_loss=False gives them no loss, as the clean context of
        # clean_context has none: a clean frame is given, not learned.
        self.clean_frame_loss = clean_frame_loss
        # history_noise_max K > 0: the history of a clip given one is shown at a level drawn uniformly from
        # 0..K (one level per clip, the whole history alike) instead of clean. A rollout shows the frames it
        # generated as history re-noised to a level k_s (the stabilised history of `sample_window`); trained
        # on clean histories only, the model has seen k_s > 0 next to a shared future almost never. A noised
        # history frame is a frame at a learnable level, so it keeps its loss (clean_frame_loss concerns
        # level 0 only). K = 0 draws nothing and trains exactly as before.
        if isinstance(history_noise_max, bool) or not isinstance(history_noise_max, int) \
                or not 0 <= history_noise_max < schedule.num_timesteps:
            raise ValueError(f"history_noise_max must be a timestep in 0..{schedule.num_timesteps - 1} "
                             f"(0 = clean histories), got {history_noise_max!r}")
        if history_noise_max and not clean_history_probability > 0:
            raise ValueError("history_noise_max applies to the clips given a clean history: set "
                             "clean_history_probability > 0")
        self.history_noise_max = history_noise_max
        # model_history_probability p > 0: with probability p a batch's history is the model's own. A rollout
        # conditions every window after the first on frames the model made, a little off the true path and a
        # little blurred, while training shows it real frames only; the errors then compound window by window.
        # Such a batch takes clips of F + (F - H) frames (H = clean_history_frames, F = the model's window):
        # the model continues the first H real frames by F - H frames, as the rollout's first window does
        # (full-sequence matrix, ``model_history_steps`` DDIM steps, no gradient), and the training window is
        # the last H of those known frames, now partly or wholly generated, followed by the F - H real frames
        # that come next. The targets stay real: the model learns to continue the true video from its own
        # history. The other batches take the first F frames of the same clips. (The clips given no clean history
        # keep their levels, history included: their generated frames are noised and learned like any other.)
        if not 0.0 <= model_history_probability <= 1.0:
            raise ValueError(f"model_history_probability must lie in [0, 1], got {model_history_probability}")
        if model_history_probability > 0 and (noise_mode != "diffusion_forcing" or not clean_history_probability > 0
                                              or clean_history_frames is None):
            raise ValueError("model_history_probability needs diffusion forcing with a clean history of fixed length "
                             "(clean_history_probability > 0 and clean_history_frames set): that history is what the "
                             "model's own frames replace")
        if isinstance(model_history_steps, bool) or not isinstance(model_history_steps, int) or model_history_steps < 1:
            raise ValueError(f"model_history_steps must be a number of sampling steps >= 1, got {model_history_steps!r}")
        self.model_history_probability = model_history_probability
        self.model_history_steps = model_history_steps
        # anchor_frame: every clip starts with an anchor (VideoDiTConfig.anchor_frame, VideoClips(anchor_reach=...)),
        # always shown clean and never learned; the levels after it are drawn as for any window.
        self.anchor_frame = bool(anchor_frame)
        # memory_frames M: the anchor (if any) is followed by M memory frames (VideoDiTConfig.memory_frames,
        # VideoClips(memory=...)), clean and never learned like it. Together: the clip's leading frames.
        if isinstance(memory_frames, bool) or not isinstance(memory_frames, int) or memory_frames < 0:
            raise ValueError(f"memory_frames must be an integer >= 0, got {memory_frames!r}")
        if memory_frames and model_history_probability > 0:
            raise ValueError("model_history_probability does not support memory frames: the model's own history "
                             "would need its memory too")
        self.memory_frames = memory_frames
        self.leading_frames = int(self.anchor_frame) + memory_frames
        self.leading_names = " and ".join(["an anchor"] * self.anchor_frame
                                          + [f"{memory_frames} memory frames"] * bool(memory_frames))  # for errors
        # corrupt_history_probability p > 0: the share of the clips given a clean history whose history is
        # taken from a corrupted copy of the video (videodiff.data.corrupted_copies: one ball left out, or
        # repainted), while the anchor and the frames to learn stay the video's own. Real histories never lose
        # a ball; a rollout's history does, and a model trained on real ones continues it without the ball.
        # Here the anchor is the only frame that shows what the history lost. Clips then carry the corrupted
        # copy of their window after it (VideoClips(corrupted=...)), (B, [1 +] 2F, ...); only the history's
        # frames are taken from it, and only where the history was drawn clean, so no corrupted frame is ever
        # learned (clean frames have no loss). corrupt_history_end takes only the history's last k frames from
        # the copy, k uniform in 1..H-1, as a rollout loses a ball: the frames before still show it, and then no
        # anchor is needed. Memory frames stay the video's own: with them, they show what a whole corrupted
        # history lost, and where.
        if not 0.0 <= corrupt_history_probability <= 1.0:
            raise ValueError(f"corrupt_history_probability must lie in [0, 1], got {corrupt_history_probability}")
        fixed_clean_history = (noise_mode == "diffusion_forcing" and clean_history_probability > 0
                               and clean_history_frames is not None and not history_noise_max
                               and not clean_frame_loss and not model_history_probability)
        # what shows the lost ball: the anchor or memory frames, or (end only) the history's first frames
        witness = clean_history_frames is not None and clean_history_frames >= 2 if corrupt_history_end \
            else self.leading_frames > 0
        if corrupt_history_probability > 0 and not (fixed_clean_history and witness):
            raise ValueError("corrupt_history_probability needs a clean history of fixed length (clean_history_probability "
                             "> 0, clean_history_frames set, history_noise_max 0), no loss on clean frames "
                             "(clean_frame_loss=False), no model history, and something that shows what the history "
                             "lost: an anchor frame (anchor_frame=True) or memory frames for a whole corrupted history, "
                             "the history's first frames (clean_history_frames >= 2) with corrupt_history_end")
        self.corrupt_history_probability = float(corrupt_history_probability)
        self.corrupt_history_end = bool(corrupt_history_end)
        # whole_window_probability q > 0: the share of all clips given one level over the whole window, drawn
        # from the clips without a clean history (so q <= 1 - clean_history_probability). A clean history in
        # most clips teaches prediction, and the rest keep independent levels, which a window with no history
        # at one level (the first window of a video from nothing, `videodiff.sampling.rollout` with no real
        # frame) almost never shows; these clips show it, as full-sequence training does for every clip.
        # One uniform draw u per clip decides both: u < p a clean history, p <= u < p + q a whole window.
        if not whole_window_fits(whole_window_probability, clean_history_probability):
            raise ValueError(f"whole_window_probability must lie in [0, 1 - clean_history_probability] = "
                             f"[0, {1.0 - clean_history_probability:g}] (the clips without a clean history), "
                             f"got {whole_window_probability}")
        if whole_window_probability > 0 and noise_mode != "diffusion_forcing":
            raise ValueError(f"whole_window_probability applies to noise_mode 'diffusion_forcing' only (noise_mode "
                             f"{noise_mode!r} draws its own levels); got {whole_window_probability}")
        if whole_window_probability > 0 and self.leading_frames:
            raise ValueError(f"whole_window_probability teaches the first window of a video from nothing, which a "
                             f"model with {self.leading_names} never draws (it reads real frames); got "
                             f"{whole_window_probability}")
        self.whole_window_probability = float(whole_window_probability)

    def __call__(self, model, batch, generator: Optional[torch.Generator] = None):
        if self.model_history_probability > 0:
            clips, labels, _ = self.unpack(batch)
            batch = (self.window_with_model_history(model, clips, generator, labels), *batch[1:])
        if self.corrupt_history_probability > 0:
            clips, labels, extras = self.unpack(batch)
            x0, corrupted = self.split_corrupted(clips)
            t = self.sample_timesteps(x0, generator)  # (B, [1 +] F)
            x0 = self.with_corrupted_history(x0, corrupted, t, generator)
            return self.loss_at_levels(model, x0, t, labels, extras, generator)
        return super().__call__(model, batch, generator)

    def split_corrupted(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """clips (B, L + 2F, ...) of VideoClips(corrupted=...), L the leading frames (anchor, memory) -> (the
        leading frames and the window (B, L + F, ...), the window's corrupted copy (B, F, ...))."""
        leading = self.leading_frames
        if clips.ndim < 3 or clips.shape[1] < leading + 2 or (clips.shape[1] - leading) % 2:
            named = f"{self.leading_names}, " if leading else ""
            raise ValueError(f"corrupt_history_probability > 0 needs clips of {named}a window and the window's "
                             f"corrupted copy, (B, {leading} + 2F, ...) "
                             f"(VideoClips(corrupted=...)), got {tuple(clips.shape)}")
        window = (clips.shape[1] - leading) // 2
        return clips[:, :leading + window], clips[:, leading + window:]

    def with_corrupted_history(self, x0: torch.Tensor, corrupted: torch.Tensor, t: torch.Tensor,
                               generator: Optional[torch.Generator]) -> torch.Tensor:
        """x0 (B, L + F, ...) with its history frames taken from ``corrupted`` (B, F, ...) in the clips
        whose history t holds clean, each with probability corrupt_history_probability: the whole history, or
        (corrupt_history_end) its last k frames, k uniform in 1..H-1 per clip."""
        frames, start = self.clean_history_frames, self.leading_frames
        history = slice(start, start + frames)
        clean = (t[:, history] == CLEAN_LEVEL).all(dim=1)  # (B,)
        chosen = clean & (torch.rand(len(x0), generator=generator, device=x0.device) < self.corrupt_history_probability)
        replaced = chosen[:, None].expand(len(x0), frames)  # (B, H)
        if self.corrupt_history_end:
            lost = torch.randint(1, frames, (len(x0),), generator=generator, device=x0.device)  # (B,) k in 1..H-1
            replaced = replaced & (torch.arange(frames, device=x0.device) >= frames - lost[:, None])
        edited = x0.clone()
        mask = replaced.view(*replaced.shape, *([1] * (x0.ndim - 2)))  # (B, H, 1, ...)
        edited[:, history] = torch.where(mask, corrupted[:, :frames], x0[:, history])
        return edited

    def clip_frames(self, window: int) -> int:
        """How many frames of a video each training clip needs for a model of ``window`` frames: F, or
        F + (F - H) when batches may take the model's own history (not counting an anchor)."""
        if self.model_history_probability > 0:
            return window + window - self.clean_history_frames
        return window

    def window_with_model_history(self, model, clips: torch.Tensor, generator: Optional[torch.Generator],
                                  labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """clips (B, F + F - H, C, H, W) -> training windows (B, F, C, H, W): the first F frames, or, with
        probability ``model_history_probability`` (one draw per batch), the last H frames of the real
        history continued by the model followed by the F - H real frames after them (see ``__init__``).
        labels (B,): the clips' scene labels, which the model is given as a rollout gives them."""
        network = unwrap_distributed(model)  # under torchrun the loop hands over a wrapper without the config
        window, history = network.config.num_frames, self.clean_history_frames
        anchors = int(self.anchor_frame)  # clips carry their anchor in front: it stays, in front
        if clips.ndim < 3 or clips.shape[1] != anchors + self.clip_frames(window):
            raise ValueError(f"model_history_probability > 0 needs clips of {anchors + self.clip_frames(window)} "
                             f"frames ({'an anchor, ' if anchors else ''}window {window} + {window - history} to "
                             f"continue), got shape {tuple(clips.shape)}")
        draw = torch.rand((), generator=generator, device=clips.device)
        if not bool(draw < self.model_history_probability):
            return clips[:, :anchors + window]
        anchor, clips = clips[:, :anchors], clips[:, anchors:]
        denoiser = network if labels is None else with_labels(network, labels)
        with torch.no_grad():
            known = rollout(denoiser, clips[:, :history], window - history, window, self.schedule,
                            kind="full_sequence", num_steps=self.model_history_steps,
                            prediction_type=self.prediction_type,
                            anchor=anchor[:, 0] if anchors else None, generator=generator)  # (B, F, ...)
        return torch.cat([anchor, known[:, -history:].detach(), clips[:, window:]], dim=1)  # (B, anchors + F, ...)

    def sample_timesteps(self, x0: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """t (B, F) int64 for clips x0 (B, F, ...), see the module's docstring; with L leading frames (an anchor,
        memory frames) their levels are CLEAN_LEVEL and the window after them is drawn as a clip of F - L frames."""
        leading = self.leading_frames
        if leading:
            if x0.ndim < 3 or x0.shape[1] <= leading:
                raise ValueError(f"expected clips of {self.leading_names} and a window, (B, {leading} + F, ...), "
                                 f"got {tuple(x0.shape)}")
            window = self.window_timesteps(x0[:, leading:], generator)  # (B, F - L)
            clean = torch.full_like(window[:, :1], CLEAN_LEVEL).expand(-1, leading)  # (B, L)
            return torch.cat([clean, window], dim=1)  # (B, F)
        return self.window_timesteps(x0, generator)

    def window_timesteps(self, x0: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """t (B, F) int64 for windows x0 (B, F, ...) with no anchor, see the module's docstring."""
        if x0.ndim < 3:
            raise ValueError(f"expected clips of shape (B, F, ...), got {tuple(x0.shape)}")
        batch, frames = x0.shape[:2]
        if self.context_frames >= frames:
            raise ValueError(f"context_frames={self.context_frames} leaves no frame to learn in clips of {frames} frames")
        fixed_history = self.clean_history_frames if self.clean_history_probability > 0 else None
        if fixed_history is not None and fixed_history >= frames:
            raise ValueError(f"clean_history_frames={self.clean_history_frames} leaves no frame to learn in clips "
                             f"of {frames} frames")
        if self.noise_mode == "diffusion_forcing":
            t = self.draw_levels((batch, frames), generator, x0.device)  # (B, F), independent levels
            # One uniform draw per clip decides its kind: u < p a clean history, p <= u < p + q a whole window
            # (no draw when neither is asked for, so that such a run draws what it always drew).
            p, q = self.clean_history_probability, self.whole_window_probability
            u = torch.rand(batch, generator=generator, device=x0.device) if p > 0 or q > 0 else None  # (B,)
            if p > 0:
                chosen = u < p  # (B,) given a clean history
                if self.clean_history_frames is None:
                    length = torch.randint(1, frames, (batch,), generator=generator, device=x0.device)  # 1..F-1
                else:
                    length = torch.full((batch,), self.clean_history_frames, device=x0.device)
                in_history = torch.arange(frames, device=x0.device)[None, :] < length[:, None]  # (B, F)
                if self.future_level_lag:
                    t = torch.where(chosen[:, None], self.staggered_levels(length, frames, generator, x0.device), t)
                elif self.shared_future_level:
                    shared = self.draw_levels((batch, 1), generator, x0.device).expand(batch, frames)  # (B, F)
                    t = torch.where(chosen[:, None], shared, t)
                history_level = torch.full_like(t, CLEAN_LEVEL)  # (B, F)
                if self.history_noise_max:
                    history_level = torch.randint(CLEAN_LEVEL, self.history_noise_max + 1, (batch, 1),
                                                  generator=generator, device=x0.device).expand(batch, frames)
                shown_as_history = in_history
                if self.future_level_lag:  # the frames the pyramid has finished are history to the sampler
                    shown_as_history = in_history | (t == CLEAN_LEVEL)
                t = torch.where(chosen[:, None] & shown_as_history, history_level, t)
            if q > 0:  # one level over the whole window
                whole = (p <= u) & (u < p + q)  # (B,)
                shared = self.draw_levels((batch, 1), generator, x0.device).expand(batch, frames)  # (B, F)
                t = torch.where(whole[:, None], shared, t)
            return t
        shared = self.draw_levels((batch, 1), generator, x0.device)  # (B, 1)
        t = shared.expand(batch, frames).clone()  # (B, F)
        t[:, :self.context_frames] = CLEAN_LEVEL
        return t

    def staggered_levels(self, history: torch.Tensor, frames: int, generator: Optional[torch.Generator],
                         device) -> torch.Tensor:
        """(B, F) levels of the frames after each clip's history (its length ``history`` (B,)), the g-th new frame
        ``future_level_lag`` timesteps above the one before it (see ``__init__``); the history's entries are
        overwritten by the caller."""
        lag, top = self.future_level_lag, self.schedule.num_timesteps - 1
        after = torch.arange(frames, device=device)[None, :] - history[:, None]  # (B, F): g, negative in the history
        span = (frames - 1 - history) * lag  # (B,): (G - 1) L
        unit = torch.rand(history.shape, generator=generator, device=device)
        first = (unit * (top + 1 + span)).long() - span  # (B,): uniform in -(G - 1) L .. T - 1
        levels = (first[:, None] + after * lag).clamp(max=top)  # (B, F)
        return torch.where(levels < 0, torch.full_like(levels, CLEAN_LEVEL), levels)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        weight = super().loss_weight(t)  # (B, F)
        leading = self.leading_frames
        if leading:
            weight[:, :leading] = 0.0  # the anchor and memory frames are given, not learned
        if self.context_frames:
            weight[:, leading:leading + self.context_frames] = 0.0  # the context is given, not learned
        if not self.clean_frame_loss:
            weight = torch.where(t == CLEAN_LEVEL, torch.zeros_like(weight), weight)
        return weight

    def config_dict(self) -> dict:
        return {**super().config_dict(), "noise_mode": self.noise_mode, "context_frames": self.context_frames,
                "clean_history_probability": self.clean_history_probability,
                "shared_future_level": self.shared_future_level, "future_level_lag": self.future_level_lag,
                "clean_history_frames": self.clean_history_frames,
                "clean_frame_loss": self.clean_frame_loss, "history_noise_max": self.history_noise_max,
                "model_history_probability": self.model_history_probability,
                "model_history_steps": self.model_history_steps, "anchor_frame": self.anchor_frame,
                "corrupt_history_probability": self.corrupt_history_probability,
                "corrupt_history_end": self.corrupt_history_end, "memory_frames": self.memory_frames,
                "whole_window_probability": self.whole_window_probability}


class VideoClips(TensorBatches):
    """Random windows of ``window`` consecutive frames from in-memory videos.

    videos: (N, L, ...) — N videos of L >= window frames (latents (N, L, C, H, W) here);
    labels: optional (N,). A batch is (clips (B, window, ...),) or (clips, labels (B,)): a video
    and a start frame drawn uniformly for each clip, with the training loop's generator.
    anchor_reach: for a model with an anchor frame, every clip gets one more frame in front, (B, 1 + window,
    ...): a frame of the same video drawn uniformly from its first frame up to the clip's frame
    anchor_reach - 1 (anchor_reach = the clean history's length: the anchor may be any frame up to the
    history's last, as a rollout's last real frame is in its first window and lies ever further back after).
    memory: (M, stride) for a model with memory frames (VideoDiTConfig.memory_frames, memory_stride): every clip
    gets M more frames in front of its window, after the anchor if any, the frames memory_indices(start, M,
    stride) of the same video (start: the window's first frame), as a rollout takes them; drawn by no
    random number, so the clips are the same as without.
    corrupted: a corrupted copy of the videos (same shape; videodiff.data.corrupted_copies, encoded): every
    clip then carries the copy's frames of its window after its own, (B, L + 2 window, ...) with L its leading
    frames, for VideoDiffusionObjective(corrupt_history_probability=...) to take its history from. It draws
    nothing more.
    """

    def __init__(self, videos: torch.Tensor, window: int, labels: Optional[torch.Tensor] = None,
                 anchor_reach: Optional[int] = None, corrupted: Optional[torch.Tensor] = None,
                 memory: Optional[tuple[int, int]] = None):
        tensors = (videos,) if labels is None else (videos, labels)
        super().__init__(*tensors)
        if corrupted is not None and corrupted.shape != videos.shape:
            raise ValueError(f"the corrupted copy of the videos must have their shape {tuple(videos.shape)}, got "
                             f"{tuple(corrupted.shape)}")
        self.corrupted = corrupted
        if videos.ndim < 3:
            raise ValueError(f"VideoClips expected videos of shape (N, L, ...), got {tuple(videos.shape)}")
        if not 1 <= window <= videos.shape[1]:
            raise ValueError(f"the clip window must lie in 1..{videos.shape[1]} (the videos' length), got {window}")
        if anchor_reach is not None and (isinstance(anchor_reach, bool) or not isinstance(anchor_reach, int)
                                         or not 1 <= anchor_reach <= window):
            raise ValueError(f"anchor_reach must be a number of the clip's frames in 1..{window} (or None: no "
                             f"anchor), got {anchor_reach!r}")
        if memory is not None and (len(memory) != 2 or any(isinstance(value, bool) or not isinstance(value, int)
                                                           for value in memory) or memory[0] < 1 or memory[1] < 1):
            raise ValueError(f"memory must be (frames, stride), two integers >= 1 (or None: no memory frames), "
                             f"got {memory!r}")
        self.window = window
        self.anchor_reach = anchor_reach
        self.memory = None if memory is None else tuple(memory)

    def to(self, device) -> "VideoClips":
        videos = self.tensors[0].to(device)
        labels = self.tensors[1].to(device) if len(self.tensors) > 1 else None
        corrupted = self.corrupted.to(device) if self.corrupted is not None else None
        return VideoClips(videos, self.window, labels, self.anchor_reach, corrupted, self.memory)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple:
        videos = self.tensors[0]
        device = generator.device
        index = torch.randint(0, len(videos), (batch_size,), generator=generator, device=device)  # (B,)
        start = torch.randint(0, videos.shape[1] - self.window + 1, (batch_size,), generator=generator,
                              device=device)  # (B,)
        frames = start[:, None] + torch.arange(self.window, device=device)  # (B, window)
        leading = []  # (B, 1) the anchor, (B, M) the memory frames
        if self.anchor_reach is not None:
            # uniform over frames 0 .. start + reach - 1 of the same video
            reach = (start + self.anchor_reach).double()  # (B,)
            anchor = (torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
                      * reach).long().clamp_max(start + self.anchor_reach - 1)  # (B,)
            leading.append(anchor[:, None])
        if self.memory is not None:
            leading.append(memory_indices(start, *self.memory))  # (B, M)
        frames = torch.cat([*leading, frames], dim=1)  # (B, L + window)
        clips = videos[index[:, None].to(videos.device), frames.to(videos.device)]  # (B, L + window, ...)
        if self.corrupted is not None:
            window = frames[:, -self.window:].to(videos.device)  # (B, window)
            clips = torch.cat([clips, self.corrupted[index[:, None].to(videos.device), window]], dim=1)
        if len(self.tensors) == 1:
            return (clips,)
        return clips, self.tensors[1][index.to(videos.device)]
