"""Tests of videodiff.metrics: the colour tracker and the physics scores of a continuation.

Every "generated" video here is made from the true one in a known way (frozen, shifted, smeared,
erased, an extra ball, noise, blur), so the score each should get is known in advance.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from videodiff.data import PALETTE, PhysicsConfig, PhysicsVideos, make_impossible_pairs, make_videos, render_videos
from videodiff.data.physics import simulate_balls
from videodiff.metrics import (
    COVER_FRAMES, FAULTS, HIDE_REACH, closest_gaps, colour_labels, drawn_as_asked, faults_by_balls, format_crowding,
    format_faults, frame_faults, intact_by_crowding, intact_frames, physics_metrics, track_balls, well_formed,
)

SIZE, CONTEXT = 32, 8


@pytest.fixture(scope="module")
def truth() -> PhysicsVideos:
    """Videos with an occluder in about half of them."""
    return make_videos(24, seed=5, config=PhysicsConfig(occluder_probability=0.5))


@pytest.fixture(scope="module")
def open_truth() -> PhysicsVideos:
    """Videos with no occluder, so that every ball is always in view."""
    return make_videos(24, seed=6, config=PhysicsConfig(occluder_probability=0.0))


def rendered(videos: PhysicsVideos, positions=None, present=None, colours=None, radii=None) -> np.ndarray:
    """The frames of ``videos`` drawn again with some of its states replaced."""
    return render_videos(
        videos.positions if positions is None else positions, videos.radii if radii is None else radii,
        videos.colours if colours is None else colours, videos.present if present is None else present,
        videos.occluders, SIZE,
    )


def from_context_on(array: np.ndarray) -> np.ndarray:
    """A boolean (F,) mask broadcast against ``array`` (N, F, ...): True for the generated frames."""
    mask = np.zeros(array.shape[1], dtype=bool)
    mask[CONTEXT:] = True
    return mask.reshape((1, -1) + (1,) * (array.ndim - 2))


def summary(metrics: dict) -> dict:
    return {name: value for name, value in metrics.items() if not name.endswith("per_frame")}


# ---------------------------------------------------------------------------------------------
#                                          The tracker
# ---------------------------------------------------------------------------------------------


def test_each_palette_colour_is_recognised_dimmed_or_washed_out_and_grey_is_not():
    dim = PALETTE[:, None, None, :] * np.array([0.3, 0.6, 1.0])[None, :, None, None]  # (6, 3, 1, 3)
    labels, _ = colour_labels(dim.reshape(6, 3, 1, 3) / 255)
    np.testing.assert_array_equal(labels[..., 0], np.repeat(np.arange(6)[:, None], 3, axis=1))
    # A decoder's blur mixes a little of a neighbour's colour in: red with some green is still red.
    washed = np.array([[[[1.0, 0.35, 0.1]], [[0.2, 0.9, 0.85]]]])  # reddish, cyan-ish
    np.testing.assert_array_equal(colour_labels(washed)[0][..., 0], [[0, 4]])
    grey_and_black = np.array([[[[0.5, 0.5, 0.5]], [[0.0, 0.0, 0.0]], [[0.1, 0.0, 0.0]]]])
    np.testing.assert_array_equal(colour_labels(grey_and_black)[0][..., 0], [[-1, -1, -1]])


def test_tracker_finds_every_ball_at_its_stored_position(open_truth):
    tracks = track_balls(open_truth.frames, open_truth.colours)
    positions, radii, present = open_truth.positions, open_truth.radii[:, None, :], open_truth.present
    # Balls well inside the picture, in frames where no two balls touch (overlapping edges blend into
    # a third hue that the tracker may give to another ball).
    x, y = positions[..., 0], positions[..., 1]
    inside = (x - radii > 1) & (x + radii < SIZE - 1) & (y - radii > 1) & (y + radii < SIZE - 1)
    gap = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1)
    touching = (gap < radii[..., :, None] + radii[..., None, :] + 1) & present[:, :, :, None] & present[:, :, None, :]
    touching &= ~np.eye(3, dtype=bool)
    apart = ~touching.any(axis=(2, 3))[..., None]  # (N, F, 1)
    clear = present & inside & apart
    assert clear.sum() > 500

    error = np.linalg.norm(tracks.positions - positions, axis=-1)
    assert error[clear].max() < 0.3
    assert tracks.found[present & apart].all() and not tracks.found[~present].any()
    np.testing.assert_allclose(tracks.areas[clear], np.broadcast_to(math.pi * radii**2, clear.shape)[clear], rtol=0.1)
    assert 0.9 < tracks.compactness[clear].min() and tracks.compactness[clear].max() < 1.15  # a disc's is 1
    assert (tracks.stray_areas[apart[..., 0]] == 0).all()
    # Floats in [0, 1] are read like the uint8 frames they come from.
    again = track_balls(open_truth.frames[:4] / 255.0, open_truth.colours[:4, 0])
    np.testing.assert_allclose(again.positions, tracks.positions[:4], atol=1e-4)


def test_well_formed_needs_the_expected_area_and_a_compact_blob(open_truth):
    tracks = track_balls(open_truth.frames[:4], open_truth.colours[:4])
    disc_areas = math.pi * open_truth.radii[:4, None, :] ** 2
    # Whole discs are well formed, wherever another ball does not cover part of them.
    assert well_formed(tracks, disc_areas)[open_truth.present[:4]].mean() > 0.9
    whole = tracks.areas > 0.9 * disc_areas
    assert not well_formed(tracks, 3 * disc_areas)[whole].any()  # the blobs are a third of that area
    assert not well_formed(tracks, disc_areas / 3)[whole].any()
    assert not well_formed(tracks, disc_areas, expected_compactness=0.5)[whole].any()  # too spread for that


# ---------------------------------------------------------------------------------------------
#                                  A frame judged on its own
# ---------------------------------------------------------------------------------------------


def exact_physics_from(truth: PhysicsVideos, velocity_noise: float, seed: int = 0) -> np.ndarray:
    """The truth's frames up to the context's last, then the exact physics from that frame's state with
    every velocity moved by Gaussian noise of ``velocity_noise`` px/frame: right in every frame, off the path."""
    start = CONTEXT - 1
    velocities = truth.velocities[:, start] + np.random.default_rng(seed).normal(0, velocity_noise, (len(truth), 3, 2))
    path, _, _ = simulate_balls(truth.positions[:, start], velocities, truth.radii, SIZE - start, SIZE,
                                truth.config.gravity, truth.config.restitution)
    positions = truth.positions.astype(np.float64).copy()
    positions[:, start:] = path
    return rendered(truth, positions=positions)


def test_a_continuation_off_the_true_path_is_intact_though_not_where_the_truth_hides_its_balls(truth):
    tracks = track_balls(truth.frames, truth.colours)
    assert (truth.present & ~tracks.found).any(axis=2).mean() > 0.01  # balls do hide, behind the bar or a ball
    assert intact_frames(truth.frames, truth).mean() > 0.99

    metrics = physics_metrics(exact_physics_from(truth, 0.2), truth, CONTEXT)
    assert metrics["position_error"] > 1.5  # it drifts from the true path ...
    assert metrics["intact_share"] > 0.98  # ... but every frame still holds its whole balls ...
    assert metrics["well_formed_share"] < 0.93  # ... which the truth-matched share misses at the bar and overlaps


def test_a_ball_vanishing_in_the_open_or_drawn_over_the_bar_is_not_intact(truth):
    # Drawn with no bar, the balls that should pass behind it are in front of it: wrong wherever a ball
    # should be mostly hidden, right elsewhere.
    in_front = render_videos(truth.positions, truth.radii, truth.colours, truth.present,
                             np.zeros_like(truth.occluders), SIZE)
    tracks = track_balls(truth.frames, truth.colours)
    disc_areas = math.pi * truth.radii[:, None, :] ** 2
    behind = (truth.present & (tracks.areas < 0.5 * disc_areas)).any(axis=2) & (truth.occluders[:, None, 1] > 0)
    assert behind.sum() > 50
    intact = intact_frames(in_front, truth)
    assert intact[behind].mean() < 0.15 and intact[~behind].mean() > 0.85

    # A ball that vanishes far from the bar is missing, not hidden (once no other ball can cover it).
    bar_centre, bar_half = truth.occluders.mean(axis=1), np.diff(truth.occluders, axis=1)[:, 0] / 2  # (N,)
    last_x = truth.positions[:, CONTEXT - 1, 0, 0]
    far = (truth.occluders[:, 1] > 0) & (np.abs(last_x - bar_centre) > bar_half + truth.radii[:, 0] + HIDE_REACH + 1)
    assert far.sum() >= 3
    present = truth.present.copy()
    present[:, :, 0] &= ~from_context_on(present[:, :, 0])  # ball 0 (always present) erased
    intact = intact_frames(rendered(truth, present=present), truth)
    assert intact[:, :CONTEXT].all() and not intact[far, CONTEXT + COVER_FRAMES + 1:].any()


def test_a_ball_hidden_behind_a_larger_one_for_a_few_frames_is_not_missing(open_truth):
    # Ball 0 made small and ball 1 large; ball 0 peeks out beside ball 1 in the last context frame, then
    # passes under it (balls are drawn in slot order, so ball 1 covers it) for three frames.
    both = open_truth.present[:, 0, 0] & open_truth.present[:, 0, 1]
    scene = open_truth[np.nonzero(both)[0]]
    radii = scene.radii.copy()
    radii[:, 0], radii[:, 1] = 2.5, 4.5
    positions = scene.positions.astype(np.float64).copy()
    under = slice(CONTEXT, CONTEXT + 3)
    positions[:, CONTEXT - 1, 0] = positions[:, CONTEXT - 1, 1] + [3.5, 0]
    positions[:, under, 0] = positions[:, under, 1]
    scene = dataclasses.replace(scene, radii=radii, positions=positions.astype(np.float32))
    scene = dataclasses.replace(scene, frames=rendered(scene))
    tracks = track_balls(scene.frames, scene.colours)
    slow = np.linalg.norm(positions[:, under, 1] - positions[:, CONTEXT - 1, None, 1], axis=-1).max(axis=1) < 3
    assert tracks.found[:, CONTEXT - 1, 0].all() and not tracks.found[:, under, 0].any() and slow.sum() >= 3
    assert intact_frames(scene.frames, scene)[slow, under].all()


def test_a_shrunken_ball_is_not_intact(open_truth):
    radii = open_truth.radii.copy()
    radii[:, 0] *= 0.6  # a third of the area
    frames = rendered(open_truth, radii=radii)
    frames[:, :CONTEXT] = open_truth.frames[:, :CONTEXT]
    assert physics_metrics(frames, open_truth, CONTEXT)["intact_share"] < 0.1  # but where another ball covers it


# ---------------------------------------------------------------------------------------------
#                                       The physics scores
# ---------------------------------------------------------------------------------------------


def test_the_truth_scores_perfectly_and_dumps_to_json(truth):
    metrics = physics_metrics(truth.frames, truth, CONTEXT)
    assert len(metrics["position_error_per_frame"]) == 32 - CONTEXT
    assert all(error == 0 for error in metrics["position_error_per_frame"])
    assert metrics["position_error_first"] == 0 and metrics["found_share"] == 1
    assert metrics["well_formed_share"] == 1 and metrics["stray_frame_share"] == 0
    assert metrics["intact_share"] > 0.99 and len(metrics["intact_per_frame"]) == 32 - CONTEXT
    assert metrics["moves"] is True and metrics["motion_ratio"] == pytest.approx(1)
    assert metrics["colour_kept"] > 0.99
    assert json.loads(json.dumps(metrics)) == metrics


def test_a_frozen_rollout_fails_the_motion_check(truth):
    frozen = truth.frames.copy()
    frozen[:, CONTEXT:] = truth.frames[:, CONTEXT - 1:CONTEXT]  # the last context frame, repeated
    metrics = physics_metrics(frozen, truth, CONTEXT)
    assert metrics["moves"] is False and metrics["motion_ratio"] < 0.01
    errors = metrics["position_error_per_frame"]
    assert errors[0] < 3 < errors[8]  # the balls fall behind as the truth moves on


def test_balls_shifted_by_two_pixels_are_two_pixels_off(open_truth):
    positions = open_truth.positions.copy()
    towards_the_middle = np.where(positions[..., 0] < SIZE / 2, 2.0, -2.0)  # never into a wall
    positions[..., 0] += towards_the_middle * from_context_on(positions[..., 0])
    metrics = physics_metrics(rendered(open_truth, positions=positions), open_truth, CONTEXT)
    assert metrics["position_error"] == pytest.approx(2, abs=0.1)
    assert metrics["position_error_first"] == pytest.approx(2, abs=0.1)
    assert all(abs(error - 2) < 0.3 for error in metrics["position_error_per_frame"])
    assert metrics["found_share"] == 1 and metrics["moves"] is True
    assert metrics["well_formed_share"] > 0.9 and metrics["intact_share"] > 0.9  # shifted, but still whole balls


def test_an_erased_ball_is_missed_and_its_frames_are_wrong(open_truth):
    present = open_truth.present.copy()
    present[:, :, 0] &= ~from_context_on(present[:, :, 0])  # ball 0 (always present) erased
    metrics = physics_metrics(rendered(open_truth, present=present), open_truth, CONTEXT)
    balls = open_truth.present[:, CONTEXT:]  # (N, G, K) every ball is in view in an open box, nearly always
    assert metrics["found_share"] == pytest.approx(1 - balls[..., 0].sum() / balls.sum(), abs=0.02)
    assert metrics["well_formed_share"] < 0.1  # only frames where ball 0 hid behind another ball anyway
    assert metrics["intact_share"] < 0.1  # in an open box nothing but another ball can hide it
    assert metrics["position_error"] < 0.1  # the balls that are left are where they should be


def test_a_ball_smeared_into_a_streak_is_not_well_formed(open_truth):
    # Ball 0 smeared over 12 px sideways (the mean of 9 copies), as a blurry rollout might draw it.
    streak = np.zeros(open_truth.frames.shape)
    for shift in np.linspace(-6, 6, 9):
        positions = open_truth.positions.copy()
        positions[:, :, 0, 0] += shift
        streak += rendered(open_truth, positions=positions)
    generated = rendered(open_truth)
    generated[:, CONTEXT:] = np.rint(streak / 9)[:, CONTEXT:]
    truth_tracks = track_balls(open_truth.frames, open_truth.colours)
    generated_tracks = track_balls(generated, open_truth.colours)
    good = well_formed(generated_tracks, truth_tracks.areas, truth_tracks.compactness)
    assert good[:, CONTEXT:, 0].mean() < 0.1  # the streak
    metrics = physics_metrics(generated, open_truth, CONTEXT)
    assert metrics["well_formed_share"] < 0.1
    assert metrics["intact_share"] < 0.1  # judged alone too: a streak is not a whole disc anywhere


def test_a_ball_blurred_into_a_big_smear_is_not_well_formed_but_a_slight_blur_is(open_truth):
    def blurred(frames, sigma):
        taps = np.arange(-8, 9)
        kernel = np.exp(-taps**2 / (2 * sigma**2))
        kernel /= kernel.sum()
        out = frames.astype(np.float64)
        for axis in (2, 3):  # rows, then columns; zeros beyond the border
            padded = np.pad(out, [(8, 8) if a == axis else (0, 0) for a in range(5)])
            out = sum(weight * np.take(padded, np.arange(SIZE) + 8 + tap, axis=axis)
                      for tap, weight in zip(taps, kernel))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    open_truth = open_truth[:12]
    assert physics_metrics(blurred(open_truth.frames, 0.7), open_truth, CONTEXT)["well_formed_share"] > 0.9
    smeared = physics_metrics(blurred(open_truth.frames, 3.0), open_truth, CONTEXT)
    assert smeared["well_formed_share"] < 0.1
    assert smeared["moves"] is True  # the blobs still move: only their form is wrong


def test_an_extra_ball_breaks_the_count(open_truth):
    # A fourth ball of a colour no slot has, in every generated frame.
    unused = np.array([np.setdiff1d(np.arange(6), row)[0] for row in open_truth.colours[:, 0]])
    positions = np.concatenate([open_truth.positions, np.full(open_truth.positions[:, :, :1].shape, 16.0)], axis=2)
    colours = np.concatenate([open_truth.colours, np.broadcast_to(unused[:, None, None], (24, 32, 1))], axis=2)
    stranger_present = np.broadcast_to(from_context_on(open_truth.present), (24, 32, 1))  # generated frames only
    present = np.concatenate([open_truth.present, stranger_present], axis=2)
    radii = np.concatenate([open_truth.radii, np.full((24, 1), 3.5)], axis=1)
    with_stranger = render_videos(positions, radii, colours, present, open_truth.occluders, SIZE)
    metrics = physics_metrics(with_stranger, open_truth, CONTEXT)
    assert metrics["stray_frame_share"] > 0.95 and metrics["well_formed_share"] < 0.05
    assert metrics["intact_share"] < 0.05

    # A ball spawned in an empty slot: its colour is expected in the video, but not in view.
    spare = ~open_truth.present[:, 0, 2]  # (N,) videos with fewer than three balls
    assert spare.sum() >= 5
    present = open_truth.present.copy()
    present[:, :, 2] |= from_context_on(present[:, :, 2])
    metrics = physics_metrics(rendered(open_truth, present=present)[spare], open_truth[spare], CONTEXT)
    assert metrics["well_formed_share"] < 0.05 and metrics["stray_frame_share"] == 0
    assert metrics["intact_share"] < 0.05  # a whole ball, but one more than the scene holds


def test_a_colour_change_is_caught(open_truth):
    pairs = make_impossible_pairs(6, seed=1, config=open_truth.config, kinds=["colour_change"])
    metrics = physics_metrics(pairs.impossible.frames, pairs.plausible, CONTEXT)
    assert (pairs.event_frames >= CONTEXT).all()  # the change happens in the scored frames
    # From the change on, the ball is missing under its own colour and its new colour is a stranger.
    assert metrics["found_per_frame"][-1] < 1 and metrics["stray_frame_share"] > 0.3
    assert metrics["colour_kept"] < 0.95
    assert physics_metrics(pairs.plausible.frames, pairs.plausible, CONTEXT)["colour_kept"] == 1


def test_noise_raises_the_error_gradually_and_heavy_noise_is_flagged(open_truth):
    open_truth = open_truth[:12]
    rng = np.random.default_rng(0)
    scores = {}
    for sigma in (5, 20, 30, 80):  # out of 255
        noisy = np.clip(open_truth.frames + rng.normal(0, sigma, open_truth.frames.shape), 0, 255).astype(np.uint8)
        scores[sigma] = physics_metrics(noisy, open_truth, CONTEXT)
    assert scores[5]["position_error"] < 0.1 and scores[5]["well_formed_share"] > 0.95
    assert scores[5]["position_error"] < scores[20]["position_error"] < scores[80]["position_error"]
    assert scores[20]["well_formed_share"] > 0.5
    assert scores[30]["stray_frame_share"] < 0.1  # dim coloured specks are not a spawned ball
    assert scores[80]["well_formed_share"] < 0.05 and scores[80]["stray_frame_share"] > 0.9
    # Through all of it the balls are still found, and still seen to move.
    assert all(score["found_share"] > 0.99 and score["moves"] for score in scores.values())


@pytest.mark.parametrize("change, message", [
    (lambda frames: frames[:, :, :, :16], "must match the truth"),
    (lambda frames: frames.transpose(0, 1, 4, 2, 3), "RGB last"),
    (lambda frames: frames / 127.5 - 1, r"\(x \+ 1\) / 2"),
])
def test_bad_inputs_are_refused_with_the_fix(truth, change, message):
    with pytest.raises(ValueError, match=message):
        physics_metrics(change(truth.frames[:2]), truth[:2], CONTEXT)


@pytest.mark.parametrize("num_context", [0, 32])
def test_the_context_must_leave_frames_to_score(truth, num_context):
    with pytest.raises(ValueError, match="num_context"):
        physics_metrics(truth.frames[:2], truth[:2], num_context)


def test_the_reference_rows_score_an_exact_round_trip_perfectly_and_a_frozen_frame_as_still():
    """reference_rows with a lossless stand-in for the VAE: the round trip is the truth (0 px, every frame
    well formed, motion 1) and the frozen row repeats the last context frame (motion 0, error > 0)."""
    from types import SimpleNamespace

    from videodiff.evaluation import reference_rows
    from videodiff.pipeline import VideoDiffusionRunConfig

    run = SimpleNamespace(config=VideoDiffusionRunConfig(), encode=lambda frames: np.array(frames, copy=True),
                          decode=lambda latents: latents)
    through_vae, frozen = reference_rows(run, num_videos=4, context=3, length=8)
    assert through_vae["guidance"] == "truth through the VAE" and frozen["guidance"] == "frozen last frame"
    assert through_vae["position_error_first"] == 0.0 and through_vae["well_formed_share"] == 1.0
    assert through_vae["motion_ratio"] == pytest.approx(1.0)
    assert frozen["motion_ratio"] == 0.0 and frozen["position_error_first"] > 0.5
    assert frozen["position_error_per_frame"][0] > 0.1  # the last *context* frame is held, not the first new one


# ---------------------------------------------------------------------------------------------
#                               Where the frames fail: crowding
# ---------------------------------------------------------------------------------------------


def test_the_closest_gap_is_between_edges_of_present_balls_and_infinite_for_one():
    """Three balls of radii 2, 3, 1: frame 0 has balls 0 and 1 5 px apart edge to edge (ball 2 far off),
    frame 1 only ball 0 (and ball 2 absent, placed on it), frame 2 balls 0 and 1 overlapping by 3 px."""
    from types import SimpleNamespace

    positions = np.array([[[5, 5], [15, 5], [30, 30]],
                          [[5, 5], [15, 5], [5, 5]],
                          [[5, 5], [7, 5], [30, 30]]], dtype=np.float32)[None]  # (1, 3, 3, 2)
    present = np.array([[True, True, True], [True, False, False], [True, True, False]])[None]
    videos = SimpleNamespace(positions=positions, radii=np.array([[2.0, 3.0, 1.0]]), present=present)
    gaps = closest_gaps(videos)
    assert gaps.shape == (1, 3)
    assert gaps[0, 0] == pytest.approx(5.0) and gaps[0, 1] == np.inf and gaps[0, 2] == pytest.approx(-3.0)


def test_intact_by_crowding_groups_the_generated_frames_by_ball_count_and_gap(open_truth):
    """Flags planted from the state itself: a frame is marked intact exactly where its closest two balls
    are at least 4 px apart (or it holds one ball), so the groups must read 0 and 1 by construction; the
    context frames are marked wrong and must not count."""
    balls = open_truth.present.sum(axis=2)
    intact = (closest_gaps(open_truth) >= 4.0) | (balls == 1)
    intact[:, :CONTEXT] = False
    breakdown = intact_by_crowding(intact, open_truth, CONTEXT)
    by_gap, by_balls = breakdown["by_gap"], breakdown["by_balls"]
    assert list(by_gap) == ["overlapping", "0-4 px", "4-10 px", ">= 10 px", "one ball"]
    assert by_gap["overlapping"]["intact"] == 0.0 and by_gap["0-4 px"]["intact"] == 0.0
    assert by_gap["4-10 px"]["intact"] == 1.0 and by_gap[">= 10 px"]["intact"] == 1.0
    assert by_gap["one ball"]["intact"] == 1.0 and by_balls["1 ball"]["intact"] == 1.0
    generated_frames = intact[:, CONTEXT:].size
    assert sum(group["frames"] for group in by_gap.values()) == generated_frames
    assert sum(group["frames"] for group in by_balls.values()) == generated_frames
    assert all(by_gap[name]["frames"] > 0 for name in by_gap)  # the fixture's videos fill every group
    # Two or three balls: the share is that of the frames whose closest pair is 4 px or more apart.
    far = (closest_gaps(open_truth) >= 4.0)[:, CONTEXT:]
    assert by_balls["2 balls"]["intact"] == pytest.approx(far[balls[:, CONTEXT:] == 2].mean())
    text = format_crowding(breakdown)
    assert "1 ball 1.00" in text and "overlapping 0.00" in text


def test_physics_metrics_reports_where_balls_crowd_a_continuation_that_drops_them(open_truth):
    """Every ball erased from the frames whose closest two balls are under 4 px apart (edge to edge):
    those frames are not intact, the rest are, and physics_metrics' breakdown says so group by group."""
    close = closest_gaps(open_truth) < 4.0  # (N, F)
    generated = rendered(open_truth, present=open_truth.present & ~close[:, :, None])
    crowding = physics_metrics(generated, open_truth, CONTEXT)["intact_by_crowding"]["by_gap"]
    assert crowding["overlapping"]["intact"] == 0.0 and crowding["0-4 px"]["intact"] == 0.0
    assert crowding["4-10 px"]["intact"] > 0.95 and crowding[">= 10 px"]["intact"] > 0.95
    assert crowding["one ball"]["intact"] > 0.95


