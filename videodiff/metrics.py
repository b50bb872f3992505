"""Does a generated continuation obey the physics? Balls tracked by colour, with no pretrained network.

Every ball of a physics video (videodiff.data.physics) has its own saturated colour on a black
background, so it can be found without a detector: a pixel belongs to the ball whose palette hue is
nearest to its own hue, provided it is bright and saturated enough (the grey occluder and the black
background are neither). From those pixels, weighted by their brightness, come three numbers per ball:

    area         sum of the brightness of its pixels, ≈ the coverage of an anti-aliased disc, π r²
    position     the brightness-weighted centroid (x, y), in the pixel convention of the data
    compactness  the weighted mean squared distance to the centroid divided by a disc's, area / (2π):
                 1 for a disc, larger for a smear, a streak or a ball split in two

Bright saturated pixels of a colour no ball of the video has are "stray": a rollout that spawns a
ball, or paints noise, shows up there.

``physics_metrics`` runs the same tracker on the true continuation and on the generated one and
compares the two, so what the occluder hides (or another ball covers) is expected to be hidden in both:
a ball is *in view* in a true frame when at least half its disc shows. Hue survives a decoder's blur
(mixing a colour with black dims it but keeps its hue), which is why hue, not exact RGB, is matched.

Judged against the truth, a frame is only "well formed" if the balls are where the truth has them
hidden or in view; a continuation that is right in every frame but a little off the true path
(physics run exactly from a velocity 0.2 px/frame off) fails about one frame in ten that way, at the
occluder and where balls overlap. ``intact_frames`` judges a frame on its own instead: every ball of the
scene drawn whole where it is drawn, or missing only where the occluder or a larger ball can hide it
(see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from videodiff.data.physics import PALETTE, PhysicsConfig, PhysicsVideos, render_videos

# A pixel belongs to a ball only if it is this bright (its largest channel, in [0, 1]) and this
# saturated ((max - min) / max); both are low enough to keep most of a disc's one-pixel edge ramp.
VALUE_THRESHOLD = 0.25
SATURATION_THRESHOLD = 0.5
MIN_AREA = 1.0  # a ball counts as found if its pixels add up to at least one fully lit pixel
# Stray pixels count only if this bright: a spawned ball has a core of fully lit pixels, whereas a
# little noise, or the blend of two overlapping balls' edges, is dim.
STRAY_VALUE_THRESHOLD = 0.5


def hue_value_saturation(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HSV of RGB pixels (..., 3) in [0, 1]: hue in degrees [0, 360), value = max channel and
    saturation = (max - min) / max (0 for black). Returns three arrays (...)."""
    red, green, blue = frames[..., 0], frames[..., 1], frames[..., 2]
    value = np.maximum(np.maximum(red, green), blue)
    chroma = value - np.minimum(np.minimum(red, green), blue)
    safe_chroma = np.where(chroma > 0, chroma, 1)
    # The hue hexagon: which channel is largest picks the sector, the other two place it within.
    hue = np.where(value == red, ((green - blue) / safe_chroma) % 6,
                   np.where(value == green, (blue - red) / safe_chroma + 2, (red - green) / safe_chroma + 4))
    saturation = chroma / np.where(value > 0, value, 1)
    return 60 * hue, value, saturation


# The palette's hues are the six multiples of 60°, so the palette colour nearest in hue to a pixel is
# found by rounding its hue to a multiple of 60° and looking the multiple up in this table.
PALETTE_HUES = hue_value_saturation(PALETTE.astype(np.float64) / 255)[0]  # (6,) 0, 120, 240, 60, 180, 300
assert sorted(PALETTE_HUES.tolist()) == [0, 60, 120, 180, 240, 300], "the palette must hold the six hues 60° apart"
PALETTE_OF_HUE_SECTOR = np.argsort(PALETTE_HUES)  # sector s (hue ≈ 60 s) -> palette index


