"""Checks of exercise 08, one ball: the anti-aliased renderer and one frame of exact motion.

draw_ball is compared with ``videodiff.data.render_videos`` (which rounds to uint8, hence a tolerance
of half a grey level), over black, over another ball and over a random background; its area with
the known π r².  step_ball is compared with ``videodiff.data.simulate_balls`` in free flight and
through floor bounces, and with two laws that need no library: the free-fall parabola and the
vertical energy a bounce keeps, e².  The usual mistakes are named: pixel centres at j instead of
j + ½, x and y swapped, a hard edge, adding colours instead of drawing over, Euler steps, a bounce
without restitution, a ball that stops at the floor."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from videodiff.data import PALETTE, render_videos, simulate_balls

from .assertions import CheckFailed, assert_close, require
from .inputs import seeded_generator

TOPIC = "one ball: the anti-aliased renderer and a frame of motion with a floor bounce"
LIBRARY = "videodiff.data (render_videos, simulate_balls)"

SIZE = 32
HALF_A_GREY_LEVEL = 0.5 / 255 + 1e-6  # render_videos rounds to uint8


def _library_frame(balls: list[tuple[float, float, float, int]]) -> np.ndarray:
    """render_videos of one frame with these balls (x, y, radius, palette index), later ones on top;
    (H, W, 3) float in [0, 1]."""
    count = len(balls)
    positions = np.array([[[[x, y] for x, y, _, _ in balls]]], dtype=np.float64)  # (1, 1, K, 2)
    radii = np.array([[r for _, _, r, _ in balls]])  # (1, K)
    colours = np.array([[[c for _, _, _, c in balls]]])  # (1, 1, K)
    present = np.ones((1, 1, count), dtype=bool)
    frames = render_videos(positions, radii, colours, present, np.zeros((1, 2), dtype=np.int64), SIZE)
    return frames[0, 0].astype(np.float64) / 255  # (H, W, 3)


def _ramp_frame(frame: np.ndarray, x: float, y: float, radius: float, colour: np.ndarray,
                offset_x: float = 0.5, offset_y: float = 0.5, swap: bool = False, edge: str = "ramp",
                over: bool = True) -> np.ndarray:
    """The renderer with one thing changed, to recognise a mistake by its result."""
    height, width, _ = frame.shape
    if swap:
        x, y = y, x
    columns = np.arange(width) + offset_x
    rows = np.arange(height)[:, None] + offset_y
    distance = np.sqrt((columns - x) ** 2 + (rows - y) ** 2)
    coverage = {"ramp": np.clip(radius + 0.5 - distance, 0, 1), "hard": (distance <= radius).astype(float),
                "inner ramp": np.clip(radius - distance, 0, 1)}[edge][..., None]
    if over:
        return frame * (1 - coverage) + colour * coverage
    return frame + colour * coverage


def _state_after(x, y, vx, vy, radius, gravity, restitution) -> np.ndarray:
    """simulate_balls one frame on: (x, y, vx, vy) as float64 (4,)."""
    positions, velocities, _ = simulate_balls(np.array([[[x, y]]]), np.array([[[vx, vy]]]), np.array([[radius]]),
                                              2, SIZE, gravity, restitution)
    return np.concatenate([positions[0, 1, 0], velocities[0, 1, 0]])


def _bounce_cases(seed: int, count: int, gravity: float, restitution: float) -> list[tuple]:
    """Balls near the floor that hit it within the frame at >= 0.3 px/frame, once, away from walls and ceiling."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        radius = rng.uniform(2.5, 4.5)
        floor = SIZE - radius
        x, y = rng.uniform(10, 22), floor - rng.uniform(0.05, 3.0)
        vx, vy = rng.uniform(-2, 2), rng.uniform(-0.5, 3.0)
        impact = math.sqrt(vy**2 + 2 * gravity * (floor - y))
        # It hits the floor within the frame, and bounces too high to come down again in the same frame.
        if (impact - vy) / gravity <= 1.0 and impact >= 0.3 and 2 * restitution * impact / gravity > 1.0:
            cases.append((x, y, vx, vy, radius, gravity, restitution))
    return cases


def _flight_cases(seed: int, count: int) -> list[tuple]:
    """Balls that stay in the air for the whole frame."""
    rng = np.random.default_rng(seed)
    return [(rng.uniform(10, 22), rng.uniform(10, 18), rng.uniform(-2, 2), rng.uniform(-1.5, 1.5), 3.0, g, 0.9)
            for g in rng.uniform(0.05, 0.5, size=count)]


