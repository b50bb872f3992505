"""Attention heads of the video DiT: what each head looks at, in time, and what it costs to remove it.

A head's attention pattern (B, heads, F·N, F·N) says, for every query token, how its attention is
spread over the window's F·N key tokens (time-major: frame 0's N tokens, then frame 1's, ...). A few
numbers per head summarise the patterns a video model may learn; each is an attention mass in [0, 1],
averaged over queries and examples:

    score              the attention a query pays to ...                           uniform attention
    same_frame         its own frame's tokens                                      1 / F
    previous_frame     the frame just before its own (queries of frames f >= 1)    1 / F
    spatial_alignment  the tokens at its own (row, column) in the *other* frames   (F - 1) / (F·N)
    induction          on a clip that shows frames a b c d, then a b c d again:    1 / F
                       a second-half query showing content a pays to the frame
                       that followed a the first time (b)
    duplicate          ... and to the first showing of its own content (a)         1 / F

The last column (`uniform_attention_scores`) is the chance level: what a head that attends to every
token alike scores. A score is worth reporting only against it: 0.3 previous-frame attention is
strong with 16 frames (chance 0.06) and nothing with 2 (chance 0.5).

Induction, and its control. In a language model an induction head completes "A B ... A" with "B": it
finds the earlier occurrence of the current token and attends to the token that followed it. The
video analogue here: clips made of F/2 frames of unrelated content (frames of different videos),
shown twice (`repeated_frame_clips`). Frame j of the second half shows the content of frame
i = j - F/2; a head that looks back for that content and then one frame on attends to frame i + 1.

But on such clips "the successor of my content's earlier occurrence" is always the frame exactly
F/2 - 1 frames back, so a purely *positional* head (attend F/2 - 1 frames back, whatever is there)
gets the same score (and one that attends F/2 frames back gets the duplicate score). The control
shows the second half in a shuffled order, a permutation with no fixed point: the earlier occurrence
of a frame's content is then never exactly F/2 frames back, so its successor is never F/2 - 1 back.
A content-matching head scores the same on both; a fixed-offset head scores exactly 0 on the control
(`induction_permuted`, `duplicate_permuted`). What the control rules out is position; it does not
tell a head that matches content from one that matches, say, brightness. Report both.

    scores = head_scores(model, latents, schedule, levels=[0, 250, 500, 750, 999])
    scores["previous_frame"]                  # (levels, depth, heads)
    top_heads(scores["previous_frame"][0], k=3)   # [(layer, head), ...] at the first level
    with hooks(model, head_ablation_hooks(top_heads(...), "zero")):
        ...                                    # the model without those heads

Ablation acts on each head's output z (B, heads, F·N, d), before the output projection mixes the
heads: zeroing it removes the head's W_O term (the projection's bias stays); replacing it by its mean
over examples and tokens (`mean_head_outputs`) keeps what the head adds on average and removes what
it adds *differently* for different inputs — the usual, gentler, ablation.

Notation
    B clips, F frames per clip, N tokens per frame, T = F·N tokens, heads per block, d = head_dim,
    M frames in the pool that induction clips are drawn from.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from imagediff.hooks import HookPoint, run_with_cache
from toydiff.schedules import NoiseSchedule
from videodiff.dit import require_plain_windows
from videodiff.interp.activations import frame_attention

Head = tuple[int, int]  # (layer, head)
FwdHooks = list  # [(hook name, fn(activation, hook_point) -> tensor or None)]

# ---------------------------------------------------------------------------------------------
#                              Scores of patterns over frames
# ---------------------------------------------------------------------------------------------


def _check_frame_pattern(frame_pattern: torch.Tensor, who: str, min_frames: int = 1) -> None:
    if not isinstance(frame_pattern, torch.Tensor) or frame_pattern.ndim != 4 \
            or frame_pattern.shape[-1] != frame_pattern.shape[-2]:
        got = tuple(frame_pattern.shape) if isinstance(frame_pattern, torch.Tensor) else type(frame_pattern).__name__
        raise ValueError(f"{who} expects a frame pattern (B, heads, F, F), as made by "
                         f"videodiff.interp.activations.frame_attention, got {got}.")
    if frame_pattern.shape[-1] < min_frames:
        raise ValueError(f"{who} needs clips of at least {min_frames} frames, got a frame pattern over "
                         f"{frame_pattern.shape[-1]}.")


def same_frame_scores(frame_pattern: torch.Tensor) -> torch.Tensor:
    """The attention each frame pays to itself, averaged over frames and examples.

    frame_pattern: (B, heads, F, F), rows summing to 1. Returns (heads,) in [0, 1]; uniform: 1 / F.
    """
    _check_frame_pattern(frame_pattern, "same_frame_scores")
    return frame_pattern.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 2))  # (B, heads, F) -> (heads,)


def previous_frame_scores(frame_pattern: torch.Tensor) -> torch.Tensor:
    """The attention frame f pays to frame f - 1, averaged over frames f >= 1 and examples.

    frame_pattern: (B, heads, F, F), F >= 2. Returns (heads,) in [0, 1]; uniform: 1 / F.
    """
    _check_frame_pattern(frame_pattern, "previous_frame_scores", min_frames=2)
    # The first sub-diagonal holds the entries [f, f - 1], f = 1 .. F-1.
    return frame_pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2))  # (B, heads, F-1) -> (heads,)


# ---------------------------------------------------------------------------------------------
#                         Spatial alignment: the same place, other frames
# ---------------------------------------------------------------------------------------------


def spatial_alignment_scores(pattern: torch.Tensor, num_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """The attention a token pays to the tokens at its own (row, column) in the *other* frames.

    For a query at (frame f, position s): Σ_{g != f} pattern[(f, s), (g, s)], averaged over all F·N
    queries and the examples. A head that tracks "what was here before and after" scores near 1;
    uniform attention scores the chance level (F - 1) / (F·N), see `uniform_attention_scores`.

    pattern: (B, heads, F·N, F·N), time-major tokens, rows summing to 1. Returns (heads,) in [0, 1].
    """
    if not isinstance(pattern, torch.Tensor) or pattern.ndim != 4 \
            or pattern.shape[-1] != pattern.shape[-2] or pattern.shape[-1] != num_frames * tokens_per_frame:
        got = tuple(pattern.shape) if isinstance(pattern, torch.Tensor) else type(pattern).__name__
        raise ValueError(f"spatial_alignment_scores expects a token pattern (B, heads, F·N, F·N) with "
                         f"F·N = {num_frames} · {tokens_per_frame} = {num_frames * tokens_per_frame}, got {got}.")
    batch, heads = pattern.shape[:2]
    grid = (num_frames, tokens_per_frame)
    by_place = pattern.reshape(batch, heads, *grid, *grid)  # (B, h, F, N, F, N): [f, s, g, s']
    same_place = by_place.diagonal(dim1=3, dim2=5)  # (B, h, F, F, N): [f, g, s] = (f, s) -> (g, s)
    other_frame = ~torch.eye(num_frames, dtype=torch.bool, device=pattern.device)  # (F, F): g != f
    aligned = (same_place * other_frame[:, :, None]).sum(dim=3)  # (B, h, F, N): summed over g != f
    return aligned.mean(dim=(0, 2, 3))  # (heads,)


def uniform_attention_scores(num_frames: int, tokens_per_frame: int) -> dict[str, float]:
    """The chance level of every score: what a head attending to all F·N tokens alike gets.

    same_frame, previous_frame, induction, duplicate: one frame of F, 1 / F.
    spatial_alignment: F - 1 tokens of F·N, (F - 1) / (F·N).
    """
    if num_frames < 1 or tokens_per_frame < 1:
        raise ValueError(f"num_frames and tokens_per_frame must be >= 1, got {num_frames} and {tokens_per_frame}.")
    one_frame = 1.0 / num_frames
    return {"same_frame": one_frame, "previous_frame": one_frame,
            "spatial_alignment": (num_frames - 1) / (num_frames * tokens_per_frame),
            "induction": one_frame, "duplicate": one_frame}


# ---------------------------------------------------------------------------------------------
#                           Induction-like heads, on repeated clips
# ---------------------------------------------------------------------------------------------


def _derangement(size: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random permutation of 0..size-1 with no fixed point (size >= 2), by rejection:
    about e tries on average."""
    while True:
        order = torch.randperm(size, generator=generator)  # (size,)
        if not (order == torch.arange(size)).any():
            return order