def colour_labels(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Palette index of every pixel (..., H, W), -1 for pixels too dark or grey to be a ball, and the
    pixel brightness (..., H, W) used as its weight. frames (..., H, W, 3) float in [0, 1]."""
    hue, value, saturation = hue_value_saturation(frames)
    sector = np.rint(hue / 60).astype(np.int64) % 6  # (..., H, W) the nearest multiple of 60°
    coloured = (value > VALUE_THRESHOLD) & (saturation > SATURATION_THRESHOLD)
    return np.where(coloured, PALETTE_OF_HUE_SECTOR[sector], -1), value


def as_unit_frames(frames) -> np.ndarray:
    """Frames (N, F, H, W, 3) as float32 in [0, 1]: uint8 is divided by 255, floats must already be in
    [0, 1] (model outputs in [-1, 1] map there by (x + 1) / 2). Torch tensors are accepted, on any device
    and in any dtype (bf16 included)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = (frames if frames.dtype == torch.uint8 else frames.float()).numpy()
    frames = np.asarray(frames)
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (N, F, H, W, 3) with RGB last, got shape {frames.shape}; "
                         f"a model's (N, F, 3, H, W) becomes that with .permute(0, 1, 3, 4, 2)")
    if frames.dtype == np.uint8:
        return frames.astype(np.float32) / 255
    if frames.size and (frames.min() < -0.01 or frames.max() > 1.01):
        raise ValueError(f"float frames must lie in [0, 1], got values in [{frames.min():.3f}, {frames.max():.3f}]; "
                         f"map model outputs in [-1, 1] with (x + 1) / 2")
    return np.clip(frames, 0, 1).astype(np.float32)


@dataclass
class BallTracks:
    """What the tracker saw of every ball slot.

    positions    (N, F, K, 2) float64, (x, y) px, NaN where not found
    found        (N, F, K) bool: the ball's colour covers at least MIN_AREA
    areas        (N, F, K) float64: summed brightness of the ball's pixels (≈ π r² for a whole disc)
    compactness  (N, F, K) float64: 1 for a disc, larger for a smear or split blob; NaN where not found
    stray_areas  (N, F) float64: summed brightness of bright coloured pixels of a colour no slot has
    """

    positions: np.ndarray
    found: np.ndarray
    areas: np.ndarray
    compactness: np.ndarray
    stray_areas: np.ndarray


def track_balls(frames, colours: np.ndarray) -> BallTracks:
    """Find every ball by its colour in every frame.

    frames (N, F, H, W, 3) uint8, or float in [0, 1]; colours (N, K) or (N, F, K) palette indices
    (PhysicsVideos.colours), one per ball slot, empty slots included. Returns BallTracks.

    Each ball's pixels are all the pixels of its colour, wherever they are: a ball drawn twice gets
    one centroid between the two and a large compactness. Where two balls overlap, the blend of their
    edges can take a third palette hue; the truth has the same blends, which is why physics_metrics
    compares generated tracks with the truth's tracks rather than with fixed expectations.
    """
    frames = as_unit_frames(frames)
    num_videos, num_frames, height, width, _ = frames.shape
    colours = np.asarray(colours)
    if colours.ndim == 2:
        colours = np.repeat(colours[:, None], num_frames, axis=1)  # (N, F, K)
    if colours.shape[:2] != (num_videos, num_frames):
        raise ValueError(f"colours must be (N, K) or (N, F, K) for {num_videos} videos of {num_frames} frames, "
                         f"got shape {colours.shape}")
    labels, brightness = colour_labels(frames)  # (N, F, H, W) each
    x = np.arange(width) + 0.5  # (W,) pixel centres, the convention of the data
    y = np.arange(height)[:, None] + 0.5  # (H, 1)

    num_balls = colours.shape[2]
    positions = np.full((num_videos, num_frames, num_balls, 2), np.nan)
    areas = np.zeros((num_videos, num_frames, num_balls))
    compactness = np.full((num_videos, num_frames, num_balls), np.nan)
    expected = np.zeros(labels.shape, dtype=bool)  # (N, F, H, W) pixels of some slot's colour
    for ball in range(num_balls):
        mine = labels == colours[:, :, ball, None, None]  # (N, F, H, W)
        expected |= mine
        weight = np.where(mine, brightness, 0).astype(np.float64)  # (N, F, H, W)
        area = weight.sum(axis=(2, 3))  # (N, F)
        safe_area = np.maximum(area, 1e-12)
        centre_x = (weight * x).sum(axis=(2, 3)) / safe_area  # (N, F)
        centre_y = (weight * y).sum(axis=(2, 3)) / safe_area
        # Weighted mean squared distance to the centroid; a uniform disc of area A has A / (2π).
        squared_distance = (x - centre_x[..., None, None]) ** 2 + (y - centre_y[..., None, None]) ** 2  # (N, F, H, W)
        spread = (weight * squared_distance).sum(axis=(2, 3)) / safe_area  # (N, F)
        seen = area >= MIN_AREA
        areas[:, :, ball] = area
        positions[:, :, ball] = np.where(seen[..., None], np.stack([centre_x, centre_y], axis=-1), np.nan)
        compactness[:, :, ball] = np.where(seen, spread / (safe_area / (2 * math.pi)), np.nan)
    stray = (labels >= 0) & ~expected & (brightness > STRAY_VALUE_THRESHOLD)  # (N, F, H, W)
    stray_areas = np.where(stray, brightness, 0).sum(axis=(2, 3)).astype(np.float64)
    return BallTracks(positions, areas >= MIN_AREA, areas, compactness, stray_areas)


