"""Procedural physics videos: coloured balls under gravity, bouncing in a box, seeded and offline.

Each video shows one to three balls of distinct colours on black, falling under gravity and bouncing
off the floor, the ceiling and the two side walls; a bounce keeps ``restitution`` of the speed
towards the wall. Some videos have an occluder: a grey vertical bar drawn in front of the balls.
Balls do not collide with each other: they pass through one another, and where they overlap the
ball with the higher slot index is drawn on top (slot 0 first, then 1, then 2).

Every video carries the physical state behind each frame (positions, velocities, radii, colours,
which balls are present), so a model's continuation can be scored against the truth, and a matched
*impossible* twin can be made from the same set-up: a ball teleports, vanishes, appears, changes
colour, falls through the floor, gravity reverses, or a bounce gains energy. A corrupted copy
(``corrupted_copies``) draws a video again with one ball left out or repainted throughout, for training.

Conventions (all in pixels, all in this module):
  - x points right, y points DOWN (row index), the origin is the top-left corner of the picture,
    and the centre of pixel (row i, column j) is at (x, y) = (j + 0.5, i + 0.5).
  - Gravity is a positive acceleration along +y (down the picture), in px/frame².
  - The box is the picture: a ball of radius r touches the left wall at x = r, the right wall at
    x = S - r, the ceiling at y = r and the floor at y = S - r (S = image_size).
  - A ball's energy per unit mass is 0.5 |v|² + g (S - r - y): kinetic plus potential, the height
    measured above the point where it would touch the floor.

How a frame is simulated (``simulate_balls``), exactly and for all balls at once:
  1. Between bounces a ball follows a parabola: x(t) = x + v t + ½ a t², with a = (0, g). This is
     the exact solution for constant gravity, so there is no integration error to accumulate.
  2. The time at which each ball would next touch each wall is solved in closed form (a linear
     equation for the side walls, a quadratic one for floor and ceiling).
  3. If the earliest contact falls within the frame, the ball moves to it, the velocity component
     into that wall is reversed and scaled by the restitution, and the rest of the frame is
     simulated the same way. With restitution 1 energy is conserved to rounding error.

How a frame is drawn (``render_videos``): each ball is an anti-aliased disc, the coverage of a pixel
being clamp(r + ½ - distance to the centre, 0, 1), a linear ramp one pixel wide across the edge (the
approach of imagediff/data/shapes.py), composited over black in slot order; then the occluder.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, fields
from numbers import Integral
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from imagediff.data.dataset import DataError

# ---------------------------------------------------------------------------------------------
#                                   Palette and configuration
# ---------------------------------------------------------------------------------------------

# Six saturated colours, 60° apart on the hue circle, so a tracker tells them apart by hue alone,
# even when a decoder blurs or dims them. A ball's colour is an index into this table.
PALETTE_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "cyan", "magenta")
PALETTE = np.array([
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
], dtype=np.uint8)  # (6, 3)

# The occluder is mid grey: bright, but with no hue, so no tracker mistakes it for a ball.
OCCLUDER_GREY = 128


@dataclass(frozen=True)
class PhysicsConfig:
    """The knobs of the generator. Lengths in pixels, times in frames.

    The initial speed is drawn from ``speed_range`` in a uniform direction; gravity then adds speed,
    up to about sqrt(v0² + 2 g S) ≈ 3.5 px/frame for a ball that falls the whole height.
    """

    image_size: int = 32
    num_frames: int = 32
    min_balls: int = 1
    max_balls: int = 3  # K: every state array has K ball slots; absent slots have present=False
    gravity: float = 0.15  # px/frame², along +y
    restitution: float = 0.9  # share of the speed into a wall that is kept by the bounce
    radius_range: tuple[float, float] = (2.5, 4.5)
    speed_range: tuple[float, float] = (0.5, 2.0)  # initial speed, px/frame
    occluder_probability: float = 0.3
    occluder_width_range: tuple[int, int] = (4, 8)  # whole columns, both ends included

    def __post_init__(self) -> None:
        def is_integer(value) -> bool:
            return isinstance(value, Integral) and not isinstance(value, bool)

        if not is_integer(self.image_size) or self.image_size < 8:
            raise ValueError(f"image_size must be an integer of at least 8 pixels, got {self.image_size!r}")
        if not is_integer(self.num_frames) or self.num_frames < 2:
            raise ValueError(f"num_frames must be an integer of at least 2 (a video needs motion), "
                             f"got {self.num_frames!r}")
        if not (is_integer(self.min_balls) and is_integer(self.max_balls)):
            raise ValueError(f"min_balls and max_balls must be integers, got {self.min_balls!r} and {self.max_balls!r}")
        if self.max_balls > len(PALETTE):
            raise ValueError(f"max_balls={self.max_balls} exceeds the {len(PALETTE)} palette colours "
                             f"({', '.join(PALETTE_NAMES)}): every ball of a video needs its own colour")
        if not 1 <= self.min_balls <= self.max_balls:
            raise ValueError(f"expected 1 <= min_balls <= max_balls, got min_balls={self.min_balls}, "
                             f"max_balls={self.max_balls}")
        if not self.gravity >= 0:
            raise ValueError(f"gravity must be >= 0 px/frame² (it pulls down, +y), got {self.gravity!r}")
        if not 0 <= self.restitution <= 1:
            raise ValueError(f"restitution must lie in [0, 1] (1: elastic bounce, 0: the ball stops), "
                             f"got {self.restitution!r}; a bounce that gains energy is an impossible "
                             f"event, made by make_impossible_pairs(kinds=['energy_gain'])")
        low, high = self.radius_range
        if not 0 < low <= high or 2 * high >= self.image_size:
            raise ValueError(f"radius_range must satisfy 0 < low <= high < image_size / 2 = "
                             f"{self.image_size / 2}, got {self.radius_range}")
        low, high = self.speed_range
        if not 0 <= low <= high:
            raise ValueError(f"speed_range must satisfy 0 <= low <= high, got {self.speed_range}")
        if not 0 <= self.occluder_probability <= 1:
            raise ValueError(f"occluder_probability must lie in [0, 1], got {self.occluder_probability!r}")
        low, high = self.occluder_width_range
        if not (is_integer(low) and is_integer(high) and 1 <= low <= high < self.image_size):
            raise ValueError(f"occluder_width_range must be whole columns with 1 <= low <= high < "
                             f"image_size={self.image_size}, got {self.occluder_width_range}")


# ---------------------------------------------------------------------------------------------
#                                          Simulation
# ---------------------------------------------------------------------------------------------

# A ball bouncing ever lower on the floor (restitution < 1) bounces infinitely often in finite time;
# after this many contacts in one frame the rest of the frame is simulated without them, and the
# ball is put back on the floor, at rest.
MAX_CONTACTS_PER_FRAME = 8


def _time_to_reach(position, velocity, acceleration, target, arriving_velocity_sign):
    """First time t >= 0 at which position + velocity t + ½ acceleration t² equals target while the
    velocity has the sign ``arriving_velocity_sign`` (+1 moving to larger values, -1 to smaller);
    inf if never. All arrays (M,).

    The velocity at a root of the quadratic is ±s with s = sqrt(v² + 2 a (target - position)), so the
    root with velocity +s is t = (s - v) / a and the one with velocity -s is t = (-s - v) / a.
    With a = 0 the motion is linear: t = (target - position) / v.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(velocity**2 + 2 * acceleration * (target - position))  # nan when never reached
        quadratic = (arriving_velocity_sign * s - velocity) / acceleration
        linear = (target - position) / velocity
        linear = np.where(np.sign(velocity) == arriving_velocity_sign, linear, np.inf)
        time = np.where(acceleration == 0, linear, quadratic)
    return np.where(time >= 0, time, np.inf)  # nan (no root) and roots in the past become inf