def _as_state(result, what: str) -> np.ndarray:
    if not isinstance(result, (tuple, list)) or len(result) != 4:
        raise CheckFailed(f"{what}: step_ball must return the tuple (x, y, vx, vy), got {type(result).__name__}")
    try:
        return np.array([float(value) for value in result])
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: step_ball must return four numbers (x, y, vx, vy), got {result!r}") from None


def checks(student) -> list[tuple[str, Callable[[], None]]]:
    def drawn(frame, x, y, radius, colour, what):
        result = student.draw_ball(frame.copy(), x, y, radius, colour)
        if not isinstance(result, np.ndarray) or result.shape != frame.shape:
            shape = result.shape if isinstance(result, np.ndarray) else type(result).__name__
            raise CheckFailed(f"{what}: draw_ball must return a frame of shape {frame.shape}, got {shape}")
        return result

    def name_the_mistake(result, frame, x, y, radius, colour, what):
        centres = "the centre of pixel (row i, column j) is at (j + ½, i + ½)"
        mistakes = {
            f"pixel centres at (j, i): {centres}": dict(offset_x=0.0, offset_y=0.0),
            f"pixel centres at x = j: {centres}": dict(offset_x=0.0),
            f"pixel centres at y = i: {centres}": dict(offset_y=0.0),
            "x and y are swapped: x is the column (to the right), y the row (down)": dict(swap=True),
            "a hard edge (coverage 1 inside the circle, 0 outside): the ball is not anti-aliased; use the "
            "ramp clamp(r + ½ − d, 0, 1)": dict(edge="hard"),
            "the ramp is clamp(r − d, 0, 1): it is centred half a pixel inside the circle; use clamp(r + ½ − d, 0, 1)":
                dict(edge="inner ramp"),
            "colours are added (frame + colour · coverage): a ball in front hides what is behind it, "
            "frame · (1 − coverage) + colour · coverage": dict(over=False),
        }
        for mistake, change in mistakes.items():
            if np.allclose(result, _ramp_frame(frame, x, y, radius, colour, **change), atol=HALF_A_GREY_LEVEL):
                raise CheckFailed(f"{what}: {mistake}")

    def compare_frame(result, expected, frame, ball, what):
        if np.allclose(result, expected, atol=HALF_A_GREY_LEVEL):
            return
        name_the_mistake(result, frame, *ball, what)
        assert_close(torch.as_tensor(result), torch.as_tensor(expected), what, atol=HALF_A_GREY_LEVEL, rtol=0)

    def one_ball_on_black():
        require(student, "draw_ball")
        rng = np.random.default_rng(80)
        for _ in range(4):
            x, y, radius, index = rng.uniform(6, 26), rng.uniform(6, 26), rng.uniform(2.5, 4.5), int(rng.integers(6))
            colour = PALETTE[index] / 255
            black = np.zeros((SIZE, SIZE, 3))
            result = drawn(black, x, y, radius, colour, f"a ball of radius {radius:.2f} at ({x:.2f}, {y:.2f})")
            compare_frame(result, _library_frame([(x, y, radius, index)]), black, (x, y, radius, colour),
                          f"a ball of radius {radius:.2f} at ({x:.2f}, {y:.2f}) on black, against render_videos")

    def the_later_ball_is_in_front():
        require(student, "draw_ball")
        first, second = (14.2, 15.7, 4.0, 0), (17.9, 16.3, 3.5, 2)  # overlapping red and blue
        frame = drawn(np.zeros((SIZE, SIZE, 3)), *first[:3], PALETTE[first[3]] / 255, "the first ball")
        result = drawn(frame, *second[:3], PALETTE[second[3]] / 255, "the second ball, over the first")
        compare_frame(result, _library_frame([first, second]), frame, (*second[:3], PALETTE[second[3]] / 255),
                      "a blue ball drawn over a red one it overlaps, against render_videos (blue on top)")

    def over_any_background():
        require(student, "draw_ball")
        background = np.random.default_rng(81).uniform(0, 1, size=(SIZE, SIZE, 3))
        colour = np.array([0.2, 0.9, 0.4])
        result = drawn(background, 11.3, 19.8, 3.7, colour, "a ball over a random background")
        expected = _ramp_frame(background, 11.3, 19.8, 3.7, colour)
        if not np.allclose(result, expected, atol=1e-9):
            name_the_mistake(result, background, 11.3, 19.8, 3.7, colour, "a ball over a random background")
            assert_close(torch.as_tensor(result), torch.as_tensor(expected),
                         "a ball over a random background: frame · (1 − coverage) + colour · coverage", atol=1e-9)

    def area_is_that_of_the_disc():
        require(student, "draw_ball")
        for radius in (2.5, 4.0, 7.3):
            white = drawn(np.zeros((SIZE, SIZE, 3)), 15.6, 16.2, radius, np.ones(3), f"a white ball of radius {radius}")
            area, disc = float(white[..., 0].sum()), math.pi * radius**2
            # The ramp's coverage integrates to π r² + π/12: within half a pixel of the disc's area.
            if abs(area - disc) > 0.5:
                raise CheckFailed(f"a ball of radius {radius}: its coverage adds up to {area:.2f} px, but the disc's "
                                  f"area is π r² = {disc:.2f} px (the ramp must cross the circle at coverage ½)")

    def free_flight():
        require(student, "step_ball")
        for case in _flight_cases(82, 6):
            x, y, vx, vy, radius, g, e = case
            what = f"free flight from (x, y) = ({x:.2f}, {y:.2f}), v = ({vx:.2f}, {vy:.2f}), g = {g:.3f}"
            result = _as_state(student.step_ball(*case[:5], SIZE, g, e), what)
            expected = _state_after(*case)
            if np.allclose(result, expected, atol=1e-9):
                continue
            if np.allclose(result[1], y + vy, atol=1e-9) or np.allclose(result[1], y + vy + g, atol=1e-9):
                raise CheckFailed(f"{what}: y moved by v_y (or v_y + g), an Euler step; the exact motion under "
                                  f"constant gravity is the parabola y + v_y + ½ g")
            assert_close(torch.as_tensor(result), torch.as_tensor(expected),
                         f"{what}: (x, y, vx, vy) against simulate_balls", atol=1e-9)

    def floor_bounces(gravity, restitution):
        def check():
            require(student, "step_ball")
            for case in _bounce_cases(83, 8, gravity, restitution):
                x, y, vx, vy, radius, g, e = case
                what = (f"a bounce from (x, y) = ({x:.2f}, {y:.2f}), v = ({vx:.2f}, {vy:.2f}), r = {radius:.2f}, "
                        f"g = {g}, e = {e}")
                result = _as_state(student.step_ball(*case[:5], SIZE, g, e), what)
                expected = _state_after(*case)
                if np.allclose(result, expected, atol=1e-9):
                    continue
                if abs(result[1] - (SIZE - radius)) < 1e-9:
                    raise CheckFailed(f"{what}: the ball stops at the floor; after the bounce it flies on for the "
                                      "rest of the frame, 1 − τ_floor")
                if result[3] > 0:
                    raise CheckFailed(f"{what}: the ball still moves down (v_y = {result[3]:.3f}) after hitting the "
                                      "floor: reverse the velocity into the floor")
                assert_close(torch.as_tensor(result), torch.as_tensor(expected),
                             f"{what}: (x, y, vx, vy) against simulate_balls", atol=1e-9)
        return check

    def bounce_keeps_e_squared_of_the_vertical_energy():
        require(student, "step_ball")
        for case in _bounce_cases(84, 6, 0.15, 0.8):
            x, y, vx, vy, radius, g, e = case
            _, new_y, _, new_vy = _as_state(student.step_ball(*case[:5], SIZE, g, e), "a bounce")
            floor = SIZE - radius
            before, after = 0.5 * vy**2 + g * (floor - y), 0.5 * new_vy**2 + g * (floor - new_y)
            kept = after / before
            if not math.isclose(kept, e**2, rel_tol=1e-9):
                hint = " (it kept all of it: is the restitution missing?)" if math.isclose(kept, 1.0, rel_tol=1e-6) else ""
                raise CheckFailed(f"a floor bounce with e = {e} kept {kept:.6f} of the vertical energy ½ v_y² + "
                                  f"g·height, expected e² = {e**2:.6f}: the bounce multiplies the speed into the floor "
                                  f"by e, so its energy by e²{hint}")

    return [("a ball on black equals render_videos (anti-aliased, pixel centres at j + ½)", one_ball_on_black),
            ("a later ball is drawn over an earlier one", the_later_ball_is_in_front),
            ("a ball over any background: frame · (1 − coverage) + colour · coverage", over_any_background),
            ("the ball's coverage adds up to the disc's area π r²", area_is_that_of_the_disc),
            ("free flight follows the exact parabola (simulate_balls)", free_flight),
            ("floor bounces equal simulate_balls (g = 0.15, e = 0.9)", floor_bounces(0.15, 0.9)),
            ("floor bounces equal simulate_balls (g = 0.4, e = 0.6)", floor_bounces(0.4, 0.6)),
            ("a bounce keeps e² of the vertical energy", bounce_keeps_e_squared_of_the_vertical_energy)]