def well_formed(
    tracks: BallTracks,
    expected_areas: np.ndarray,
    expected_compactness: np.ndarray | float = 1.0,
    area_factor: float = 2.0,
    compactness_factor: float = 1.5,
) -> np.ndarray:
    """(N, F, K) bool: the ball was found, its area lies within a factor ``area_factor`` of the
    expected one, and it is no more spread than ``compactness_factor`` times the expected compactness.

    expected_areas broadcasts to (N, F, K): π r² for whole discs (radii (N, K) -> π radii[:, None]²),
    or the areas the tracker measured in the true frames (what a partly hidden ball really shows).
    """
    with np.errstate(invalid="ignore"):
        ratio = tracks.areas / np.maximum(expected_areas, 1e-12)
        return (tracks.found & (ratio >= 1 / area_factor) & (ratio <= area_factor)
                & (tracks.compactness <= compactness_factor * np.asarray(expected_compactness)))


# A ball missing from a generated frame may be behind the occluder only if the bar is wide enough to hide
# it whole and the ball was last seen with its centre within its radius plus this many pixels of the
# bar (or of a larger ball that may cover it): about the farthest a ball moves in one frame (3.5 px/frame
# after falling the whole height).
HIDE_REACH = 4.0
# Balls pass through each other, so one may hide behind another, but only while the two overlap: for
# at most this many frames after it was last seen (a bar can hide a ball for as long as it stays there).
COVER_FRAMES = 6
# Rounds of moving each drawn disc so that its visible part's centroid matches the tracked one (a ball
# half behind the bar or another ball shows a centroid off its centre).
DISC_FIT_ROUNDS = 3


def whole_disc_tracks(tracks: BallTracks, videos: PhysicsVideos, rounds: int = DISC_FIT_ROUNDS) -> BallTracks:
    """What the tracker would see if every ball found in ``tracks`` were a whole disc of its radius,
    drawn where the tracker found it, with the video's occluder and the other balls in front as usual.

    tracks: BallTracks of frames (N, F, ...) of the scenes of ``videos`` (their radii, colours, present
    and occluders are the set-up, the same in the context and the continuation). The disc's centre is
    moved ``rounds`` times by the gap between the tracked centroid and the centroid its drawing shows,
    so that a ball partly hidden is placed behind the bar rather than beside it. Returns BallTracks of
    the redrawn frames (areas and compactness are what ``well_formed`` compares with).
    """
    shown = tracks.found & videos.present  # (N, F, K)
    target = np.nan_to_num(tracks.positions)  # (N, F, K, 2)
    centres = target.copy()
    image_size = videos.frames.shape[2]

    def redraw(centres: np.ndarray) -> BallTracks:
        frames = render_videos(centres, videos.radii, videos.colours, shown, videos.occluders, image_size)
        return track_balls(frames, videos.colours)

    redrawn = redraw(centres)
    for _ in range(rounds):
        seen = (redrawn.found & shown)[..., None]
        centres = np.where(seen, centres + target - np.nan_to_num(redrawn.positions), centres)
        redrawn = redraw(centres)
    return redrawn


def intact_frames(generated, videos: PhysicsVideos, area_factor: float = 2.0, compactness_factor: float = 1.5,
                  stray_tolerance: float = 3.0, tracks: BallTracks | None = None) -> np.ndarray:
    """(N, F) bool: the frame holds the scene's balls, each drawn whole wherever it is drawn, and
    nothing else. Judged on the frame itself, not against the true continuation, so a ball a little
    off its true path still counts; ``physics_metrics``' position error is what measures the path.

    generated (N, F, H, W, 3) frames of the scenes of ``videos`` (only their set-up is used: radii,
    colours, present, occluders). Every ball the scene holds in that frame must be either
      - found, with area within ``area_factor`` and compactness within ``compactness_factor`` of what a
        whole disc of its radius drawn at the tracked place shows (`whole_disc_tracks`: the occluder
        and the balls drawn over it taken into account); a ball that, drawn there, would show less than
        half its disc is only held to not showing more than ``area_factor`` times that, since a sliver
        beside the bar tells little about its shape; or
      - not found, where something can hide it: the occluder, if it is at least 2r - 1 px wide and the
        ball was last seen (in any earlier frame, context included) with its centre within
        r + HIDE_REACH px of the bar; or another ball at least about as large (radius r' >= r - 0.5),
        found in this frame within r' + HIDE_REACH px of where the hidden one was last seen, at most
        COVER_FRAMES frames ago;
    and bright pixels of colours no ball of the scene has (an empty slot's colour included: a ball of it
    is one too many) may add up to at most ``stray_tolerance`` px more than the redrawn frame shows
    (where two balls overlap, their blend can take a third hue).
    tracks: ``track_balls(generated, videos.colours)``, when the caller has it already (physics_metrics).
    """
    return frame_faults(generated, videos, area_factor, compactness_factor, stray_tolerance, tracks)["intact"]


