"""videodiff.interp: looking inside the video DiT.

One idea per module:

    imagediff.hooks          named hook points in every DiT (image and video), the `hooks` context manager
                             (the only way hooks are attached; it always removes them), `run_with_cache`
    activations              what the hooks see, cut down: chosen frames, tokens pooled, attention per frame
    trajectories             DDIM inversion of a real video and DDIM sampling, caching sites at chosen levels
    ablations                ready hooks that break one part (a block, the modulation, the noise level) and the
                             table of what each costs in the physics metrics
    heads                    attention-head scores for video: previous frame, spatial alignment, induction-like
    probes                   linear probes of pooled hidden states, with grouped, nested cross-validation,
                             a permutation null and a control task, so that the accuracy reported is honest
    experiment               the physical-plausibility experiment of `python -m videodiff probe`

See docs/hooks.md for every hook name and where it sits in a block.
"""

from imagediff.hooks import ActivationCache, HookPoint, caching, hook_names, hooks, run_with_cache

__all__ = ["ActivationCache", "HookPoint", "caching", "hook_names", "hooks", "run_with_cache"]