def repeated_frame_clips(frame_latents: torch.Tensor, num_clips: int, num_frames: int, seed: int = 0,
                         permuted: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of F/2 distinct random frames from a pool, shown, then shown again.

    frame_latents: (M, C, H, W), a pool of unrelated frames (e.g. one frame from each of M videos),
    M >= F/2. Each clip picks F/2 distinct pool frames, shows them in that order, then:
    - permuted=False (repeated): shows them again in the same order, frames F/2.. equal frames 0..;
    - permuted=True (the control): shows them in a random order in which no frame keeps its place
      (a derangement), so a fixed look-back of F/2 - 1 frames never lands on the successor of the
      earlier occurrence of the query's content. Needs F >= 4.
    The same seed picks the same first halves in both cases, so repeated and control clips are pairs.

    Returns latents (B, F, C, H, W) and source (B, F) int64: the pool index each frame shows.
    """
    if not isinstance(frame_latents, torch.Tensor) or frame_latents.ndim != 4:
        got = tuple(frame_latents.shape) if isinstance(frame_latents, torch.Tensor) else type(frame_latents).__name__
        raise ValueError(f"repeated_frame_clips expects a pool of frame latents (M, C, H, W), got {got}.")
    if not isinstance(num_frames, int) or num_frames < 2 or num_frames % 2:
        raise ValueError(f"repeated_frame_clips shows F/2 frames twice, so num_frames must be an even number "
                         f">= 2, got {num_frames!r}.")
    half = num_frames // 2
    if permuted and half < 2:
        raise ValueError(f"permuted clips reorder the second half so that no frame keeps its place, which needs "
                         f"F/2 >= 2 frames; got num_frames = {num_frames}. Use num_frames >= 4.")
    pool = frame_latents.shape[0]
    if pool < half:
        raise ValueError(f"a clip of {num_frames} frames needs {half} distinct frames, but the pool holds only "
                         f"{pool}; pass more frames or use a shorter clip.")
    if not isinstance(num_clips, int) or num_clips < 1:
        raise ValueError(f"num_clips must be a positive integer, got {num_clips!r}.")
    generator = torch.Generator().manual_seed(seed)
    # All first halves are drawn before any permutation, so `permuted` does not change them.
    first = torch.stack([torch.randperm(pool, generator=generator)[:half] for _ in range(num_clips)])  # (B, F/2)
    if permuted:
        order = torch.stack([_derangement(half, generator) for _ in range(num_clips)])  # (B, F/2)
    else:
        order = torch.arange(half).expand(num_clips, half)  # (B, F/2)
    source = torch.cat([first, first.gather(1, order)], dim=1)  # (B, F)
    return frame_latents[source.to(frame_latents.device)], source  # (B, F, C, H, W), (B, F)


def _earlier_occurrence(source: torch.Tensor, num_frames: int) -> torch.Tensor:
    """For each second-half frame j, the first-half frame i showing the same content: (B, F/2) int64."""
    if not isinstance(source, torch.Tensor) or source.ndim != 2 or source.shape[1] != num_frames \
            or source.dtype.is_floating_point:
        got = f"{source.dtype} {tuple(source.shape)}" if isinstance(source, torch.Tensor) else type(source).__name__
        raise ValueError(f"source must be an integer tensor (B, F) with F = {num_frames}, as returned by "
                         f"repeated_frame_clips, got {got}.")
    if num_frames % 2:
        raise ValueError(f"induction scores need clips of an even number of frames (a half shown twice), "
                         f"got {num_frames}.")
    half = num_frames // 2
    matches = source[:, half:, None] == source[:, None, :half]  # (B, F/2, F/2): [j - F/2, i]
    if not (matches.sum(dim=-1) == 1).all():
        raise ValueError("source must show, in its second half, each frame of its first half exactly once, with no "
                         "repeats inside the first half, as repeated_frame_clips makes it.")
    return matches.long().argmax(dim=-1)  # (B, F/2)


def _attention_of_second_half(frame_pattern: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The attention second-half frame j pays to frame keys[:, j - F/2]: (B, heads, F/2)."""
    half = frame_pattern.shape[-1] // 2
    rows = frame_pattern[:, :, half:, :]  # (B, heads, F/2, F): the second half's queries
    index = keys[:, None, :, None].expand(-1, rows.shape[1], -1, 1).to(rows.device)  # (B, heads, F/2, 1)
    return rows.gather(-1, index).squeeze(-1)  # (B, heads, F/2)


def _check_source_matches(frame_pattern: torch.Tensor, source: torch.Tensor, who: str) -> None:
    _check_frame_pattern(frame_pattern, who, min_frames=2)
    if isinstance(source, torch.Tensor) and source.shape[0] != frame_pattern.shape[0]:
        raise ValueError(f"{who}: the frame pattern holds {frame_pattern.shape[0]} clips but source describes "
                         f"{source.shape[0]}; pass the source of the clips the pattern was computed on.")


def induction_scores(frame_pattern: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The attention a second-half frame pays to the frame that followed its content the first time.

    For each query frame j >= F/2 showing the content of first-half frame i (source[j] == source[i]),
    the attention j pays to frame i + 1, when i + 1 < F/2 (frame F/2 starts the repeat: it did not
    follow i in the sequence, the seam did); averaged over those queries and the examples.

    frame_pattern: (B, heads, F, F); source: (B, F) int64 from `repeated_frame_clips`, F >= 4.
    Returns (heads,) in [0, 1]; uniform: 1 / F. Compare repeated clips with permuted ones.
    """
    _check_source_matches(frame_pattern, source, "induction_scores")
    num_frames = frame_pattern.shape[-1]
    earlier = _earlier_occurrence(source, num_frames)  # (B, F/2)
    half = num_frames // 2
    successor = earlier + 1  # (B, F/2)
    followed = (successor < half).to(frame_pattern.device)  # (B, F/2): the content had a successor in the first half
    if not followed.any():
        raise ValueError(f"induction_scores needs a first half of at least 2 frames (so that some content has a "
                         f"successor), got clips of {num_frames} frames; use num_frames >= 4.")
    attention = _attention_of_second_half(frame_pattern, successor.clamp(max=half - 1))  # (B, heads, F/2)
    weight = followed[:, None, :].to(attention.dtype)  # (B, 1, F/2)
    return (attention * weight).sum(dim=(0, 2)) / weight.sum()  # (heads,)


def duplicate_scores(frame_pattern: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The attention a second-half frame pays to the earlier showing of the same picture (frame i).

    frame_pattern: (B, heads, F, F); source: (B, F) from `repeated_frame_clips`. Returns (heads,) in
    [0, 1]; uniform: 1 / F. A head that looks up the same content is a duplicate head; an induction head
    looks one frame further.
    """
    _check_source_matches(frame_pattern, source, "duplicate_scores")
    earlier = _earlier_occurrence(source, frame_pattern.shape[-1])  # (B, F/2)
    return _attention_of_second_half(frame_pattern, earlier).mean(dim=(0, 2))  # (heads,)


# ---------------------------------------------------------------------------------------------
#                             Scores of a model, at chosen noise levels
# ---------------------------------------------------------------------------------------------

# summarise(pattern (b, heads, F·N, F·N), clips) -> (K, heads): K scores, each a mean over the b clips.
Summarise = Callable[[torch.Tensor, slice], torch.Tensor]


def _check_levels(levels: Sequence[int], schedule: NoiseSchedule) -> list[int]:
    levels = [int(level) for level in levels]
    if not levels or min(levels) < 0 or max(levels) >= schedule.num_timesteps:
        raise ValueError(f"levels must be a non-empty list of timesteps in 0..{schedule.num_timesteps - 1}, "
                         f"got {levels}.")
    return levels


def _check_clips(latents: torch.Tensor) -> None:
    if not isinstance(latents, torch.Tensor) or latents.ndim != 5:
        got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"expected clips of latents (B, F, C, H, W), got {got}.")


def _pattern_scores(model, latents: torch.Tensor, schedule: NoiseSchedule, levels: list[int], seed: int,
                    batch_size: int, summarise: Summarise) -> np.ndarray:
    """Every block's patterns at every level, summarised: (K, levels, depth, heads) float64.

    Noise ε ~ N(0, I) is drawn once, ``torch.randn(latents.shape, generator=Generator().manual_seed(seed))``
    on the CPU, and used at every level (so levels differ by their level, not by their draw). Each
    block's pattern is summarised inside its hook (`run_with_cache`'s select), so only one block's
    pattern of one batch exists at a time: batch_size · heads · (F·N)² floats.
    """
    require_plain_windows(model, "the head scores")
    _check_clips(latents)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    device = next(model.parameters()).device
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))  # (B, F, C, H, W)
    num_clips = latents.shape[0]
    totals = None
    for level_index, level in enumerate(levels):
        for start in range(0, num_clips, batch_size):
            clips = slice(start, min(start + batch_size, num_clips))
            x_0 = latents[clips].to(device)  # (b, F, C, H, W)
            t = torch.full(x_0.shape[:2], level, dtype=torch.int64, device=device)  # (b, F): every frame at level
            x_t = schedule.add_noise(x_0, noise[clips].to(device, x_0.dtype), t)  # (b, F, C, H, W)
            _, cache = run_with_cache(model, x_t, t, names=["pattern"],
                                      select=lambda name, pattern: summarise(pattern, clips))
            summary = cache.stack("pattern").double().cpu().numpy()  # (depth, K, heads), batch means
            if totals is None:
                totals = np.zeros((summary.shape[1], len(levels), summary.shape[0], summary.shape[2]))
            # Every clip weighs the same: a batch mean counts as many times as the batch has clips.
            totals[:, level_index] += (clips.stop - clips.start) * summary.transpose(1, 0, 2)
    return totals / num_clips  # (K, levels, depth, heads)