# What can fail a frame, in the order ``frame_faults`` returns them. A ball "missing" is one not found
# where nothing can hide it — vanished, or drawn in another colour (then that colour is usually stray too).
FAULTS = ("missing", "too small", "too large", "smeared", "stray colour")


def frame_faults(generated, videos: PhysicsVideos, area_factor: float = 2.0, compactness_factor: float = 1.5,
                 stray_tolerance: float = 3.0, tracks: BallTracks | None = None) -> dict:
    """Why ``intact_frames`` fails a frame: {"intact": (N, F) bool, and for each name of FAULTS an (N, F)
    bool, True where some ball of the scene (or, for "stray colour", the frame) fails in that way}. A frame
    is intact exactly when it has none of the faults; a failed frame may have several.

        missing      a ball of the scene is not found, and neither the occluder nor another ball can hide it
        too small    a ball is found with less than 1 / area_factor of the area a whole disc drawn there
                     shows (a ball mostly hidden there is never too small)
        too large    more than area_factor times that area
        smeared      more than compactness_factor times the compactness that disc shows
        stray colour bright pixels of colours no ball of the scene has, beyond stray_tolerance px

    The arguments are ``intact_frames``'.
    """
    generated = as_unit_frames(generated)
    if generated.shape != videos.frames.shape:
        raise ValueError(f"generated frames {generated.shape} must match the videos' {videos.frames.shape} "
                         f"(N, F, H, W, 3)")
    if tracks is None:
        tracks = track_balls(generated, videos.colours)
    redrawn = whole_disc_tracks(tracks, videos)
    radii = videos.radii.astype(np.float64)  # (N, K)
    disc_areas = math.pi * radii[:, None, :] ** 2  # (N, 1, K)
    mostly_hidden = redrawn.areas < 0.5 * disc_areas  # (N, F, K) at the place it was drawn
    whole = well_formed(tracks, redrawn.areas, redrawn.compactness, area_factor, compactness_factor)
    sliver = tracks.found & mostly_hidden & (tracks.areas <= area_factor * np.maximum(redrawn.areas, MIN_AREA))

    # Missing balls: could the bar, or a ball drawn over it, hide them where they were last seen?
    first, end = videos.occluders[:, :1].astype(np.float64), videos.occluders[:, 1:].astype(np.float64)  # (N, 1)
    bar_hides = (end - first) >= 2 * radii - 1  # (N, K)
    big_enough = radii[:, None, :] >= radii[:, :, None] - 0.5  # (N, K hidden, K over it)
    big_enough &= ~np.eye(radii.shape[1], dtype=bool)
    hideable = np.zeros(tracks.found.shape, dtype=bool)  # (N, F, K)
    last_seen = np.full(radii.shape + (2,), np.nan)  # (N, K, 2) centre where each ball was last found
    last_frame = np.full(radii.shape, -COVER_FRAMES - 1)  # (N, K) and in which frame
    for frame in range(tracks.found.shape[1]):
        last_x = last_seen[..., 0]
        near_bar = (last_x >= first - radii - HIDE_REACH) & (last_x <= end + radii + HIDE_REACH)
        now = tracks.positions[:, frame]  # (N, K, 2), NaN where not found
        gap = np.linalg.norm(last_seen[:, :, None] - now[:, None, :], axis=-1)  # (N, K hidden, K over it)
        covered = (big_enough & (gap <= radii[:, None, :] + HIDE_REACH)).any(axis=2)  # NaN compares False
        covered &= frame - last_frame <= COVER_FRAMES
        never_seen = np.isnan(last_x)  # hidden since the first frame
        hideable[:, frame] = (bar_hides & (near_bar | never_seen)) | covered
        found = tracks.found[:, frame]  # (N, K)
        last_seen = np.where(found[..., None], now, last_seen)
        last_frame = np.where(found, frame, last_frame)

    ball_right = np.where(tracks.found, whole | sliver, hideable) | ~videos.present  # (N, F, K)
    # The colour of a slot the scene leaves empty is stray too: a ball of it is one ball too many (where
    # two balls overlap, their blend can take it, in the redrawn frame as well).
    def stray(seen: BallTracks) -> np.ndarray:  # (N, F)
        return seen.stray_areas + np.where(videos.present, 0, seen.areas).sum(axis=2)

    stray_colour = stray(tracks) > stray(redrawn) + stray_tolerance  # (N, F)
    # Each ball that fails, by how: the tests of `whole` and `sliver` above, one at a time.
    wrong = videos.present & tracks.found & ~(whole | sliver)  # (N, F, K)
    with np.errstate(invalid="ignore"):
        ratio = tracks.areas / np.maximum(redrawn.areas, 1e-12)
        too_large = np.where(mostly_hidden, tracks.areas > area_factor * np.maximum(redrawn.areas, MIN_AREA),
                             ratio > area_factor)
        smeared = ~mostly_hidden & ~(tracks.compactness <= compactness_factor * redrawn.compactness)
    faults = {"missing": videos.present & ~tracks.found & ~hideable,
              "too small": wrong & ~mostly_hidden & (ratio < 1 / area_factor),
              "too large": wrong & too_large, "smeared": wrong & smeared}
    faults = {name: fault.any(axis=2) for name, fault in faults.items()}  # (N, F) each
    faults["stray colour"] = stray_colour
    return {"intact": ball_right.all(axis=2) & ~stray_colour, **faults}