def _advance_one_frame(x, y, vx, vy, radius, image_size, gravity, restitution, floor_solid):
    """Move balls (M,) one frame forward, bouncing exactly; returns x, y, vx, vy and the downward
    speed (M,) at which each ball hit the floor during the frame (0 if it did not)."""
    remaining = np.ones_like(x)  # (M,) time left in this frame
    floor_impact = np.zeros_like(x)
    floor = image_size - radius  # (M,) the y of a ball resting on the floor
    for _ in range(MAX_CONTACTS_PER_FRAME):
        with np.errstate(divide="ignore", invalid="ignore"):
            contact_times = np.stack([
                np.where(vx < 0, (radius - x) / vx, np.inf),  # left wall, x = r
                np.where(vx > 0, (image_size - radius - x) / vx, np.inf),  # right wall, x = S - r
                np.where(floor_solid, _time_to_reach(y, vy, gravity, floor, +1), np.inf),  # floor
                _time_to_reach(y, vy, gravity, radius, -1),  # ceiling, y = r
            ])  # (4, M)
        contact_times = np.where(contact_times >= 0, contact_times, np.inf)
        wall = contact_times.argmin(axis=0)  # (M,) 0 left, 1 right, 2 floor, 3 ceiling
        bounces = contact_times.min(axis=0) <= remaining  # (M,)
        step = np.where(bounces, contact_times.min(axis=0), remaining)  # (M,)
        # The exact parabola over `step` (step 1 above).
        x, y = x + vx * step, y + vy * step + 0.5 * gravity * step**2
        vy = vy + gravity * step
        remaining = remaining - step
        # Reverse and scale the velocity component into the wall (step 3 above); put the ball exactly
        # on the wall so that rounding never lets it leak through.
        side, top_or_bottom = bounces & (wall <= 1), bounces & (wall >= 2)
        floor_impact = np.where(bounces & (wall == 2), np.maximum(floor_impact, vy), floor_impact)
        vx = np.where(side, -restitution * vx, vx)
        vy = np.where(top_or_bottom, -restitution * vy, vy)
        x = np.where(bounces & (wall == 0), radius, np.where(bounces & (wall == 1), image_size - radius, x))
        y = np.where(bounces & (wall == 2), floor, np.where(bounces & (wall == 3), radius, y))
        if not bounces.any():
            break
    # Balls that used up their contacts (settling on the floor) finish the frame in free flight, and
    # are then put back inside the box with no velocity into the wall they crossed.
    x, y = x + vx * remaining, y + vy * remaining + 0.5 * gravity * remaining**2
    vy = vy + gravity * remaining
    below_floor = floor_solid & (y > floor)
    vy = np.where(below_floor, np.minimum(vy, 0), np.where(y < radius, np.maximum(vy, 0), vy))
    y = np.where(below_floor, floor, np.maximum(y, radius))
    x = np.clip(x, radius, image_size - radius)
    return x, y, vx, vy, floor_impact


