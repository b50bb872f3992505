"""videodiff: diffusion forcing on procedural physics videos with a space-time DiT — not built yet.

Planned: the VAE of imagediff applied per frame; imagediff's DiT blocks with 3-D RoPE and per-frame
noise levels (``DiTBlock`` already takes per-token conditioning and a rotary hook); toydiff's
``ddim_step`` called with (B, F) timesteps for diffusion forcing, whose noise schedules must keep the
invariants of docs/pitfalls.md, pitfall 15; and tools for interpretability. Nothing here is importable
beyond this docstring.
"""