# Where two balls meet, a model of 8 x 8-pixel tokens has to keep two discs and two colours apart inside
# one token; ``intact_by_crowding`` groups the intact share by how close the scene's balls are. The edges
# (px) of the groups of the closest pair's gap: overlapping, then up to 4 px, up to 10 px, farther.
GAP_EDGES = (0.0, 4.0, 10.0)


def closest_gaps(videos: PhysicsVideos) -> np.ndarray:
    """(N, F) float: the distance between the edges of the two closest balls present in each frame, in px
    (centre distance minus both radii: negative where they overlap); +inf where fewer than two are present.
    From the physical state, not the pixels, so a ball hidden behind another still counts."""
    positions = videos.positions.astype(np.float64)  # (N, F, K, 2)
    radii = videos.radii.astype(np.float64)  # (N, K)
    centres = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1)  # (N, F, K, K)
    gaps = centres - radii[:, None, :, None] - radii[:, None, None, :]
    pair = videos.present[:, :, :, None] & videos.present[:, :, None, :]
    pair &= ~np.eye(radii.shape[1], dtype=bool)
    return np.where(pair, gaps, np.inf).min(axis=(2, 3))


def intact_by_crowding(intact: np.ndarray, videos: PhysicsVideos, num_context: int) -> dict:
    """The intact share of the generated frames grouped by what the true scene holds in them.

    intact (N, F) bool from ``intact_frames`` (context frames included, not scored); videos: the truth
    the frames continue. Returns {"by_balls": {"1 ball": group, "2 balls": group, ...}, "by_gap": {
    "overlapping": group, "0-4 px": group, "4-10 px": group, ">= 10 px": group, "one ball": group}}, each
    group {"frames": how many generated frames, "intact": their intact share, None if there are none};
    the gap is the closest pair's (``closest_gaps``), in the groups of ``GAP_EDGES``. A frame with no ball
    present (an impossible twin's, after a vanishing) is in no group."""
    intact = np.asarray(intact, dtype=bool)
    if intact.shape != videos.present.shape[:2]:
        raise ValueError(f"intact {intact.shape} must be (N, F) = {videos.present.shape[:2]}, one flag per frame "
                         f"of the videos, context frames included")
    if not 0 <= num_context < intact.shape[1]:
        raise ValueError(f"num_context must lie in [0, {intact.shape[1] - 1}], got {num_context}")
    scored = slice(num_context, None)
    intact = intact[:, scored]
    balls = videos.present[:, scored].sum(axis=2)  # (N, G)
    gaps = closest_gaps(videos)[:, scored]

    def group(mask: np.ndarray) -> dict:
        count = int(mask.sum())
        return {"frames": count, "intact": float(intact[mask].mean()) if count else None}

    by_balls = {name: group(mask) for name, mask in _by_ball_count(balls, videos.radii.shape[1]).items()}
    edges = (-np.inf, *GAP_EDGES, np.inf)
    names = ["overlapping"] + [f"{low:g}-{high:g} px" for low, high in zip(GAP_EDGES, GAP_EDGES[1:])]
    names.append(f">= {GAP_EDGES[-1]:g} px")
    by_gap = {name: group((balls >= 2) & (gaps >= low) & (gaps < high))
              for name, low, high in zip(names, edges, edges[1:])}
    by_gap["one ball"] = group(balls == 1)
    return {"by_balls": by_balls, "by_gap": by_gap}