def simulate_balls(
    positions: np.ndarray,
    velocities: np.ndarray,
    radii: np.ndarray,
    num_frames: int,
    image_size: int,
    gravity: float | np.ndarray,
    restitution: float | np.ndarray,
    floor_solid: bool | np.ndarray = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trajectories of balls bouncing in the box, frame 0 being the given state.

    positions, velocities (N, K, 2) as (x, y) in px and px/frame; radii (N, K). ``gravity``,
    ``restitution`` and ``floor_solid`` are numbers or arrays that broadcast to (N, F-1, K): the value
    used by each ball during the step from frame f to f + 1 (the impossible twins change them).
    Returns positions (N, F, K, 2), velocities (N, F, K, 2), both float64, and floor_impacts
    (N, F-1, K): the downward speed at which a ball hit the floor during each step, 0 if it did not.
    """
    num_videos, num_balls = np.shape(radii)
    steps = num_frames - 1
    per_step = (num_videos, steps, num_balls)
    gravity = np.broadcast_to(np.asarray(gravity, dtype=np.float64), per_step)
    restitution = np.broadcast_to(np.asarray(restitution, dtype=np.float64), per_step)
    floor_solid = np.broadcast_to(np.asarray(floor_solid, dtype=bool), per_step)

    all_positions = np.empty((num_videos, num_frames, num_balls, 2))
    all_velocities = np.empty((num_videos, num_frames, num_balls, 2))
    floor_impacts = np.zeros(per_step)
    all_positions[:, 0], all_velocities[:, 0] = positions, velocities
    x, y = np.array(positions[..., 0], dtype=np.float64), np.array(positions[..., 1], dtype=np.float64)  # (N, K)
    vx, vy = np.array(velocities[..., 0], dtype=np.float64), np.array(velocities[..., 1], dtype=np.float64)
    radii = np.asarray(radii, dtype=np.float64)
    for step in range(steps):
        x, y, vx, vy, floor_impacts[:, step] = _advance_one_frame(
            x, y, vx, vy, radii, image_size, gravity[:, step], restitution[:, step], floor_solid[:, step]
        )
        all_positions[:, step + 1] = np.stack([x, y], axis=-1)
        all_velocities[:, step + 1] = np.stack([vx, vy], axis=-1)
    return all_positions, all_velocities, floor_impacts


def ball_energy(
    positions: np.ndarray, velocities: np.ndarray, radii: np.ndarray, gravity: float, image_size: int
) -> np.ndarray:
    """Energy per unit mass of every ball: 0.5 |v|² + g (S - r - y), kinetic plus potential.

    positions, velocities (N, F, K, 2); radii (N, K). Returns (N, F, K). It is constant in free
    flight, and a bounce multiplies the part that belongs to the velocity into the wall by e².
    """
    height = image_size - np.asarray(radii)[:, None, :] - positions[..., 1]  # (N, F, K) above the floor contact
    return 0.5 * (velocities**2).sum(axis=-1) + gravity * height


# ---------------------------------------------------------------------------------------------
#                                          Rendering
# ---------------------------------------------------------------------------------------------


def render_videos(
    positions: np.ndarray,
    radii: np.ndarray,
    colours: np.ndarray,
    present: np.ndarray,
    occluders: np.ndarray,
    image_size: int,
    chunk_size: int = 32,
) -> np.ndarray:
    """Draw the balls, anti-aliased, over black, in slot order; then the grey occluder on top.

    positions (N, F, K, 2) as (x, y) px; radii (N, K); colours (N, F, K) indices into PALETTE;
    present (N, F, K) bool; occluders (N, 2) the first and one-past-last column of the bar ((0, 0):
    none). Returns frames (N, F, H, W, 3) uint8. ``chunk_size`` videos are drawn at a time, which
    bounds memory without changing the result.

    Compositing "over", ball after ball, gives pixel = sum_k colour_k * coverage_k * prod_{j > k}
    (1 - coverage_j): ball k shows through the share of the pixel that the balls drawn after it
    leave uncovered. Summing that way, from the top ball down, needs only one-channel arrays until
    the colours are applied, which is faster than blending whole RGB frames ball after ball.
    """
    num_videos, num_frames, num_balls, _ = positions.shape
    centres = np.arange(image_size, dtype=np.float32) + 0.5  # (W,) pixel centres along x (and y)
    palette = PALETTE.astype(np.float32) / 255  # (6, 3)
    frames = np.empty((num_videos, num_frames, image_size, image_size, 3), dtype=np.uint8)
    for start in range(0, num_videos, chunk_size):
        chunk = slice(start, start + chunk_size)
        x = positions[chunk, ..., 0].astype(np.float32)  # (n, F, K)
        y = positions[chunk, ..., 1].astype(np.float32)
        channels = np.zeros((3, len(x), num_frames, image_size, image_size), dtype=np.float32)  # (3, n, F, H, W)
        uncovered = np.ones((len(x), num_frames, image_size, image_size), dtype=np.float32)  # (n, F, H, W)
        for ball in reversed(range(num_balls)):  # the top ball first
            dx = centres - x[:, :, ball, None, None]  # (n, F, 1, W)
            dy = centres[:, None] - y[:, :, ball, None, None]  # (n, F, H, 1)
            distance = np.sqrt(dx**2 + dy**2)  # (n, F, H, W)
            radius = radii[chunk, None, ball, None, None].astype(np.float32)  # (n, 1, 1, 1)
            coverage = np.clip(radius + 0.5 - distance, 0, 1)  # (n, F, H, W) the one-pixel edge ramp
            coverage *= present[chunk, :, ball, None, None]
            shows = coverage * uncovered  # (n, F, H, W) the share of the pixel where this ball is seen
            uncovered *= 1 - coverage
            colour = palette[colours[chunk, :, ball]]  # (n, F, 3)
            for channel in range(3):
                channels[channel] += shows * colour[:, :, channel, None, None]
        image = np.moveaxis(channels, 0, -1)  # (n, F, H, W, 3)
        columns = np.arange(image_size)
        bar = (columns >= occluders[chunk, :1]) & (columns < occluders[chunk, 1:])  # (n, W)
        image = np.where(bar[:, None, None, :, None], np.float32(OCCLUDER_GREY / 255), image)
        frames[chunk] = np.rint(image * 255).astype(np.uint8)
    return frames


# ---------------------------------------------------------------------------------------------
#                                         The data set
# ---------------------------------------------------------------------------------------------


def scene_sets(max_balls: int) -> list[tuple[int, ...]]:
    """Every set of 1..max_balls distinct palette colours, smallest sets first, each sorted: the table of
    scene labels. A video's scene label is the index of the set of its balls' colours (``scene_labels``);
    with the default 3 balls and 6 colours there are 6 + 15 + 20 = 41."""
    if isinstance(max_balls, bool) or not isinstance(max_balls, (int, np.integer)) \
            or not 1 <= max_balls <= len(PALETTE):
        raise ValueError(f"max_balls must be a whole number in 1..{len(PALETTE)} (the palette's colours), "
                         f"got {max_balls!r}")
    return [combination for size in range(1, int(max_balls) + 1)
            for combination in itertools.combinations(range(len(PALETTE)), size)]


def scene_label(colours, max_balls: int = 3) -> int:
    """The scene label of a set of ball colours, each a palette name ("red") or index, in any order: the index
    of the sorted set in ``scene_sets(max_balls)``, as ``scene_labels`` gives a video holding those balls."""
    names = list(colours)
    indices = []
    for colour in names:
        if isinstance(colour, str) and colour.strip().lower() in PALETTE_NAMES:
            indices.append(PALETTE_NAMES.index(colour.strip().lower()))
        elif isinstance(colour, (int, np.integer)) and not isinstance(colour, bool) and 0 <= colour < len(PALETTE):
            indices.append(int(colour))
        else:
            raise ValueError(f"unknown ball colour {colour!r}: expected one of {', '.join(PALETTE_NAMES)} "
                             f"(or a palette index 0..{len(PALETTE) - 1})")
    if not 1 <= len(indices) <= max_balls or len(set(indices)) != len(indices):
        raise ValueError(f"a scene holds 1..{max_balls} balls of distinct colours, got {names!r}")
    return scene_sets(max_balls).index(tuple(sorted(indices)))


def scene_labels(videos: "PhysicsVideos") -> np.ndarray:
    """(N,) int64: each video's scene label — which palette colours the balls present in its first frame
    have, as an index into ``scene_sets(K)`` (K = the videos' ball slots). A video with no ball in its first
    frame has no label: ValueError."""
    table = {colours: index for index, colours in enumerate(scene_sets(videos.radii.shape[1]))}
    colours, present = videos.colours[:, 0], videos.present[:, 0]  # (N, K)
    empty = np.flatnonzero(~present.any(axis=1))
    if empty.size:
        raise ValueError(f"video {int(empty[0])} has no ball in its first frame, so no scene label: "
                         "the label names the colours of the balls a video starts with")
    return np.array([table[tuple(sorted(int(c) for c in row[shown]))] for row, shown in zip(colours, present)],
                    dtype=np.int64)


@dataclass
class PhysicsVideos:
    """Videos of bouncing balls and the physical state behind every frame.

    frames      (N, F, H, W, 3) uint8 RGB
    positions   (N, F, K, 2) float32, (x, y) in px, y down (see the module docstring)
    velocities  (N, F, K, 2) float32, px/frame
    radii       (N, K) float32, px
    colours     (N, F, K) int64 indices into PALETTE, per frame because an impossible twin may
                change a ball's colour; a plausible video keeps them constant
    present     (N, F, K) bool: the ball is in the scene. A slot may be empty for a whole video (fewer
                balls than K) or from some frame on (an impossible twin's ball that vanished, or fell
                through the floor and out of the picture). The positions of an absent ball are still
                its simulated trajectory, and mean nothing for the picture.
    occluders   (N, 2) int64: first and one-past-last column of the grey bar; (0, 0) if none
    seeds       (N,) int64: make_videos_from_seeds(seeds[i:i+1], config) redraws video i exactly
    config      the PhysicsConfig that drew them
    """

    frames: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    radii: np.ndarray
    colours: np.ndarray
    present: np.ndarray
    occluders: np.ndarray
    seeds: np.ndarray
    config: PhysicsConfig

    def __post_init__(self) -> None:
        if self.frames.ndim != 5 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise DataError(f"PhysicsVideos.frames must be uint8 of shape (N, F, H, W, 3), "
                            f"got {self.frames.dtype} of shape {self.frames.shape}")
        num_videos, num_frames = self.frames.shape[:2]
        num_balls = self.radii.shape[-1] if self.radii.ndim == 2 else -1
        expected = {
            "positions": (num_videos, num_frames, num_balls, 2),
            "velocities": (num_videos, num_frames, num_balls, 2),
            "radii": (num_videos, num_balls),
            "colours": (num_videos, num_frames, num_balls),
            "present": (num_videos, num_frames, num_balls),
            "occluders": (num_videos, 2),
            "seeds": (num_videos,),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise DataError(f"PhysicsVideos.{name} has shape {getattr(self, name).shape}: expected {shape} "
                                f"for {num_videos} videos of {num_frames} frames with {num_balls} ball slots")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index) -> PhysicsVideos:
        return self.subset(index)

    def subset(self, index: int | slice | Sequence[int] | np.ndarray) -> PhysicsVideos:
        """The videos at ``index`` (an int, a slice, indices or a boolean mask), still a batch:
        videos[3] has length 1."""
        if isinstance(index, Integral):
            index = [int(index)]
        return PhysicsVideos(**{
            field.name: getattr(self, field.name)[index] for field in fields(self) if field.name != "config"
        }, config=self.config)

    @classmethod
    def concatenate(cls, parts: Sequence[PhysicsVideos]) -> PhysicsVideos:
        """One batch holding the videos of ``parts`` in order; they must share their config."""
        if len({part.config for part in parts}) != 1:
            raise DataError("cannot concatenate PhysicsVideos drawn with different configs")
        return cls(**{
            field.name: np.concatenate([getattr(part, field.name) for part in parts])
            for field in fields(cls) if field.name != "config"
        }, config=parts[0].config)

    def to_model_range(self) -> torch.Tensor:
        """frames as float32 torch (N, F, 3, H, W) in [-1, 1], the range the models use."""
        frames = torch.from_numpy(self.frames).permute(0, 1, 4, 2, 3)  # (N, F, 3, H, W)
        return frames.float().div_(127.5).sub_(1)  # in place: 10 000 videos of 32 frames are 3.7 GiB of float32

    def save(self, path: str | Path) -> None:
        """Write every array and the config to one .npz file (np.savez, uncompressed)."""
        arrays = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "config"}
        np.savez(path, **arrays, config=np.array(json.dumps(asdict(self.config))))

    @classmethod
    def load(cls, path: str | Path) -> PhysicsVideos:
        """Read a file written by ``save``. Raises DataError naming the file if it is missing or is
        not such a file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"no physics videos at {path}: expected a .npz file written by PhysicsVideos.save")
        try:
            with np.load(path) as stored:
                arrays = {name: stored[name] for name in stored.files}
        except Exception as error:  # a truncated zip, or not a zip at all
            raise DataError(f"cannot read {path} as .npz: {error}; expected a file written by "
                            f"PhysicsVideos.save") from error
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in arrays]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}: expected a file written by PhysicsVideos.save, "
                            f"which holds {', '.join(names)}")
        config = {name: tuple(value) if isinstance(value, list) else value
                  for name, value in json.loads(str(arrays.pop("config"))).items()}
        return cls(**arrays, config=PhysicsConfig(**config))