def test_intact_by_crowding_refuses_flags_of_another_shape(open_truth):
    with pytest.raises(ValueError, match=r"must be \(N, F\)"):
        intact_by_crowding(np.ones((2, 5), dtype=bool), open_truth, CONTEXT)
    with pytest.raises(ValueError, match="num_context"):
        intact_by_crowding(np.ones(open_truth.present.shape[:2], dtype=bool), open_truth, 32)


# ---------------------------------------------------------------------------------------------
#                                  Why a frame is not intact
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lone_truth() -> PhysicsVideos:
    """Videos of one ball each and no occluder: nothing can hide the ball, so a ball not found is missing."""
    return make_videos(8, seed=7, config=PhysicsConfig(max_balls=1, occluder_probability=0.0))


def test_frame_faults_name_what_was_done_to_the_frames(lone_truth):
    """Each continuation is the truth redrawn with one thing changed from the context on; frame_faults must
    name that fault in every generated frame and leave the context frames alone, and a frame is intact
    exactly when it has no fault."""
    after = from_context_on(lone_truth.present)  # (1, F, 1)
    colours = lone_truth.colours
    # The copy 9 px to the side that keeps it in the picture.
    shift = np.where(lone_truth.positions[..., :1] < SIZE / 2, 9.0, -9.0) * np.array([1.0, 0.0])
    twice_positions = np.concatenate([lone_truth.positions, lone_truth.positions + shift], axis=2)
    changed = {
        "truth": (lone_truth.frames, set()),
        "erased": (rendered(lone_truth, present=lone_truth.present & ~after), {"missing"}),
        "recoloured": (rendered(lone_truth, colours=np.where(after, (colours + 3) % len(PALETTE), colours)),
                       {"missing", "stray colour"}),
        "half the radius": (np.where(after[..., None, None], rendered(lone_truth, radii=lone_truth.radii * 0.5),
                                     lone_truth.frames), {"too small"}),
        "1.8 times the radius": (np.where(after[..., None, None], rendered(lone_truth, radii=lone_truth.radii * 1.8),
                                          lone_truth.frames), {"too large"}),
        "drawn twice, 9 px apart": (np.where(after[..., None, None], render_videos(
            twice_positions, np.repeat(lone_truth.radii, 2, axis=1), np.repeat(colours, 2, axis=2),
            np.repeat(lone_truth.present, 2, axis=2), lone_truth.occluders, SIZE), lone_truth.frames), {"smeared"}),
    }
    for name, (frames, expected) in changed.items():
        faults = frame_faults(frames, lone_truth)
        assert set(faults) == {"intact", *FAULTS}
        np.testing.assert_array_equal(faults["intact"], intact_frames(frames, lone_truth), err_msg=name)
        any_fault = np.logical_or.reduce([faults[fault] for fault in FAULTS])
        np.testing.assert_array_equal(faults["intact"], ~any_fault, err_msg=name)
        assert faults["intact"][:, :CONTEXT].all(), name
        for fault in expected:
            assert faults[fault][:, CONTEXT:].all(), (name, fault)
        # Faults not planted: none for the clean changes; the copy drawn twice also has twice the area.
        others = set(FAULTS) - expected - ({"too large"} if name.startswith("drawn twice") else set())
        for fault in others:
            assert not faults[fault].any(), (name, fault)