def _by_ball_count(balls: np.ndarray, max_balls: int) -> dict:
    """{"1 ball": mask, "2 balls": mask, ...}: the frames whose true scene holds that many balls; balls (N, G)."""
    return {f"{n} ball{'s' if n != 1 else ''}": balls == n for n in range(1, max_balls + 1)}


def faults_by_balls(faults: dict, videos: PhysicsVideos, num_context: int) -> dict:
    """How the generated frames fail, over all of them and by how many balls the true frame holds.

    faults: ``frame_faults``' dict of (N, F) flags (context frames included, not scored); videos: the truth
    the frames continue. Returns {"all": group, "1 ball": group, "2 balls": group, ...}, each group
    {"frames": how many generated frames, "intact": their intact share, and for each name of FAULTS the
    share of them with that fault (None where the group is empty)}. A failed frame may have several faults,
    so a group's fault shares add up to at least 1 - intact."""
    shape = videos.present.shape[:2]
    if any(np.shape(faults.get(name)) != shape for name in ("intact", *FAULTS)):
        raise ValueError(f"faults must hold (N, F) = {shape} flags for 'intact' and each of {', '.join(FAULTS)} "
                         f"(frame_faults' dict), context frames included")
    if not 0 <= num_context < shape[1]:
        raise ValueError(f"num_context must lie in [0, {shape[1] - 1}], got {num_context}")
    scored = slice(num_context, None)
    flags = {name: np.asarray(faults[name], dtype=bool)[:, scored] for name in ("intact", *FAULTS)}
    balls = videos.present[:, scored].sum(axis=2)  # (N, G)

    def group(mask: np.ndarray) -> dict:
        count = int(mask.sum())
        return {"frames": count, **{name: float(flag[mask].mean()) if count else None for name, flag in flags.items()}}

    return {"all": group(np.ones_like(balls, dtype=bool)),
            **{name: group(mask) for name, mask in _by_ball_count(balls, videos.radii.shape[1]).items()}}


def format_faults(breakdown: dict) -> str:
    """``faults_by_balls``' groups, one line each: "name (frames): intact share; fault share, ..."."""
    def line(name: str, group: dict) -> str:
        if not group["frames"]:
            return f"{name} (0 frames): -"
        return (f"{name} ({group['frames']} frames): intact {group['intact']:.2f}; "
                + ", ".join(f"{fault} {group[fault]:.2f}" for fault in FAULTS))

    return "why frames fail (share of the frames with each fault; a frame may have several):\n" + "\n".join(
        "  " + line(name, group) for name, group in breakdown.items())


def format_crowding(breakdown: dict) -> str:
    """``intact_by_crowding``'s groups on two lines: "name share (frames)", "-" for an empty group."""
    def line(title: str, groups: dict) -> str:
        cells = [f"{name} {'-' if g['intact'] is None else format(g['intact'], '.2f')} ({g['frames']})"
                 for name, g in groups.items()]
        return f"{title}: " + ", ".join(cells)

    return "\n".join((line("intact by balls in the frame", breakdown["by_balls"]),
                      line("intact by the closest two balls' gap", breakdown["by_gap"])))


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _share_or_none(count, total) -> float | None:
    """count / total, or None where there was nothing to count (total 0): a share of nothing is not 0."""
    return float(count / total) if total else None