# ---------------------------------------------------------------------------------------------
#                                       Random set-ups
# ---------------------------------------------------------------------------------------------


@dataclass
class BallSetup:
    """The initial state of N videos, each drawn from its own seed: radii (N, K), colours (N, K),
    present (N, K), positions and velocities (N, K, 2) at frame 0, occluders (N, 2)."""

    radii: np.ndarray
    colours: np.ndarray
    present: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    occluders: np.ndarray


def draw_setups(seeds: np.ndarray, config: PhysicsConfig) -> BallSetup:
    """One set-up per seed. All K slots are drawn, empty ones too (an "appear" twin fills one in), and
    every seed makes the same draws in the same order, so a seed alone fixes its video."""
    num_videos, num_balls, size = len(seeds), config.max_balls, config.image_size
    setup = BallSetup(
        radii=np.empty((num_videos, num_balls)), colours=np.empty((num_videos, num_balls), dtype=np.int64),
        present=np.zeros((num_videos, num_balls), dtype=bool), positions=np.empty((num_videos, num_balls, 2)),
        velocities=np.empty((num_videos, num_balls, 2)), occluders=np.zeros((num_videos, 2), dtype=np.int64),
    )
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(int(seed))
        setup.present[i, :rng.integers(config.min_balls, config.max_balls + 1)] = True
        setup.colours[i] = rng.choice(len(PALETTE), size=num_balls, replace=False)  # distinct colours
        radii = rng.uniform(*config.radius_range, size=num_balls)  # (K,)
        setup.radii[i] = radii
        setup.positions[i] = rng.uniform(radii[:, None], size - radii[:, None], size=(num_balls, 2))  # inside the box
        speed = rng.uniform(*config.speed_range, size=num_balls)
        angle = rng.uniform(0, 2 * math.pi, size=num_balls)
        setup.velocities[i] = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
        has_occluder = rng.random() < config.occluder_probability
        width = rng.integers(config.occluder_width_range[0], config.occluder_width_range[1] + 1)
        first_column = rng.integers(0, size - width + 1)
        if has_occluder:
            setup.occluders[i] = (first_column, first_column + width)
    return setup