def test_a_ball_the_bar_hides_is_not_missing(truth):
    """Behind the occluder a ball is not found and may not be: in the true frames (and with every ball
    erased from the context on) a frame is intact exactly when it has no fault, hidden balls included."""
    erased = rendered(truth, present=truth.present & ~from_context_on(truth.present))
    for frames in (truth.frames, erased):
        faults = frame_faults(frames, truth)
        hidden = truth.present & ~track_balls(truth.frames, truth.colours).found  # (N, F, K)
        assert hidden.any()  # the fixture's bar does hide balls
        np.testing.assert_array_equal(faults["intact"], ~np.logical_or.reduce([faults[f] for f in FAULTS]))
    assert not frame_faults(truth.frames, truth)["missing"].any()


def test_faults_by_balls_counts_the_generated_frames_group_by_group(open_truth):
    """Faults planted from the state: "missing" in the frames with three balls, "smeared" in those with two,
    nothing in those with one; the context frames carry every fault and must not count."""
    balls = open_truth.present.sum(axis=2)
    faults = {fault: np.zeros(balls.shape, dtype=bool) for fault in FAULTS}
    faults["missing"] = balls == 3
    faults["smeared"] = balls == 2
    for fault in FAULTS:
        faults[fault][:, :CONTEXT] = True
    faults["intact"] = ~np.logical_or.reduce([faults[fault] for fault in FAULTS])
    breakdown = faults_by_balls(faults, open_truth, CONTEXT)
    assert list(breakdown) == ["all", "1 ball", "2 balls", "3 balls"]
    assert breakdown["all"]["frames"] == balls[:, CONTEXT:].size
    assert sum(breakdown[name]["frames"] for name in ("1 ball", "2 balls", "3 balls")) == breakdown["all"]["frames"]
    assert breakdown["1 ball"]["intact"] == 1.0 and breakdown["1 ball"]["missing"] == 0.0
    assert breakdown["2 balls"]["smeared"] == 1.0 and breakdown["2 balls"]["missing"] == 0.0
    assert breakdown["3 balls"]["missing"] == 1.0 and breakdown["3 balls"]["intact"] == 0.0
    assert breakdown["all"]["missing"] == pytest.approx((balls[:, CONTEXT:] == 3).mean())
    assert breakdown["all"]["stray colour"] == 0.0
    text = format_faults(breakdown)
    assert "3 balls" in text and "missing 1.00" in text and "intact 1.00" in text
    with pytest.raises(ValueError, match="frame_faults"):
        faults_by_balls({"intact": faults["intact"]}, open_truth, CONTEXT)
    with pytest.raises(ValueError, match="num_context"):
        faults_by_balls(faults, open_truth, 32)