def drawn_as_asked(frames, colours, present, radius_range: tuple[float, float] | None = None,
                   area_factor: float = 2.0, compactness_factor: float = 1.5, stray_tolerance: float = 3.0) -> dict:
    """Judge videos that continue nothing — made from no real frame, for a scene named by its balls' colours
    (``VideoDiffusionModel.generate``) — where there is no truth to compare with and no set-up but the colours.

    frames (N, F, H, W, 3) uint8 (or float in [0, 1]); colours (N, K) palette indices and present (N, K) bool:
    the balls asked for in each video. A frame passes when every ball asked for is found, its area within
    ``area_factor`` of a whole disc of some radius in ``radius_range`` (π r_low² / factor .. π r_high² · factor;
    default: the physics videos' own, PhysicsConfig().radius_range)
    and its compactness at most ``compactness_factor`` (a disc's is 1), and bright pixels of colours not asked
    for add up to at most ``stray_tolerance`` px. Stricter than ``intact_frames`` in one way: a ball behind the
    occluder or another ball counts as missing here (nothing says where it was), so the physics videos
    themselves do not score 1 (compare the same judge on real videos of the same scenes). Returns
    {"share": the share of frames that pass, "share_per_frame": (F,) list, "frames": (N, F) bool, and the
    share of frames with a ball "missing", "misshapen" (found, wrong area or spread) or "stray colour";
    "speed": the balls' mean displacement between consecutive frames where found in both (px/frame; None if
    never)}.
    """
    colours, present = np.asarray(colours), np.asarray(present, dtype=bool)
    if colours.shape != present.shape or colours.ndim != 2 or not present.any(axis=1).all():
        raise ValueError(f"colours and present must be (N, K) arrays of the same shape with at least one ball per "
                         f"video, got {colours.shape} and {present.shape}")
    # An absent slot takes its video's first ball's colour, so that the tracker counts nothing of it as stray.
    first = colours[np.arange(len(colours)), present.argmax(axis=1)]  # (N,)
    tracks = track_balls(frames, np.where(present, colours, first[:, None]))
    low, high = PhysicsConfig().radius_range if radius_range is None else radius_range
    with np.errstate(invalid="ignore"):
        sized = ((tracks.areas >= math.pi * low ** 2 / area_factor)
                 & (tracks.areas <= math.pi * high ** 2 * area_factor)
                 & (tracks.compactness <= compactness_factor))  # (N, F, K)
    asked = present[:, None, :]  # (N, 1, K)
    missing = (asked & ~tracks.found).any(axis=2)  # (N, F)
    misshapen = (asked & tracks.found & ~sized).any(axis=2)
    stray = tracks.stray_areas > stray_tolerance
    passed = ~missing & ~misshapen & ~stray
    both = tracks.found[:, :-1] & tracks.found[:, 1:] & asked  # (N, F - 1, K)
    steps = np.linalg.norm(np.diff(tracks.positions, axis=1), axis=-1)[both]
    return {"share": float(passed.mean()), "share_per_frame": passed.mean(axis=0).tolist(), "frames": passed,
            "missing": float(missing.mean()), "misshapen": float(misshapen.mean()), "stray colour": float(stray.mean()),
            "speed": float(steps.mean()) if steps.size else None}