def _simulate_setup(setup: BallSetup, config: PhysicsConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """simulate_balls with the config's physics: positions, velocities (N, F, K, 2), floor_impacts."""
    return simulate_balls(setup.positions, setup.velocities, setup.radii, config.num_frames,
                          config.image_size, config.gravity, config.restitution)


def _videos(setup: BallSetup, positions, velocities, colours, present, seeds, config) -> PhysicsVideos:
    """Render states (N, F, K, ...) into a PhysicsVideos."""
    frames = render_videos(positions, setup.radii, colours, present, setup.occluders, config.image_size)
    return PhysicsVideos(
        frames=frames, positions=positions.astype(np.float32), velocities=velocities.astype(np.float32),
        radii=setup.radii.astype(np.float32), colours=colours.astype(np.int64), present=present.astype(bool),
        occluders=setup.occluders.copy(), seeds=np.asarray(seeds, dtype=np.int64).copy(), config=config,
    )


def _per_frame(values: np.ndarray, num_frames: int) -> np.ndarray:
    """(N, K) -> (N, F, K), the same value in every frame."""
    return np.repeat(values[:, None], num_frames, axis=1)


def make_videos_from_seeds(seeds: Sequence[int] | np.ndarray, config: PhysicsConfig | None = None) -> PhysicsVideos:
    """The videos of the given per-video seeds (N,): the same seed always gives the same video."""
    config = config or PhysicsConfig()
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    setup = draw_setups(seeds, config)
    positions, velocities, _ = _simulate_setup(setup, config)
    frames = config.num_frames
    return _videos(setup, positions, velocities, _per_frame(setup.colours, frames),
                   _per_frame(setup.present, frames), seeds, config)


def _video_seeds(generator: np.random.Generator, count: int) -> np.ndarray:
    return generator.integers(0, 2**63 - 1, size=count, dtype=np.int64)


def _check_count(name: str, count) -> None:
    if isinstance(count, bool) or not isinstance(count, Integral) or count < 1:
        raise ValueError(f"{name} must be a positive integer, got {count!r}")


def make_videos(num_videos: int, seed: int = 0, config: PhysicsConfig | None = None) -> PhysicsVideos:
    """``num_videos`` videos of bouncing balls (see the module docstring), with their states.

    Each video gets its own seed, drawn from ``seed`` and stored in ``videos.seeds``, so one video can
    be regenerated alone with make_videos_from_seeds. The same ``seed`` gives identical arrays.
    """
    _check_count("num_videos", num_videos)
    return make_videos_from_seeds(_video_seeds(np.random.default_rng(seed), num_videos), config)


# ---------------------------------------------------------------------------------------------
#                                  Corrupted copies (training)
# ---------------------------------------------------------------------------------------------

CORRUPTIONS: tuple[str, ...] = (
    "remove",  # one ball is left out of every frame
    "repaint",  # one ball is drawn, in every frame, in a palette colour no ball of the video has
)


def corrupted_copies(videos: PhysicsVideos, seed: int = 0) -> tuple[PhysicsVideos, np.ndarray]:
    """Every video drawn again with one of its balls wrong: left out of every frame, or painted in every
    frame in a palette colour that no ball of the video has (the two CORRUPTIONS, equally likely), the ball
    chosen uniformly among the video's balls. Nothing else changes: the other balls, every trajectory, the
    occluder and the seeds are the video's own, and the copy's states say what it draws (``present`` and
    ``colours`` edited). A video with no ball is copied as it is.

    These are not events inside one video, as the impossible twins are: a training clip takes its history
    from the copy and its future from the video, so that the model meets a history that has lost a ball, or
    its colour, before a future that still has it (videodiff.training, corrupt_history_probability).
    Returns the copies and the corruption of each video, (N,) indices into CORRUPTIONS. The same seed gives
    the same copies.
    """
    generator = np.random.default_rng(seed)
    draws = generator.random((len(videos), 3))  # (N, 3): which ball, which corruption, which new colour
    in_scene = videos.present.any(axis=1)  # (N, K)
    ball, has_ball = _nth_true(in_scene, draws[:, 0])
    corruption = (draws[:, 1] * len(CORRUPTIONS)).astype(np.int64)  # (N,)
    unused = np.ones((len(videos), len(PALETTE)), dtype=bool)  # (N, 6)
    rows = np.arange(len(videos))
    for slot in range(in_scene.shape[1]):
        seen = in_scene[:, slot]
        unused[rows[seen, None], videos.colours[seen, :, slot]] = False  # every colour the ball takes
    colour, has_colour = _nth_true(unused, draws[:, 2])
    present, colours = videos.present.copy(), videos.colours.copy()
    remove = corruption == CORRUPTIONS.index("remove")  # (a video with no ball has none to lose)
    repaint = has_ball & has_colour & (corruption == CORRUPTIONS.index("repaint"))
    present[remove, :, ball[remove]] = False
    colours[repaint, :, ball[repaint]] = colour[repaint, None]
    frames = render_videos(videos.positions, videos.radii, colours, present, videos.occluders,
                           videos.config.image_size)
    copies = PhysicsVideos(frames=frames, positions=videos.positions.copy(), velocities=videos.velocities.copy(),
                           radii=videos.radii.copy(), colours=colours, present=present,
                           occluders=videos.occluders.copy(), seeds=videos.seeds.copy(), config=videos.config)
    return copies, corruption


# ---------------------------------------------------------------------------------------------
#                                    Impossible twins
# ---------------------------------------------------------------------------------------------

IMPOSSIBLE_KINDS: tuple[str, ...] = (
    "teleport",  # a ball jumps to another place and carries on from there
    "vanish",  # a ball disappears
    "appear",  # a ball appears out of nothing (an empty slot is filled from the event on)
    "colour_change",  # a ball takes a colour no ball of the video has
    "fall_through_floor",  # at a floor contact the ball passes through instead of bouncing
    "gravity_reversal",  # gravity points up for every ball from the event on
    "energy_gain",  # one floor bounce has restitution ENERGY_GAIN_RESTITUTION > 1
)
ENERGY_GAIN_RESTITUTION = 1.6
TELEPORT_MIN_DISTANCE = 8.0  # px between where the ball was and where it lands
MIN_IMPACT_SPEED = 0.5  # px/frame; slower floor contacts are a ball settling, too small to see change
# A twin "differs visibly" if some frame from the event on has this many pixels that differ by more
# than a quarter of the range; set-ups whose event would be invisible (a ball vanishing behind the
# occluder for good) are redrawn.
VISIBLE_PIXELS, VISIBLE_DIFFERENCE = 3, 64
TELEPORT_CANDIDATES = 16  # random landing places tried, the first far enough is taken
EVENT_STREAM = 1  # the event is drawn from default_rng([seed, EVENT_STREAM]), apart from the set-up's draws


@dataclass
class PhysicsPairs:
    """Matched pairs: pair i is a plausible video and its impossible twin from the same seed.

    The twins are identical (frames and states) before event_frames[i] and differ from it on.
    kinds (N,) str, names from IMPOSSIBLE_KINDS; event_frames (N,) int64, the first frame that
    differs; event_balls (N,) int64, the slot the event concerns (-1: all balls, gravity_reversal);
    pair_ids (N,) int64, 0 to N - 1.
    """

    plausible: PhysicsVideos
    impossible: PhysicsVideos
    kinds: np.ndarray
    event_frames: np.ndarray
    event_balls: np.ndarray
    pair_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.kinds)