def test_physics_metrics_says_why_a_continuation_that_drops_a_ball_fails(lone_truth):
    generated = rendered(lone_truth, present=lone_truth.present & ~from_context_on(lone_truth.present))
    metrics = physics_metrics(generated, lone_truth, CONTEXT)
    everything = metrics["faults"]["all"]
    assert everything["frames"] == lone_truth.present[:, CONTEXT:, 0].size
    assert everything["intact"] == 0.0 and everything["missing"] == 1.0
    assert all(everything[fault] == 0.0 for fault in FAULTS if fault != "missing")
    assert metrics["faults"]["1 ball"] == everything and metrics["faults"].keys() == {"all", "1 ball"}
    json.dumps(metrics)  # plain types, as metrics.json stores them


def test_frames_with_no_ball_in_view_have_no_found_share_rather_than_zero(open_truth):
    """A frame whose truth shows no ball (a vanish twin after its event, every ball behind the bar) has
    nothing to find: its found share is None, as its position error is, not 0 — "every ball lost"."""
    present = open_truth.present.copy()
    present[:, CONTEXT + 2:] = False                                    # every ball gone from then on
    gone = dataclasses.replace(open_truth, frames=rendered(open_truth, present=present), present=present)
    metrics = physics_metrics(gone.frames, gone, CONTEXT)               # the truth scored against itself
    found, errors = metrics["found_per_frame"], metrics["position_error_per_frame"]
    assert found[:2] == [1.0, 1.0] and found[2:] == [None] * (len(found) - 2)
    assert errors[2:] == [None] * (len(errors) - 2)
    assert metrics["found_share"] == 1.0 and metrics["intact_share"] == 1.0
    # With no ball in view in any generated frame there is no found share at all.
    present[:, CONTEXT:] = False
    empty = dataclasses.replace(open_truth, frames=rendered(open_truth, present=present), present=present)
    assert physics_metrics(empty.frames, empty, CONTEXT)["found_share"] is None