def physics_metrics(
    generated,
    truth: PhysicsVideos,
    num_context: int,
    first_frames: int = 8,
    min_motion_ratio: float = 0.25,
    stray_tolerance: float = 3.0,
) -> dict:
    """Score generated videos against the true continuation, frame by frame after the context.

    generated (N, F, H, W, 3) uint8 (or float in [0, 1]): the whole videos, context frames included;
    truth: the PhysicsVideos they continue, with the same N and F; num_context: how many leading frames
    were given to the model (they are not scored). Returns a dict of plain floats, lists and bools:

    position_error_per_frame   mean distance (px) between a ball in the generated frame and the same
                               ball in the true frame, one entry per generated frame, over the balls in
                               view in the truth AND found in the generated frame (None if there are
                               none): a missing ball does not count as an error here, but below
    found_per_frame            the share of the balls in view that were found, per generated frame
                               (None for a frame whose truth shows no ball: nothing to find)
    position_error_first       the mean error over the first ``first_frames`` generated frames
    position_error             the mean error over all generated frames
    found_share                the share of (frame, ball in view) that were found (None if no
                               generated frame's truth shows a ball)
    well_formed_share          the share of generated frames that hold the right balls: every ball in
                               view is found and well formed (area and compactness close to the
                               truth's), no ball wholly hidden in the truth is found, and stray
                               colours add up to at most ``stray_tolerance`` px more than the truth's
    stray_frame_share          the share of generated frames with too many stray coloured pixels
    intact_share               the share of generated frames that hold the scene's balls, each whole
                               wherever it is drawn, judged on the frame alone (``intact_frames``)
    intact_per_frame           the same, per generated frame
    intact_by_crowding         the same, by how many balls the true frame holds and how close the
                               closest two are (``intact_by_crowding``)
    faults                     why the other frames fail — a ball missing, too small, too large or
                               smeared, or stray colour — over all generated frames and by how many
                               balls the true frame holds (``faults_by_balls``)
    motion_ratio, moves        mean displacement of the tracked balls between consecutive generated
                               frames divided by the truth's, over balls in view and found in both
                               frames; moves = ratio >= ``min_motion_ratio`` (a frozen rollout has
                               ratio ≈ 0); both None if the true balls do not move
    colour_kept                of the balls in view with something coloured drawn within r + 1 px of
                               their true place, the share where that colour is their own
    """
    generated = as_unit_frames(generated)
    if generated.shape != truth.frames.shape:
        raise ValueError(f"generated frames {generated.shape} must match the truth's {truth.frames.shape} "
                         f"(N, F, H, W, 3), context frames included")
    num_frames = generated.shape[1]
    if not 1 <= num_context < num_frames:
        raise ValueError(f"num_context must lie in [1, {num_frames - 1}] so that some frames are generated, "
                         f"got {num_context}")
    true_tracks = track_balls(truth.frames, truth.colours)
    generated_tracks = track_balls(generated, truth.colours)
    scored = slice(num_context, num_frames)  # the generated frames

    # Which balls the truth shows: in view (at least half the disc), or wholly hidden (or absent).
    disc_areas = math.pi * truth.radii.astype(np.float64)[:, None, :] ** 2  # (N, 1, K)
    in_view = true_tracks.areas >= 0.5 * disc_areas  # (N, F, K)
    hidden = ~true_tracks.found

    # Position error, over balls in view and found.
    error = np.linalg.norm(generated_tracks.positions - true_tracks.positions, axis=-1)  # (N, F, K), NaN if not found
    scored_balls = (in_view & generated_tracks.found)[:, scored]  # (N, G, K)
    errors = error[:, scored]
    per_frame = [_mean_or_none(errors[:, g][scored_balls[:, g]]) for g in range(errors.shape[1])]
    found_per_frame = [_share_or_none(scored_balls[:, g].sum(), in_view[:, scored][:, g].sum())
                       for g in range(errors.shape[1])]
    first = slice(0, first_frames)

    # Right balls, well formed, nothing extra.
    good_balls = well_formed(generated_tracks, true_tracks.areas, true_tracks.compactness)  # (N, F, K)
    too_much_stray = generated_tracks.stray_areas > true_tracks.stray_areas + stray_tolerance  # (N, F)
    right_frame = ((good_balls | ~in_view).all(axis=2) & (~generated_tracks.found | ~hidden).all(axis=2)
                   & ~too_much_stray)  # (N, F)

    faults = frame_faults(generated, truth, tracks=generated_tracks)  # (N, F) flags: intact, and each fault
    intact = faults["intact"]

    # Motion between consecutive generated frames.
    both = (in_view[:, :-1] & in_view[:, 1:] & generated_tracks.found[:, :-1] & generated_tracks.found[:, 1:])
    both[:, :num_context] = False  # only steps between two generated frames
    true_steps = np.linalg.norm(np.diff(true_tracks.positions, axis=1), axis=-1)[both]
    generated_steps = np.linalg.norm(np.diff(generated_tracks.positions, axis=1), axis=-1)[both]
    moving_truth = true_steps.sum() > 1e-6
    motion_ratio = float(generated_steps.sum() / true_steps.sum()) if moving_truth else None

    return {
        "position_error_per_frame": per_frame,
        "found_per_frame": found_per_frame,
        "position_error_first": _mean_or_none(errors[:, first][scored_balls[:, first]]),
        "position_error": _mean_or_none(errors[scored_balls]),
        "found_share": _share_or_none(scored_balls.sum(), in_view[:, scored].sum()),
        "well_formed_share": float(right_frame[:, scored].mean()),
        "stray_frame_share": float(too_much_stray[:, scored].mean()),
        "intact_share": float(intact[:, scored].mean()),
        "intact_per_frame": intact[:, scored].mean(axis=0).tolist(),
        "intact_by_crowding": intact_by_crowding(intact, truth, num_context),
        "faults": faults_by_balls(faults, truth, num_context),
        "motion_ratio": motion_ratio,
        "moves": None if motion_ratio is None else bool(motion_ratio >= min_motion_ratio),
        "colour_kept": _colour_kept(generated, truth, true_tracks.positions, in_view, scored),
    }


def _colour_kept(generated, truth, true_positions, in_view, scored) -> float | None:
    """Of the balls in view with coloured pixels within r + 1 px of their true place in the generated
    frame, the share whose dominant colour there is their own."""
    labels, brightness = colour_labels(generated[:, scored])  # (N, G, H, W)
    height, width = labels.shape[2:]
    x, y = np.arange(width) + 0.5, np.arange(height)[:, None] + 0.5
    kept, drawn = 0, 0
    for ball in range(truth.radii.shape[1]):
        centre = np.nan_to_num(true_positions[:, scored, ball])  # (N, G, 2)
        near = ((x - centre[..., 0, None, None]) ** 2 + (y - centre[..., 1, None, None]) ** 2
                <= (truth.radii[:, None, ball, None, None] + 1) ** 2)  # (N, G, H, W)
        weight_per_colour = np.stack([np.where(near & (labels == colour), brightness, 0).sum(axis=(2, 3))
                                      for colour in range(len(PALETTE))], axis=-1)  # (N, G, 6)
        counted = in_view[:, scored, ball] & (weight_per_colour.sum(axis=-1) >= MIN_AREA)  # (N, G)
        own = weight_per_colour.argmax(axis=-1) == truth.colours[:, scored, ball]
        kept += int((counted & own).sum())
        drawn += int(counted.sum())
    return kept / drawn if drawn else None