def _nth_true(mask: np.ndarray, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows of a boolean mask (n, K) pick one True column uniformly, using uniform (n,) in [0, 1).
    Returns the columns (n,) and whether the row had any True."""
    counts = mask.sum(axis=1)  # (n,)
    wanted = np.floor(uniform * counts).astype(np.int64)  # (n,) which of the True columns
    column = (np.cumsum(mask, axis=1) > wanted[:, None]).argmax(axis=1)  # first column past `wanted` Trues
    return column, counts > 0


def _restart(positions, velocities, radii, start_frames, config, gravity=None, restitution=None, floor_solid=True):
    """Simulate again from each video's frame start_frames[n] (given states (n, F, K, 2)), and splice:
    frames after the start come from the new simulation, frames up to it are kept.

    gravity, restitution, floor_solid broadcast to (n, L, K), counted in steps from the start
    (L = F - 1 - min(start_frames)). Returns new positions, velocities (n, F, K, 2).
    """
    rows = np.arange(len(start_frames))
    length = config.num_frames - int(start_frames.min())
    new_positions, new_velocities, _ = simulate_balls(
        positions[rows, start_frames], velocities[rows, start_frames], radii, length, config.image_size,
        config.gravity if gravity is None else gravity,
        config.restitution if restitution is None else restitution, floor_solid,
    )  # (n, length, K, 2)
    frame = np.arange(config.num_frames)  # (F,)
    after = frame[None, :] >= start_frames[:, None]  # (n, F)
    source = np.clip(frame[None, :] - start_frames[:, None], 0, length - 1)  # (n, F) frame of the restart
    spliced_positions = np.where(after[..., None, None], new_positions[rows[:, None], source], positions)
    spliced_velocities = np.where(after[..., None, None], new_velocities[rows[:, None], source], velocities)
    return spliced_positions, spliced_velocities


def _first_bounce(floor_impacts, present, low, high):
    """The first floor bounce (impact >= MIN_IMPACT_SPEED) of a present ball whose next frame lies in
    [low, high]. floor_impacts (n, F-1, K), present (n, F, K). Returns step (n,), ball (n,), found (n,)."""
    steps = np.arange(floor_impacts.shape[1])[None, :, None]  # (1, F-1, 1)
    bouncing = (floor_impacts >= MIN_IMPACT_SPEED) & present[:, :-1] & (steps + 1 >= low) & (steps + 1 <= high)
    flat = bouncing.reshape(len(bouncing), -1)  # (n, (F-1) K), step-major: the earliest step comes first
    first = flat.argmax(axis=1)
    return first // bouncing.shape[2], first % bouncing.shape[2], flat.any(axis=1)


@dataclass
class _Twins:
    """A batch of n plausible videos being edited into their impossible twins.

    The plausible states (float64, before rounding to float32) are read; the ``new_`` ones are edited.
    draws (n, D) are each video's event random numbers; event_frames, event_balls and usable (n,) are
    filled in by the event functions below.
    """

    setup: BallSetup
    kinds: np.ndarray  # (n,) str
    positions: np.ndarray  # (n, F, K, 2)
    velocities: np.ndarray  # (n, F, K, 2)
    floor_impacts: np.ndarray  # (n, F-1, K)
    present: np.ndarray  # (n, F, K)
    colours: np.ndarray  # (n, F, K)
    draws: np.ndarray  # (n, D): event frame, ball, new colour, then teleport landing places
    event_frames: np.ndarray  # (n,)
    event_balls: np.ndarray  # (n,)
    usable: np.ndarray  # (n,) bool: the event exists for this set-up
    new_positions: np.ndarray
    new_velocities: np.ndarray
    new_present: np.ndarray
    new_colours: np.ndarray

    def from_event_on(self, chosen: np.ndarray) -> np.ndarray:
        """(m, F) True from the event frame on, for the chosen videos."""
        return np.arange(self.present.shape[1]) >= self.event_frames[chosen, None]


def _teleport(twins: _Twins, chosen: np.ndarray, config: PhysicsConfig, event_range) -> None:
    """At the event frame the ball is somewhere else, at least TELEPORT_MIN_DISTANCE away, and carries
    on from there with the same velocity."""
    k, e, m = twins.event_balls[chosen], twins.event_frames[chosen], np.arange(len(chosen))
    radius = twins.setup.radii[chosen, k][:, None, None]  # (m, 1, 1)
    candidates = twins.draws[chosen, 3:].reshape(len(chosen), TELEPORT_CANDIDATES, 2)  # (m, T, 2) in [0, 1)
    landing = radius + candidates * (config.image_size - 2 * radius)  # (m, T, 2) anywhere inside the box
    far = np.linalg.norm(landing - twins.positions[chosen, e, k][:, None], axis=-1) >= TELEPORT_MIN_DISTANCE
    twins.usable[chosen] &= far.any(axis=1)
    state = twins.positions[chosen].copy()  # (m, F, K, 2)
    state[m, e, k] = landing[m, far.argmax(axis=1)]  # the first landing place far enough
    twins.new_positions[chosen], twins.new_velocities[chosen] = _restart(
        state, twins.velocities[chosen], twins.setup.radii[chosen], e, config)


def _vanish(twins: _Twins, chosen: np.ndarray, config: PhysicsConfig, event_range) -> None:
    """From the event frame on the ball is gone."""
    twins.new_present[chosen, :, twins.event_balls[chosen]] &= ~twins.from_event_on(chosen)


def _appear(twins: _Twins, chosen: np.ndarray, config: PhysicsConfig, event_range) -> None:
    """From the event frame on an empty slot holds a ball, on the trajectory drawn for that slot."""
    slot, has_empty_slot = _nth_true(~twins.setup.present[chosen], twins.draws[chosen, 1])
    twins.event_balls[chosen], twins.usable[chosen] = slot, has_empty_slot
    twins.new_present[chosen, :, slot] |= twins.from_event_on(chosen) & has_empty_slot[:, None]


def _colour_change(twins: _Twins, chosen: np.ndarray, config: PhysicsConfig, event_range) -> None:
    """From the event frame on the ball has a palette colour that no slot of the video has."""
    k, m = twins.event_balls[chosen], np.arange(len(chosen))
    unused = np.ones((len(chosen), len(PALETTE)), dtype=bool)  # (m, 6)
    unused[m[:, None], twins.setup.colours[chosen]] = False
    colour, twins.usable[chosen] = _nth_true(unused, twins.draws[chosen, 2])
    old_colour = twins.colours[chosen, :, k]  # (m, F)
    twins.new_colours[chosen, :, k] = np.where(twins.from_event_on(chosen), colour[:, None], old_colour)


def _broken_bounce(twins: _Twins, chosen: np.ndarray, config: PhysicsConfig, event_range) -> None:
    """fall_through_floor and energy_gain: the first floor bounce in event_range, in step s, is simulated
    again with the floor removed for that ball, or with restitution ENERGY_GAIN_RESTITUTION for that
    one step; frame s + 1 is the first that differs."""
    step, k, has_bounce = _first_bounce(twins.floor_impacts[chosen], twins.present[chosen], *event_range)
    twins.event_balls[chosen], twins.usable[chosen], twins.event_frames[chosen] = k, has_bounce, step + 1
    m, falls = np.arange(len(chosen)), twins.kinds[chosen] == "fall_through_floor"  # (m,)
    steps_after = (len(chosen), config.num_frames - 1 - int(step.min()), config.max_balls)  # counted from s
    floor_solid = np.ones(steps_after, dtype=bool)
    floor_solid[m[falls], :, k[falls]] = False  # no floor for this ball from the contact on
    restitution = np.full(steps_after, config.restitution)
    restitution[m[~falls], 0, k[~falls]] = ENERGY_GAIN_RESTITUTION  # the first restarted step only
    twins.new_positions[chosen], twins.new_velocities[chosen] = _restart(
        twins.positions[chosen], twins.velocities[chosen], twins.setup.radii[chosen], step, config,
        restitution=restitution, floor_solid=floor_solid)
    # A ball that has fallen wholly below the picture has left the scene.
    bottom_edge = twins.new_positions[chosen, :, :, 1] - twins.setup.radii[chosen, None, :]  # (m, F, K)
    twins.new_present[chosen] &= bottom_edge < config.image_size


def _gravity_reversal(twins: _Twins, chosen: np.ndarray, config: PhysicsConfig, event_range) -> None:
    """From the step into the event frame on, gravity pulls every ball up."""
    twins.event_balls[chosen] = -1
    twins.new_positions[chosen], twins.new_velocities[chosen] = _restart(
        twins.positions[chosen], twins.velocities[chosen], twins.setup.radii[chosen],
        twins.event_frames[chosen] - 1, config, gravity=-config.gravity)


# Each function edits the chosen videos' states into their impossible twins, and may move the event
# frame, pick the ball, or mark a set-up unusable.
EVENTS = {
    "teleport": _teleport,
    "vanish": _vanish,
    "appear": _appear,
    "colour_change": _colour_change,
    "fall_through_floor": _broken_bounce,
    "gravity_reversal": _gravity_reversal,
    "energy_gain": _broken_bounce,
}
assert tuple(EVENTS) == IMPOSSIBLE_KINDS


def _make_twins(seeds, kinds, config, event_range):
    """Plausible and impossible videos for per-video seeds (n,) and kinds (n,), plus the event frames,
    the event balls and a mask (n,) of the twins that came out usable (the event exists and shows)."""
    low, high = event_range
    setup = draw_setups(seeds, config)
    positions, velocities, floor_impacts = _simulate_setup(setup, config)
    colours, present = _per_frame(setup.colours, config.num_frames), _per_frame(setup.present, config.num_frames)
    plausible = _videos(setup, positions, velocities, colours, present, seeds, config)

    # The event's random numbers come from a stream of their own, so the set-up is the plausible video's.
    draws = np.stack([np.random.default_rng([int(seed), EVENT_STREAM]).random(3 + 2 * TELEPORT_CANDIDATES)
                      for seed in seeds])  # (n, D)
    event_frames = low + np.floor(draws[:, 0] * (high - low + 1)).astype(np.int64)  # (n,)
    rows = np.arange(len(seeds))
    ball, usable = _nth_true(present[rows, event_frames], draws[:, 1])  # (n,) a ball in the scene at the event
    twins = _Twins(setup, kinds, positions, velocities, floor_impacts, present, colours, draws, event_frames, ball,
                   usable, positions.copy(), velocities.copy(), present.copy(), colours.copy())
    for kind, make_event in EVENTS.items():
        chosen = np.flatnonzero(kinds == kind)  # (m,) the videos of this kind
        if len(chosen):
            make_event(twins, chosen, config, event_range)

    impossible = _videos(setup, twins.new_positions, twins.new_velocities, twins.new_colours, twins.new_present,
                         seeds, config)
    # Refuse twins whose event cannot be seen (e.g. a ball vanishing while behind the occluder for good).
    difference = np.abs(impossible.frames.astype(np.int16) - plausible.frames).max(axis=-1)  # (n, F, H, W)
    changed_pixels = (difference > VISIBLE_DIFFERENCE).sum(axis=(2, 3))  # (n, F)
    visible = ((changed_pixels >= VISIBLE_PIXELS) & twins.from_event_on(rows)).any(axis=1)
    return plausible, impossible, twins.event_frames, twins.event_balls, twins.usable & visible


def _check_kinds(kinds, config: PhysicsConfig) -> list[str]:
    kinds = list(IMPOSSIBLE_KINDS) if kinds is None else ([kinds] if isinstance(kinds, str) else list(kinds))
    unknown = [kind for kind in kinds if kind not in IMPOSSIBLE_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown impossible kinds {unknown or kinds}: expected a non-empty list chosen from "
                         f"{', '.join(IMPOSSIBLE_KINDS)}")
    if "appear" in kinds and config.min_balls == config.max_balls:
        raise ValueError(f"'appear' needs an empty ball slot, but min_balls = max_balls = {config.max_balls}: "
                         f"lower min_balls or raise max_balls")
    if "colour_change" in kinds and config.max_balls >= len(PALETTE):
        raise ValueError(f"'colour_change' needs a palette colour no ball has, but max_balls = {config.max_balls} "
                         f"uses all {len(PALETTE)}: lower max_balls")
    if {"fall_through_floor", "energy_gain", "gravity_reversal"} & set(kinds) and config.gravity == 0:
        raise ValueError("fall_through_floor, energy_gain and gravity_reversal need gravity > 0")
    return kinds


def _check_event_range(event_range, num_frames: int) -> tuple[int, int]:
    if event_range is None:
        return num_frames // 4, num_frames - num_frames // 4
    low, high = event_range
    if not 1 <= low <= high <= num_frames - 1:
        raise ValueError(f"event_range must satisfy 1 <= first <= last <= num_frames - 1 = {num_frames - 1} "
                         f"(a frame before the event and one at it), got {event_range}")
    return int(low), int(high)


def make_pairs_from_seeds(
    seeds: Sequence[int] | np.ndarray,
    kinds: Sequence[str],
    config: PhysicsConfig | None = None,
    event_range: tuple[int, int] | None = None,
) -> PhysicsPairs:
    """The pairs of the given per-video seeds (N,) and kinds (N,), as make_impossible_pairs made them.
    Raises DataError if some seed has no visible event of its kind in event_range."""
    config = config or PhysicsConfig()
    _check_kinds(list(set(kinds)), config)
    seeds, kinds = np.asarray(seeds, dtype=np.int64).reshape(-1), np.asarray(kinds)
    event_range = _check_event_range(event_range, config.num_frames)
    plausible, impossible, event_frames, balls, usable = _make_twins(seeds, kinds, config, event_range)
    if not usable.all():
        bad = np.flatnonzero(~usable)
        raise DataError(f"seeds {seeds[bad].tolist()} have no visible {kinds[bad].tolist()} event in frames "
                        f"{event_range}: expected seeds stored by make_impossible_pairs with the same config")
    return PhysicsPairs(plausible, impossible, kinds, event_frames, balls, np.arange(len(seeds)))


def make_impossible_pairs(
    num_pairs: int,
    seed: int = 0,
    config: PhysicsConfig | None = None,
    kinds: Sequence[str] | None = None,
    event_range: tuple[int, int] | None = None,
    max_rounds: int = 30,
) -> PhysicsPairs:
    """``num_pairs`` plausible videos, each with an impossible twin from the same seed and set-up.

    kinds: the events to make (default: all of IMPOSSIBLE_KINDS); pair i gets kinds[i % len(kinds)],
    so they cycle evenly. event_range (first, last), both included: where the event frame may lie,
    by default (F // 4, F - F // 4) = (8, 24) for 32 frames. A drawn set-up that cannot show its event
    (no empty slot for "appear", no floor bounce in range, an event hidden behind the occluder) is
    replaced by a set-up from a fresh seed, so the stored seeds are the accepted ones.
    """
    _check_count("num_pairs", num_pairs)
    config = config or PhysicsConfig()
    kinds = _check_kinds(kinds, config)
    event_range = _check_event_range(event_range, config.num_frames)
    pair_kinds = np.array([kinds[i % len(kinds)] for i in range(num_pairs)])
    generator = np.random.default_rng(seed)
    pending = np.arange(num_pairs)
    accepted = []  # (pair indices, plausible, impossible, event frames, event balls) per round
    for _ in range(max_rounds):
        seeds = _video_seeds(generator, len(pending))
        plausible, impossible, event_frames, balls, usable = _make_twins(
            seeds, pair_kinds[pending], config, event_range)
        accepted.append((pending[usable], plausible[usable], impossible[usable], event_frames[usable], balls[usable]))
        pending = pending[~usable]
        if len(pending) == 0:
            break
    else:
        raise DataError(f"after {max_rounds} rounds of fresh seeds, no set-up showed "
                        f"{sorted(set(pair_kinds[pending]))} in frames {event_range}: widen event_range, or "
                        f"check that the config lets that event happen (e.g. balls reach the floor)")
    order = np.argsort(np.concatenate([part[0] for part in accepted]))  # back to pair order
    return PhysicsPairs(
        plausible=PhysicsVideos.concatenate([part[1] for part in accepted])[order],
        impossible=PhysicsVideos.concatenate([part[2] for part in accepted])[order],
        kinds=pair_kinds,
        event_frames=np.concatenate([part[3] for part in accepted])[order],
        event_balls=np.concatenate([part[4] for part in accepted])[order],
        pair_ids=np.arange(num_pairs),
    )
