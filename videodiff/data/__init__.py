"""Video data for videodiff: procedural physics videos, generated offline and seeded.

    videos = make_videos(500, seed=0)                # 500 videos of 32 frames, 32x32, with their states
    x = videos.to_model_range()                      # (N, F, 3, H, W) float32 in [-1, 1]
    pairs = make_impossible_pairs(500, seed=0)       # plausible videos and their impossible twins
    videos.save("physics.npz"); PhysicsVideos.load("physics.npz")

Everything lives in physics.py: the configuration, the exact bouncing simulation, the renderer,
the PhysicsVideos type, the impossible twins and the corrupted copies that training may take histories from.
"""

from __future__ import annotations

from videodiff.data.physics import (
    CORRUPTIONS, IMPOSSIBLE_KINDS, PALETTE, PALETTE_NAMES, PhysicsConfig, PhysicsPairs, PhysicsVideos, ball_energy,
    corrupted_copies, make_impossible_pairs, make_pairs_from_seeds, make_videos, make_videos_from_seeds,
    render_videos, scene_label, scene_labels, scene_sets, simulate_balls,
)

__all__ = [
    "CORRUPTIONS", "IMPOSSIBLE_KINDS", "PALETTE", "PALETTE_NAMES", "PhysicsConfig", "PhysicsPairs", "PhysicsVideos",
    "ball_energy", "corrupted_copies", "make_impossible_pairs", "make_pairs_from_seeds", "make_videos",
    "make_videos_from_seeds", "render_videos", "scene_label", "scene_labels", "scene_sets", "simulate_balls",
]