@torch.no_grad()
def head_scores(model, latents: torch.Tensor, schedule: NoiseSchedule, levels: Sequence[int], seed: int = 0,
                tokens_per_frame: Optional[int] = None, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Previous-frame, same-frame and spatial-alignment scores of every head, at every noise level.

    latents: (B, F, C, H, W) clean clips. At each level every frame is noised to that level,
    x_t = sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε, with ε = ``torch.randn(latents.shape,
    generator=torch.Generator().manual_seed(seed))`` drawn once on the CPU and the same at every level
    (levels then differ by their level, not by their draw); the model sees t = level for every frame,
    in batches of batch_size clips. Only one block's patterns of one batch are held at a time.
    tokens_per_frame: N (default: model.config.tokens_per_frame).

    Returns {"previous_frame", "same_frame", "spatial_alignment"}, each (len(levels), depth, heads)
    float64 in [0, 1]; compare them with `uniform_attention_scores(F, N)`.
    """
    levels = _check_levels(levels, schedule)
    _check_clips(latents)
    num_frames = latents.shape[1]
    tokens = tokens_per_frame if tokens_per_frame is not None else model.config.tokens_per_frame

    def summarise(pattern: torch.Tensor, clips: slice) -> torch.Tensor:
        frames = frame_attention(pattern, num_frames)  # (b, heads, F, F)
        return torch.stack([previous_frame_scores(frames), same_frame_scores(frames),
                            spatial_alignment_scores(pattern, num_frames, tokens)])  # (3, heads)

    previous, same, aligned = _pattern_scores(model, latents, schedule, levels, seed, batch_size, summarise)
    return {"previous_frame": previous, "same_frame": same, "spatial_alignment": aligned}


@torch.no_grad()
def induction_head_scores(model, frame_latents: torch.Tensor, schedule: NoiseSchedule, levels: Sequence[int],
                          num_clips: int, seed: int = 0, num_frames: Optional[int] = None,
                          batch_size: int = 16) -> dict[str, np.ndarray]:
    """Induction and duplicate scores of every head on repeated clips, and on the permuted control.

    frame_latents: (M, C, H, W), a pool of unrelated frames. Clips: ``repeated_frame_clips(frame_latents,
    num_clips, F, seed)`` and the same with permuted=True (the same first halves); F = num_frames
    (default: model.config.num_frames), even, >= 4. Both sets are noised with the same ε (drawn from
    seed as in `head_scores`), level by level.

    Returns {"induction", "duplicate", "induction_permuted", "duplicate_permuted"}, each
    (len(levels), depth, heads) float64 in [0, 1]. An induction head scores high on both "induction"
    and "induction_permuted"; a head that attends F/2 - 1 frames back scores high only on the first.
    """
    levels = _check_levels(levels, schedule)
    num_frames = num_frames if num_frames is not None else model.config.num_frames
    scores = {}
    for suffix, permuted in (("", False), ("_permuted", True)):
        latents, source = repeated_frame_clips(frame_latents, num_clips, num_frames, seed, permuted=permuted)

        def summarise(pattern: torch.Tensor, clips: slice, source=source) -> torch.Tensor:
            frames = frame_attention(pattern, num_frames)  # (b, heads, F, F)
            return torch.stack([induction_scores(frames, source[clips]),
                                duplicate_scores(frames, source[clips])])  # (2, heads)

        induction, duplicate = _pattern_scores(model, latents, schedule, levels, seed, batch_size, summarise)
        scores["induction" + suffix], scores["duplicate" + suffix] = induction, duplicate
    return scores


def top_heads(scores: Union[np.ndarray, torch.Tensor], k: int) -> list[Head]:
    """The k (layer, head) pairs of highest score, highest first (ties: lower layer, then lower head).

    scores: (depth, heads), e.g. ``head_scores(...)["previous_frame"][level_index]``.
    """
    scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"top_heads expects scores of shape (depth, heads) — one level's slice of head_scores — "
                         f"got {scores.shape}.")
    if not isinstance(k, int) or not 1 <= k <= scores.size:
        raise ValueError(f"k must be an integer in 1..{scores.size} (depth · heads), got {k!r}.")
    order = np.argsort(-scores.reshape(-1), kind="stable")[:k]  # flat indices, layer-major
    return [(int(index) // scores.shape[1], int(index) % scores.shape[1]) for index in order]


# ---------------------------------------------------------------------------------------------
#                                         Head ablation
# ---------------------------------------------------------------------------------------------


def _check_heads(heads: Sequence[Head], model=None) -> list[Head]:
    """heads as sorted, distinct (layer, head) pairs of non-negative ints (within the model, if given)."""
    checked = set()
    for pair in heads:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and i >= 0 for i in pair)):
            raise ValueError(f"heads must be (layer, head) pairs of non-negative integers, got {pair!r}.")
        layer, head = int(pair[0]), int(pair[1])
        if model is not None:
            depth, num_heads = model.config.depth, model.config.num_heads
            if layer >= depth or head >= num_heads:
                raise ValueError(f"head ({layer}, {head}) does not exist: this model has layers 0..{depth - 1} "
                                 f"and heads 0..{num_heads - 1} in each.")
        checked.add((layer, head))
    if not checked:
        raise ValueError("heads is empty; pass at least one (layer, head) pair.")
    return sorted(checked)


def head_ablation_hooks(heads: Sequence[Head], mode: str = "zero",
                        means: Optional[Mapping[Head, torch.Tensor]] = None) -> FwdHooks:
    """Ready hooks that remove the given heads: ``with hooks(model, head_ablation_hooks(...)):``.

    Each acts on ``blocks.{layer}.attention.hook_z`` (B, heads, F·N, d), the heads' outputs before the
    output projection, replacing head h's slice:
    - mode="zero": by 0; the block's attention output loses the head's term W_O[:, h] z_h, keeps the bias;
    - mode="mean": by means[(layer, head)] (d,), its mean over examples and tokens (`mean_head_outputs`).
    A layer the model does not have raises KeyError when the hooks are attached; a head index the block
    does not have raises ValueError at the first forward.
    """
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}.")
    heads = _check_heads(heads)
    if mode == "mean":
        if means is None:
            raise ValueError("mode='mean' needs the heads' means; compute them with "
                             "mean_head_outputs(model, latents, t, heads).")
        missing = [pair for pair in heads if pair not in means]
        if missing:
            raise ValueError(f"means has no entry for heads {missing}; compute them with mean_head_outputs "
                             f"for every head you ablate.")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def ablate(layer: int, layer_heads: list[int]):
        def hook(z: torch.Tensor, point: HookPoint) -> torch.Tensor:
            num_heads, head_dim = z.shape[1], z.shape[-1]  # z: (B, heads, F·N, d)
            for head in layer_heads:
                if head >= num_heads:
                    raise ValueError(f"head_ablation_hooks: head {head} of layer {layer} does not exist; the block "
                                     f"has heads 0..{num_heads - 1}.")
            z = z.clone()  # (B, heads, F·N, d): the activation other hooks may also see stays untouched
            for head in layer_heads:
                if mode == "zero":
                    z[:, head] = 0.0
                else:
                    mean = torch.as_tensor(means[(layer, head)]).to(z.device, z.dtype)  # (d,)
                    if mean.shape != (head_dim,):
                        raise ValueError(f"means[({layer}, {head})] must have shape ({head_dim},), the head "
                                         f"dimension, got {tuple(mean.shape)}.")
                    z[:, head] = mean  # (d,) broadcast over (B, F·N, d)
            return z

        return hook

    return [(f"blocks.{layer}.attention.hook_z", ablate(layer, layer_heads)) for layer, layer_heads in by_layer.items()]


@torch.no_grad()
def mean_head_outputs(model, latents: torch.Tensor, t: torch.Tensor, heads: Sequence[Head]) -> dict[Head, torch.Tensor]:
    """Each head's output z averaged over examples and tokens: {(layer, head): (d,)}, for mode="mean".

    latents: (B, F, C, H, W), the model's input exactly as given — already noised to the levels t (pass
    clean latents with t = 0, or noise them with schedule.add_noise first); t: (B, F) int64, the levels
    to take the means at (those the ablated model will see, ideally). One forward with the z of the
    heads' layers cached (and pooled in the hook).
    """
    require_plain_windows(model, "mean_head_outputs")
    heads = _check_heads(heads, model)
    layers = sorted({layer for layer, _ in heads})
    _, cache = run_with_cache(model, latents, t, names=["z"], layers=layers,
                              select=lambda name, z: z.mean(dim=(0, 2)))  # (B, heads, F·N, d) -> (heads, d)
    return {(layer, head): cache["z", layer][head] for layer, head in heads}
