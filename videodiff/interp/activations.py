"""Activations of the video DiT, cut down to what a question needs: frames, pooled tokens, frame-to-frame attention.

The hook points (imagediff.hooks) see tensors whose token axis depends on the site. The video DiT lays
its F · N tokens out time-major (frame 0's N tokens, then frame 1's, ...), so "frames 4 to 7" is one
contiguous range of tokens, wherever the token axis is:

    site kinds                                         shape                 token axis
    resid_pre/mid/post, attn_out, mlp_out,
      patch_embed, hidden, out                         (B, F·N, D or more)   1
    head_out                                           (B, F·N, heads, D)    1
    q, k, v, z                                         (B, heads, F·N, d)    2
    scores, pattern                                    (B, heads, F·N, F·N)  2 (queries) and 3 (keys)
    time_embed, condition, shift_*, scale_*, gate_*    (B, F, D)             frames, axis 1

`select_frames`, `pool_tokens`, `pool_tokens_per_frame` and `project` are ``select(name, tensor)`` functions for
`imagediff.hooks.run_with_cache` and `caching`: the cut happens inside the hook, so what is not
selected is never stored.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from einops import reduce

Select = Callable[[str, torch.Tensor], torch.Tensor]
Frames = Union[slice, Sequence[int], range]

PER_FRAME_KINDS = {"time_embed", "condition", "shift", "scale", "shift_attn", "scale_attn", "gate_attn",
                   "shift_mlp", "scale_mlp", "gate_mlp"}
HEAD_MAJOR_KINDS = {"q", "k", "v", "z"}
PATTERN_KINDS = {"scores", "pattern"}


def site_kind(name: str) -> str:
    """"blocks.2.attention.hook_q" -> "q"."""
    return name.rsplit(".", 1)[-1].removeprefix("hook_")


def token_axis(name: str) -> int:
    """The axis that runs over tokens (or over frames, for per-frame sites) at the site ``name``."""
    kind = site_kind(name)
    return 2 if kind in HEAD_MAJOR_KINDS or kind in PATTERN_KINDS else 1


def _frame_index(frames: Frames, num_frames: int) -> torch.Tensor:
    index = torch.arange(num_frames)[frames] if isinstance(frames, slice) else torch.as_tensor(list(frames))
    if index.numel() == 0 or index.min() < 0 or index.max() >= num_frames:
        raise ValueError(f"frames {frames!r} must pick at least one of the window's frames 0..{num_frames - 1}.")
    return index


def token_index(frames: Frames, num_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """The time-major token indices (len(frames) · N,) of the chosen frames."""
    index = _frame_index(frames, num_frames)  # (f,)
    return (index[:, None] * tokens_per_frame + torch.arange(tokens_per_frame)).reshape(-1)  # (f·N,)


def select_frames(frames: Frames, num_frames: int, tokens_per_frame: int) -> Select:
    """Keep only the tokens (or per-frame rows) of ``frames``. For scores and patterns the *queries* are
    cut and every key is kept, so each kept row still sums to 1."""
    frame_index = _frame_index(frames, num_frames)
    tokens = token_index(frames, num_frames, tokens_per_frame)

    def select(name: str, tensor: torch.Tensor) -> torch.Tensor:
        axis = token_axis(name)
        per_frame = site_kind(name) in PER_FRAME_KINDS and tensor.ndim == 3 and tensor.shape[1] == num_frames
        index = frame_index if per_frame else tokens
        return tensor.index_select(axis, index.to(tensor.device))

    return select


def _refuse_patterns(name: str) -> None:
    if site_kind(name) in PATTERN_KINDS:
        raise ValueError(f"{name}: pooling an attention pattern over tokens has no meaning; use frame_attention.")


def pool_tokens(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Mean over the token (or frame) axis: one vector per example, the probes' features.

    (B, T, D) -> (B, D); (B, heads, T, d) -> (B, heads·d); patterns are not pooled (an error).
    """
    _refuse_patterns(name)
    pooled = tensor.mean(dim=token_axis(name))  # the token axis removed
    return pooled.reshape(pooled.shape[0], -1)  # (B, features)


def pool_tokens_per_frame(num_frames: int, tokens_per_frame: int) -> Select:
    """Mean over each frame's own tokens, the frames kept in order: one vector per frame, concatenated.

    (B, F·N, D) -> (B, F·D); (B, heads, F·N, d) -> (B, F·heads·d). Unlike `pool_tokens` this keeps time:
    a linear probe on it can weigh frames differently — compare the frames after an event with those
    before it, or read a velocity as the difference of two frames' positions — which a mean over the
    whole window cannot. Per-frame sites (B, F, D) are flattened as they are.
    """

    def select(name: str, tensor: torch.Tensor) -> torch.Tensor:
        _refuse_patterns(name)
        moved = tensor.movedim(token_axis(name), 1)  # (B, T, ...) with T = F·N, or F for per-frame sites
        if site_kind(name) in PER_FRAME_KINDS:
            return moved.reshape(moved.shape[0], -1)
        if moved.shape[1] != num_frames * tokens_per_frame:
            raise ValueError(f"{name}: expected {num_frames} frames of {tokens_per_frame} tokens on the token axis, "
                             f"got {moved.shape[1]} tokens; cut frames after pooling, not before")
        per_frame = moved.reshape(moved.shape[0], num_frames, tokens_per_frame, -1).mean(dim=2)  # (B, F, features)
        return per_frame.reshape(per_frame.shape[0], -1)  # (B, F·features), frame-major

    return select


def project(projection: "torch.Tensor | None") -> Select:
    """Multiply pooled features (B, d) by a fixed matrix (d, k), or pass them through when it is None:
    keeps wide features (e.g. `pool_tokens_per_frame`'s F·D) cheap to cache and to probe."""

    def select(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if projection is None:
            return tensor
        if tensor.ndim != 2 or tensor.shape[1] != projection.shape[0]:
            raise ValueError(f"{name}: the projection maps {projection.shape[0]} features, got a tensor of shape "
                             f"{tuple(tensor.shape)}; pool first")
        return tensor @ projection.to(tensor.device, tensor.dtype)

    return select


def then(*selects: Select) -> Select:
    """Compose select functions left to right: ``then(select_frames(...), pool_tokens)``."""

    def select(name: str, tensor: torch.Tensor) -> torch.Tensor:
        for function in selects:
            tensor = function(name, tensor)
        return tensor

    return select


def frame_attention(pattern: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Aggregate a token pattern (B, heads, F·N, F·N) into frames: (B, heads, F, F).

    Entry [f, g]: the attention a token of frame f pays to all of frame g's tokens together, averaged
    over frame f's tokens; each row sums to 1.
    """
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2] or pattern.shape[-1] % num_frames:
        raise ValueError(f"frame_attention expects a pattern (B, heads, F·N, F·N) with F = {num_frames} dividing "
                         f"its token count, got {tuple(pattern.shape)}.")
    summed = reduce(pattern, "b h q (g m) -> b h q g", "sum", g=num_frames)  # (B, heads, F·N, F) to each frame
    return reduce(summed, "b h (f n) g -> b h f g", "mean", f=num_frames)  # (B, heads, F, F)