def test_frames_may_be_torch_tensors_of_any_dtype_and_with_gradients(open_truth):
    """The scores take a model's decoded frames as they come: a torch tensor, bf16 (autocast), with a
    gradient attached, or uint8 — the same scores as the numpy frames."""
    import torch

    expected = summary(physics_metrics(open_truth.frames, open_truth, CONTEXT))
    unit = torch.from_numpy(open_truth.frames).float() / 255
    for frames in (torch.from_numpy(open_truth.frames), unit.requires_grad_(), unit.detach().to(torch.bfloat16)):
        scores = summary(physics_metrics(frames, open_truth, CONTEXT))
        assert scores["found_share"] == expected["found_share"] and scores["intact_share"] == expected["intact_share"]
        assert scores["position_error"] == pytest.approx(expected["position_error"], abs=0.05), frames.dtype


def test_videos_from_nothing_are_judged_by_the_balls_asked_for(open_truth):
    lone = open_truth[np.flatnonzero(open_truth.present[:, 0].sum(axis=1) == 1)]
    assert len(lone) >= 4
    colours, present = lone.colours[:, 0], lone.present[:, 0]
    judged = drawn_as_asked(lone.frames, colours, present)
    assert judged["share"] == 1.0 and judged["frames"].all() and len(judged["share_per_frame"]) == 32
    assert judged["missing"] == judged["misshapen"] == judged["stray colour"] == 0.0
    slot = present.argmax(axis=1)
    true_speed = np.linalg.norm(np.diff(lone.positions[np.arange(len(lone)), :, slot], axis=1), axis=-1).mean()
    assert abs(judged["speed"] - true_speed) < 0.05
    # A second ball asked for that the frames do not hold: missing in every frame.
    unused = np.array([np.setdiff1d(np.arange(6), row)[0] for row in colours])
    more = present.copy()
    more[np.arange(len(lone)), (slot + 1) % 3] = True
    wider = colours.copy()
    wider[np.arange(len(lone)), (slot + 1) % 3] = unused
    judged = drawn_as_asked(lone.frames, wider, more)
    assert judged["share"] == 0.0 and judged["missing"] == 1.0
    # The ball drawn in a colour not asked for: missing, and that colour stray.
    repainted = lone.colours.copy()
    repainted[np.arange(len(lone)), :, slot] = unused[:, None]
    judged = drawn_as_asked(rendered(lone, colours=repainted), colours, present)
    assert judged["share"] == 0.0 and judged["missing"] == judged["stray colour"] == 1.0
    # A ball far smaller than any the scenes hold: misshapen.
    judged = drawn_as_asked(rendered(lone, radii=np.full_like(lone.radii, 1.0)), colours, present)
    assert judged["misshapen"] > 0.9 and judged["share"] < 0.1
    with pytest.raises(ValueError, match="at least one ball per video"):
        drawn_as_asked(lone.frames, colours, np.zeros_like(present))
