"""Reference answer to exercise 08 — one ball, drawn and moved.

    coverage = clamp(r + ½ − d, 0, 1),  d from the pixel centre (j + ½, i + ½);   frame · (1 − c) + colour · c
    τ_floor = (√(v_y² + 2 g (S − r − y)) − v_y) / g;  no bounce if τ_floor > 1, else fly, v_y ← −e v_y, fly the rest

The library's versions are ``videodiff.data.physics.render_videos`` (every ball of every frame of every
video at once, composited in slot order) and ``simulate_balls`` (all four walls, several contacts per
frame, closed-form contact times for each).
"""
import math

import numpy as np


def draw_ball(frame: np.ndarray, x: float, y: float, radius: float, colour: np.ndarray) -> np.ndarray:
    """Draw an anti-aliased ball over ``frame`` (H, W, 3) in [0, 1].  Returns a new frame (H, W, 3)."""
    height, width, _ = frame.shape
    # 1. Pixel centres: column j at x = j + ½, row i at y = i + ½.
    centres_x = np.arange(width) + 0.5  # (W,)
    centres_y = np.arange(height)[:, None] + 0.5  # (H, 1)
    # 2. Distance of every pixel centre to the ball's centre.
    distance = np.sqrt((centres_x - x) ** 2 + (centres_y - y) ** 2)  # (H, W)
    # 3. The one-pixel ramp across the edge.
    coverage = np.clip(radius + 0.5 - distance, 0.0, 1.0)  # (H, W)
    # 4. "Over": the ball hides the share `coverage` of what was there.
    coverage = coverage[..., None]  # (H, W, 1)
    return frame * (1.0 - coverage) + np.asarray(colour) * coverage  # (H, W, 3)


def step_ball(x: float, y: float, vx: float, vy: float, radius: float, image_size: int, gravity: float,
              restitution: float) -> tuple[float, float, float, float]:
    """The ball's state one frame later: (x, y, vx, vy), under gravity > 0, bouncing off the floor."""
    floor = image_size - radius
    # 1. The falling root of y + vy τ + ½ g τ² = floor.
    time_to_floor = (math.sqrt(vy**2 + 2.0 * gravity * (floor - y)) - vy) / gravity
    if time_to_floor > 1.0:
        # 2. The exact parabola over the whole frame.
        return x + vx, y + vy + 0.5 * gravity, vx, vy + gravity
    # 3. Fly to the floor.
    impact_speed = vy + gravity * time_to_floor
    # 4. Bounce.
    vy = -restitution * impact_speed
    # 5. Fly the rest of the frame from the floor.
    rest = 1.0 - time_to_floor
    y = floor + vy * rest + 0.5 * gravity * rest**2
    vy = vy + gravity * rest
    return x + vx, y, vx, vy
