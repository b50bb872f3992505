"""Exercise 08 — one ball, drawn and moved (videodiff.data.physics).

The physics videos of lesson 08 are made by two functions: a renderer that draws every ball into
every frame, and an exact simulation that moves every ball from one frame to the next.  Here you
write both for one ball.

Conventions (those of the data): x points right (columns), y points DOWN (rows), and the centre of
pixel (row i, column j) is at (x, y) = (j + ½, i + ½).  Lengths in px, times in frames.

Part 1 — an anti-aliased ball.  A pixel half covered by the ball should be half coloured, or the
ball's outline jumps from pixel to pixel as it moves.  The library approximates a pixel's coverage
by a linear ramp one pixel wide across the edge:

    coverage = clamp(r + ½ − d, 0, 1),     d = distance from the pixel's centre to the ball's centre

(1 well inside, 0 well outside, ½ on the circle of radius r), and draws the ball *over* what the frame
already shows, the ball in front:

    frame ← frame · (1 − coverage) + colour · coverage

Part 2 — one frame of motion, with a floor bounce.  Gravity g pulls down (+y).  Between bounces the
exact motion is a parabola, not a step of Euler's method:

    x(τ) = x + v_x τ,     y(τ) = y + v_y τ + ½ g τ²,     v_y(τ) = v_y + g τ          (0 ≤ τ ≤ 1)

A ball of radius r touches the floor at y = S − r (S = image_size).  Falling, it gets there at the
root τ_floor ≥ 0 of y + v_y τ + ½ g τ² = S − r whose velocity points down, v_y + g τ_floor = +√(v_y² + 2 g (S − r − y)):

    τ_floor = (√(v_y² + 2 g (S − r − y)) − v_y) / g

If τ_floor > 1 the ball flies the whole frame.  Otherwise it flies to the floor, bounces — the
velocity into the floor is reversed and scaled by the restitution e, v_y ← −e · (v_y + g τ_floor) —
and flies the rest of the frame, 1 − τ_floor, from the floor with that velocity.  (Only the floor here:
the checker keeps the ball away from the walls and the ceiling, and every bounce it tries is fast
enough that the ball cannot come down again within the same frame.)

Your task: write both functions.  Every ``todo(...)`` is an expression to replace.

Check your work:  python -m lessons.exercises.check 08 lessons/exercises/ex08_work.py
(compared with ``videodiff.data.render_videos`` and ``videodiff.data.simulate_balls``).
Reference: ``solutions/ex08_ball_physics.py``.
"""
import math

import numpy as np


def todo(what: str):
    raise NotImplementedError(f"TODO: {what}")


def draw_ball(frame: np.ndarray, x: float, y: float, radius: float, colour: np.ndarray) -> np.ndarray:
    """Draw an anti-aliased ball over ``frame``.

    frame: (H, W, 3) float in [0, 1];  x, y: the ball's centre in px (x right, y down);  radius in px;
    colour: (3,) in [0, 1].  Returns a new frame (H, W, 3); ``frame`` itself is left unchanged.
    """
    height, width, _ = frame.shape
    # 1. The centres of the pixels: x of every column (W,), y of every row as a column (H, 1).
    centres_x = todo("the x of each column's pixel centres, shape (W,)")
    centres_y = todo("the y of each row's pixel centres, shape (H, 1)")
    # 2. Distance of every pixel centre to the ball's centre, (H, W) by broadcasting.
    distance = todo("√((centres_x − x)² + (centres_y − y)²)")
    # 3. The coverage ramp, (H, W).
    coverage = todo("clamp(r + ½ − d, 0, 1)")
    # 4. The ball over the frame.
    return todo("frame · (1 − coverage) + colour · coverage, coverage shaped (H, W, 1)")


def step_ball(x: float, y: float, vx: float, vy: float, radius: float, image_size: int, gravity: float,
              restitution: float) -> tuple[float, float, float, float]:
    """The ball's state one frame later: (x, y, vx, vy), under gravity > 0, bouncing off the floor."""
    floor = image_size - radius  # the y of a ball touching the floor
    # 1. When would the ball reach the floor, falling?
    time_to_floor = todo("(√(vy² + 2 g (floor − y)) − vy) / g")
    if time_to_floor > 1.0:
        # 2. No bounce this frame: the exact parabola over the whole frame (τ = 1).
        return todo("(x + vx, y + vy + ½ g, vx, vy + g)")
    # 3. Fly to the floor: the speed at impact.
    impact_speed = todo("vy + g τ_floor")
    # 4. The bounce: reversed and scaled by the restitution.
    vy = todo("−e · impact speed")
    # 5. The rest of the frame, from the floor.
    rest = 1.0 - time_to_floor
    y = todo("floor + vy · rest + ½ g rest²")
    vy = todo("vy + g · rest")
    return x + vx, y, vx, vy
