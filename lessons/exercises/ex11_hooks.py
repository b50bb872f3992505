"""Exercise 11 — a hook that removes an attention head; attention summed into frames (videodiff.interp, lesson 11).

Part 1 — zero-ablating a head.  A hook function takes (activation, hook_point) and returns None (it
only looks) or a tensor of the activation's shape, which replaces the activation from there on.  At
``blocks.i.attention.hook_z`` the activation is every head's output before the output projection,

    z: (B, heads, T, d)        B clips, T = F·N tokens, d = head dimension;  the HEAD axis is axis 1

and zero-ablating head h replaces its slice z[:, h] by 0, so the block's attention output loses the
head's term W_O[:, h] z_h.  The hook must *return* the edited tensor, and must leave the tensor it is
given unchanged: other hooks at the same site (a cache, say) see that tensor too.

    zero_head_hook(head) -> hook(z, hook_point) -> (B, heads, T, d)

Part 2 — attention per frame.  A head's pattern (B, heads, T, T) holds for every query token a
distribution over the T key tokens (each row sums to 1).  The video DiT lays its tokens out
*time-major*: frame 0's N tokens, then frame 1's, …, so frame g's tokens are g·N … g·N + N − 1.  The
attention frame f pays to frame g is

    A[f, g] = mean over the N query tokens q of frame f of ( Σ over the N key tokens k of frame g of pattern[q, k] )

— *summed* over the keys (the attention to a frame is the total over its tokens) and *averaged* over
the queries (a typical token of frame f), so that every row of A still sums to 1.

    frame_attention(pattern (B, heads, F·N, F·N), num_frames) -> (B, heads, F, F)

Your task: write the two functions.  Every ``todo(...)`` is an expression to replace.

Check your work:  python -m lessons.exercises.check 11 lessons/exercises/ex11_work.py
(compared with ``videodiff.interp.heads.head_ablation_hooks(…, "zero")`` — also inside a video DiT —
and ``videodiff.interp.activations.frame_attention``).  Reference: ``solutions/ex11_hooks.py``.
"""
import torch


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def zero_head_hook(head: int):
    """A hook for ``blocks.i.attention.hook_z`` that sets head ``head``'s output to 0."""
    def hook(z: torch.Tensor, hook_point) -> torch.Tensor:
        # 1. A (1, heads, 1, 1) mask: 1 for every head, 0 for the ablated one (the head axis is axis 1).
        keep = torch.ones(1, z.shape[1], 1, 1, dtype=z.dtype, device=z.device)
        keep[0, head] = todo("the mask's entry for the ablated head")
        # 2. A NEW tensor (z itself stays as it was), returned so that it replaces z.
        return todo("z times the mask, out of place")

    return hook


def frame_attention(pattern: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Sum a token pattern (B, heads, F·N, F·N) into frames: (B, heads, F, F), each row summing to 1."""
    batch, heads, total, _ = pattern.shape
    tokens = total // num_frames  # N
    # 1. Split the keys into frames, time-major (F, N): (B, heads, T, F, N); sum over each frame's N keys.
    to_frames = todo("pattern.reshape(batch, heads, total, F, N) summed over its last axis: (B, heads, T, F)")
    # 2. Split the queries into frames the same way: (B, heads, F, N, F); average over each frame's N queries.
    return todo("to_frames.reshape(batch, heads, F, N, F) averaged over the N queries: (B, heads, F, F)")
