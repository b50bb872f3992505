"""Tests of videodiff.data.physics: the simulation obeys its physics, the pictures show the states,
seeds regenerate videos, and every impossible twin breaks the physics only from its event frame on.

Checks against the pixels are written independently of the library: a ball's pixels are those whose
colour is an exact multiple of its palette colour, weighted by how lit they are.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from imagediff.data import DataError
from videodiff.data import (
    IMPOSSIBLE_KINDS, PALETTE, PhysicsConfig, PhysicsVideos, ball_energy, make_impossible_pairs,
    make_pairs_from_seeds, make_videos, make_videos_from_seeds, render_videos, simulate_balls,
)

SIZE = 32


@pytest.fixture(scope="module")
def videos() -> PhysicsVideos:
    return make_videos(48, seed=0, config=PhysicsConfig(occluder_probability=0.5))


@pytest.fixture(scope="module")
def pairs():
    return make_impossible_pairs(4 * len(IMPOSSIBLE_KINDS), seed=0)


def random_balls(num_videos: int, num_balls: int, seed: int):
    """Balls (N, K) anywhere in the box, moving at up to 2 px/frame in any direction."""
    rng = np.random.default_rng(seed)
    radii = rng.uniform(2.5, 4.5, size=(num_videos, num_balls))
    positions = rng.uniform(radii[..., None], SIZE - radii[..., None], size=(num_videos, num_balls, 2))
    velocities = rng.uniform(-2, 2, size=(num_videos, num_balls, 2))
    return positions, velocities, radii


def ball_pixels(frames: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """How much of each pixel (..., H, W) shows the palette colour (3,) uint8: the pixel must be an
    exact multiple of the colour (its unlit channels are 0); its lit channels give the amount."""
    lit = colour > 0
    unlit_is_dark = (frames[..., ~lit] == 0).all(axis=-1)
    amounts = frames[..., lit].astype(np.float64) / 255  # (..., H, W, lit)
    same_amount = np.ptp(amounts, axis=-1) == 0  # yellow is (a, a, 0), never (a, a ± 1, 0)
    return np.where(unlit_is_dark & same_amount, amounts.mean(axis=-1), 0.0)


# ---------------------------------------------------------------------------------------------
#                                           Physics
# ---------------------------------------------------------------------------------------------


def test_energy_is_conserved_in_flight_and_through_elastic_bounces():
    positions, velocities, radii = random_balls(64, 3, seed=1)
    trajectory, speeds, floor_impacts = simulate_balls(positions, velocities, radii, 200, SIZE, gravity=0.15,
                                                       restitution=1.0)
    energy = ball_energy(trajectory, speeds, radii, 0.15, SIZE)  # (N, F, K)
    assert (floor_impacts > 0).sum(axis=1).min() >= 3  # every ball bounced on the floor several times
    np.testing.assert_allclose(energy, np.broadcast_to(energy[:, :1], energy.shape), rtol=1e-9, atol=1e-9)
    # ... and the balls never leave the box.
    assert (trajectory >= radii[:, None, :, None] - 1e-9).all()
    assert (trajectory <= SIZE - radii[:, None, :, None] + 1e-9).all()


def test_stored_videos_conserve_energy_when_restitution_is_one():
    config = PhysicsConfig(restitution=1.0, num_frames=48)
    videos = make_videos(16, seed=2, config=config)
    energy = ball_energy(videos.positions.astype(np.float64), videos.velocities.astype(np.float64),
                         videos.radii, config.gravity, SIZE)
    np.testing.assert_allclose(energy, np.broadcast_to(energy[:, :1], energy.shape), rtol=1e-4, atol=1e-4)  # float32


def test_a_floor_bounce_keeps_restitution_squared_of_the_vertical_energy():
    # One ball dropped from rest at y = 10, drifting sideways at 0.3 px/frame, far from the walls.
    gravity, restitution, radius = 0.15, 0.8, 3.0
    positions, velocities, radii = np.array([[[16.0, 10.0]]]), np.array([[[0.3, 0.0]]]), np.array([[radius]])
    trajectory, speeds, floor_impacts = simulate_balls(positions, velocities, radii, 40, SIZE, gravity, restitution)
    bounce_step = int(np.flatnonzero(floor_impacts[0, :, 0])[0])
    before, after = bounce_step, bounce_step + 1  # frames on either side of the bounce

    def vertical_energy(frame):
        return 0.5 * speeds[0, frame, 0, 1] ** 2 + gravity * (SIZE - radius - trajectory[0, frame, 0, 1])

    assert vertical_energy(before) == pytest.approx(gravity * (SIZE - radius - 10.0), rel=1e-12)
    assert vertical_energy(after) == pytest.approx(restitution**2 * vertical_energy(before), rel=1e-9)
    # The speed at impact is the free-fall speed sqrt(2 g h), and the sideways motion is untouched.
    assert floor_impacts[0, bounce_step, 0] == pytest.approx(math.sqrt(2 * gravity * (SIZE - radius - 10.0)))
    np.testing.assert_allclose(speeds[0, :, 0, 0], 0.3)


def test_a_ball_in_flight_follows_the_free_fall_parabola():
    positions, velocities, radii = np.array([[[5.0, 6.0]]]), np.array([[[1.0, -0.5]]]), np.array([[3.0]])
    trajectory, speeds, _ = simulate_balls(positions, velocities, radii, 12, SIZE, gravity=0.15, restitution=0.9)
    t = np.arange(12)
    np.testing.assert_allclose(trajectory[0, :, 0, 0], 5.0 + 1.0 * t)
    np.testing.assert_allclose(trajectory[0, :, 0, 1], 6.0 - 0.5 * t + 0.5 * 0.15 * t**2)
    np.testing.assert_allclose(speeds[0, :, 0, 1], -0.5 + 0.15 * t)


def test_generated_states_respect_the_config(videos):
    config = videos.config
    assert videos.frames.shape == (48, 32, SIZE, SIZE, 3) and videos.frames.dtype == np.uint8
    assert videos.positions.shape == (48, 32, 3, 2) and videos.positions.dtype == np.float32
    counts = videos.present[:, 0].sum(axis=1)
    assert counts.min() == 1 and counts.max() == 3
    # Present balls come first, and stay for the whole video; colours are distinct within a video.
    assert (videos.present == videos.present[:, :1]).all()
    assert (np.diff(videos.present[:, 0].astype(int), axis=1) <= 0).all()
    assert all(len(set(row)) == 3 for row in videos.colours[:, 0])
    assert (videos.radii >= config.radius_range[0]).all() and (videos.radii <= config.radius_range[1]).all()
    initial_speed = np.linalg.norm(videos.velocities[:, 0], axis=-1)
    assert initial_speed.min() >= 0.5 - 1e-5 and initial_speed.max() <= 2.0 + 1e-5


# ---------------------------------------------------------------------------------------------
#                                  Pictures show the states
# ---------------------------------------------------------------------------------------------


def test_each_balls_pixels_are_centred_on_its_stored_position(videos):
    positions, radii, present = videos.positions, videos.radii[:, None, :], videos.present  # (N, F, K, ...)
    x, y = positions[..., 0], positions[..., 1]
    near_a_wall = (x - radii < 1) | (x + radii > SIZE - 1) | (y - radii < 1) | (y + radii > SIZE - 1)
    gap = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1)  # (N, F, K, K)
    touching = (gap < radii[..., :, None] + radii[..., None, :] + 1) & present[:, :, None, :]
    touching[..., np.arange(3), np.arange(3)] = False
    start, stop = videos.occluders[:, None, None, 0], videos.occluders[:, None, None, 1]
    behind_bar = (x + radii + 1 > start) & (x - radii - 1 < stop) & (stop > start)
    clear = present & ~near_a_wall & ~touching.any(axis=-1) & ~behind_bar  # (N, F, K)
    assert clear.sum() > 1000

    pixel_x, pixel_y = np.arange(SIZE) + 0.5, np.arange(SIZE)[:, None] + 0.5
    errors = []
    for ball in range(3):
        colour = PALETTE[videos.colours[:, :, ball]]  # (N, F, 3)
        weight = np.stack([ball_pixels(videos.frames[n], colour[n, 0]) for n in range(len(videos))])  # (N, F, H, W)
        area = weight.sum(axis=(2, 3))
        centre = np.stack([(weight * pixel_x).sum(axis=(2, 3)), (weight * pixel_y).sum(axis=(2, 3))], axis=-1)
        centre /= np.maximum(area, 1e-9)[..., None]  # (N, F, 2) the lit-weighted centroid
        errors.append(np.linalg.norm(centre - positions[:, :, ball], axis=-1)[clear[:, :, ball]])
        # The lit area of a whole disc is its area, π r².
        disc_area = np.broadcast_to(math.pi * videos.radii[:, None, ball] ** 2, area.shape)  # (N, F)
        np.testing.assert_allclose(area[clear[:, :, ball]], disc_area[clear[:, :, ball]], rtol=0.05)
    assert np.concatenate(errors).max() < 0.3


def test_the_number_of_balls_seen_is_the_number_present():
    videos = make_videos(32, seed=3, config=PhysicsConfig(occluder_probability=0.0, min_balls=1, max_balls=3))
    seen = np.zeros(videos.present.shape[:2], dtype=int)  # (N, F)
    for n in range(len(videos)):
        for colour in PALETTE:
            seen[n] += ball_pixels(videos.frames[n], colour).sum(axis=(1, 2)) >= 5  # at least 5 px of it
    # A ball may be drawn over another; only frames where no two present balls touch are compared.
    positions, radii = videos.positions, videos.radii[:, None, :]
    gap = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1)
    touching = gap < radii[..., :, None] + radii[..., None, :] + 1
    touching &= videos.present[:, :, :, None] & videos.present[:, :, None, :] & ~np.eye(3, dtype=bool)
    apart = ~touching.any(axis=(2, 3))
    assert apart.mean() > 0.5
    np.testing.assert_array_equal(seen[apart], videos.present.sum(axis=2)[apart])


def test_the_occluder_hides_the_balls_behind_it():
    config = PhysicsConfig(occluder_probability=1.0, occluder_width_range=(8, 8), radius_range=(2.5, 3.0),
                           min_balls=3)
    videos = make_videos(24, seed=4, config=config)
    start, stop = videos.occluders[:, 0], videos.occluders[:, 1]
    assert (stop - start == 8).all()
    for n in range(len(videos)):
        bar = videos.frames[n, :, :, start[n]:stop[n]]  # (F, H, 8, 3)
        assert (bar == 128).all()  # grey in front of everything, in every frame
    # A ball whose whole disc (and its edge ramp) lies within the bar's columns leaves no trace.
    x, radii = videos.positions[..., 0], videos.radii[:, None, :]
    hidden = (x - radii - 0.5 >= start[:, None, None]) & (x + radii + 0.5 <= stop[:, None, None])  # (N, F, K)
    assert hidden.sum() > 20
    for n, frame, ball in zip(*np.nonzero(hidden)):
        colour = PALETTE[videos.colours[n, frame, ball]]
        assert ball_pixels(videos.frames[n, frame], colour).sum() == 0


def test_renderer_matches_a_per_pixel_formula_with_later_balls_on_top():
    # Two overlapping balls, then one over the picture's edge; drawn pixel by pixel here.
    positions = np.array([[[[10.0, 12.0], [13.0, 12.5], [30.5, 1.0]]]])  # (1, 1, 3, 2)
    radii, colours = np.array([[4.0, 3.5, 3.0]]), np.array([[[0, 2, 3]]])
    present = np.ones((1, 1, 3), dtype=bool)
    frame = render_videos(positions, radii, colours, present, np.array([[20, 23]]), SIZE)[0, 0]
    expected = np.zeros((SIZE, SIZE, 3))
    for row in range(SIZE):
        for column in range(SIZE):
            for ball in range(3):
                distance = math.hypot(column + 0.5 - positions[0, 0, ball, 0], row + 0.5 - positions[0, 0, ball, 1])
                coverage = min(max(radii[0, ball] + 0.5 - distance, 0), 1)
                expected[row, column] = (1 - coverage) * expected[row, column] + coverage * PALETTE[colours[0, 0, ball]]
            if 20 <= column < 23:
                expected[row, column] = 128
    np.testing.assert_array_equal(frame, np.rint(expected).astype(np.uint8))


def test_model_range_is_channels_first_in_minus_one_to_one(videos):
    x = videos[:2].to_model_range()
    assert x.shape == (2, 32, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert x.min() == -1 and x.max() == 1
    np.testing.assert_allclose(x[1, 5, :, 7, 9].numpy(), videos.frames[1, 5, 7, 9] / 127.5 - 1, atol=1e-6)


# ---------------------------------------------------------------------------------------------
#                                   Seeds, subsets and files
# ---------------------------------------------------------------------------------------------


def assert_same_videos(a: PhysicsVideos, b: PhysicsVideos) -> None:
    for name in ("frames", "positions", "velocities", "radii", "colours", "present", "occluders", "seeds"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.config == b.config


def test_the_same_seed_gives_the_same_videos_and_one_seed_regenerates_one_video(videos):
    assert_same_videos(make_videos(48, seed=0, config=videos.config), videos)
    other = make_videos(48, seed=1, config=videos.config)
    assert not np.array_equal(other.frames, videos.frames)
    assert len(set(videos.seeds.tolist())) == len(videos)
    assert_same_videos(make_videos_from_seeds(videos.seeds[[17]], videos.config), videos[17])
    assert_same_videos(make_videos_from_seeds(videos.seeds[5:9], videos.config), videos.subset(slice(5, 9)))


def test_indexing_keeps_a_batch(videos):
    assert len(videos) == 48 and len(videos[3]) == 1 and len(videos[2:10:2]) == 4
    mask = videos.present[:, 0, 1]
    assert len(videos[mask]) == mask.sum()
    np.testing.assert_array_equal(videos[[4, 2]].frames, videos.frames[[4, 2]])


def test_save_and_load_round_trip(videos, tmp_path):
    path = tmp_path / "physics.npz"
    videos[:6].save(path)
    assert_same_videos(PhysicsVideos.load(path), videos[:6])


def test_loading_a_missing_or_foreign_file_says_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="no physics videos at .*missing.npz"):
        PhysicsVideos.load(tmp_path / "missing.npz")
    (tmp_path / "notes.npz").write_text("not an archive")
    with pytest.raises(DataError, match="cannot read .*notes.npz"):
        PhysicsVideos.load(tmp_path / "notes.npz")
    np.savez(tmp_path / "other.npz", frames=np.zeros((1, 2, 8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="lacks positions"):
        PhysicsVideos.load(tmp_path / "other.npz")


@pytest.mark.parametrize("options, message", [
    (dict(num_frames=1), "num_frames"),
    (dict(image_size=4), "image_size"),
    (dict(max_balls=7), "palette"),
    (dict(min_balls=3, max_balls=2), "min_balls <= max_balls"),
    (dict(min_balls=0), "min_balls"),
    (dict(restitution=1.2), "restitution"),
    (dict(restitution=-0.1), "restitution"),
    (dict(gravity=-0.1), "gravity"),
    (dict(radius_range=(3.0, 2.0)), "radius_range"),
    (dict(radius_range=(2.0, 16.0)), "radius_range"),
    (dict(speed_range=(-1.0, 1.0)), "speed_range"),
    (dict(occluder_probability=1.5), "occluder_probability"),
    (dict(occluder_width_range=(0, 3)), "occluder_width_range"),
])
def test_config_refuses_impossible_settings(options, message):
    with pytest.raises(ValueError, match=message):
        PhysicsConfig(**options)


@pytest.mark.parametrize("call, message", [
    (lambda: make_videos(0), "num_videos"),
    (lambda: make_impossible_pairs(4, kinds=["levitation"]), "unknown impossible kinds"),
    (lambda: make_impossible_pairs(4, event_range=(0, 10)), "event_range"),
    (lambda: make_impossible_pairs(4, event_range=(10, 32)), "event_range"),
    (lambda: make_impossible_pairs(4, kinds=["appear"], config=PhysicsConfig(min_balls=3)), "empty ball slot"),
    (lambda: make_impossible_pairs(4, kinds=["colour_change"], config=PhysicsConfig(max_balls=6)), "palette colour"),
])
def test_generators_refuse_impossible_requests(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
#                                       Impossible twins
# ---------------------------------------------------------------------------------------------


def test_kinds_cycle_evenly_and_events_fall_in_the_range(pairs):
    kinds, counts = np.unique(pairs.kinds, return_counts=True)
    assert set(kinds) == set(IMPOSSIBLE_KINDS) and (counts == 4).all()
    assert (pairs.event_frames >= 8).all() and (pairs.event_frames <= 24).all()
    np.testing.assert_array_equal(pairs.pair_ids, np.arange(len(pairs)))
    np.testing.assert_array_equal(pairs.plausible.seeds, pairs.impossible.seeds)


@pytest.mark.parametrize("kind", IMPOSSIBLE_KINDS)
def test_twins_are_identical_before_the_event_and_differ_visibly_after(pairs, kind):
    for i in np.flatnonzero(pairs.kinds == kind):
        event, plausible, impossible = pairs.event_frames[i], pairs.plausible[i], pairs.impossible[i]
        for name in ("frames", "positions", "velocities", "colours", "present"):
            np.testing.assert_array_equal(getattr(plausible, name)[0, :event], getattr(impossible, name)[0, :event],
                                          err_msg=f"{kind} pair {i}: {name} before frame {event}")
        difference = np.abs(plausible.frames[0, event:].astype(int) - impossible.frames[0, event:])
        assert (difference > 100).any(axis=-1).sum(axis=(1, 2)).max() >= 3, f"{kind} pair {i} shows no change"


@pytest.mark.parametrize("kind", IMPOSSIBLE_KINDS)
def test_impossible_states_record_the_event(pairs, kind):
    gravity = pairs.plausible.config.gravity
    left_the_scene = []  # fall_through_floor: did the ball fall out of the picture?
    for i in np.flatnonzero(pairs.kinds == kind):
        e, k = pairs.event_frames[i], pairs.event_balls[i]
        plausible, impossible = pairs.plausible[i], pairs.impossible[i]
        radius = plausible.radii[0, k]
        if kind == "teleport":
            jump = np.linalg.norm(impossible.positions[0, e, k] - plausible.positions[0, e, k])
            assert jump >= 8 and np.linalg.norm(impossible.positions[0, e, k] - impossible.positions[0, e - 1, k]) >= 6
        elif kind == "vanish":
            assert plausible.present[0, e:, k].all() and not impossible.present[0, e:, k].any()
        elif kind == "appear":
            assert not plausible.present[0, :, k].any() and impossible.present[0, e:, k].all()
        elif kind == "colour_change":
            new_colour = impossible.colours[0, e, k]
            assert (impossible.colours[0, e:, k] == new_colour).all()
            assert new_colour not in plausible.colours[0, 0]
        elif kind == "fall_through_floor":
            # The plausible ball bounces off the floor in the step before the event; its twin ends up
            # below the floor line and keeps falling.
            assert plausible.velocities[0, e - 1, k, 1] > 0 > plausible.velocities[0, e, k, 1]
            assert impossible.positions[0, e, k, 1] > SIZE - radius
            assert (np.diff(impossible.positions[0, e:, k, 1]) > 0).all()
            # Once wholly below the picture it has left the scene.
            below = impossible.positions[0, :, k, 1] - radius >= SIZE
            np.testing.assert_array_equal(impossible.present[0, :, k], ~below)
            left_the_scene.append(below.any())
        elif kind == "gravity_reversal":
            # In free flight the vertical velocity now changes by -g per frame.
            change = np.diff(impossible.velocities[0, e - 1:, :, 1], axis=0)[:, impossible.present[0, e]]
            assert np.median(change) == pytest.approx(-gravity, abs=1e-4)
        elif kind == "energy_gain":
            energy = {name: ball_energy(video.positions, video.velocities, video.radii, gravity, SIZE)[0, :, k]
                      for name, video in (("plausible", plausible), ("impossible", impossible))}
            assert energy["plausible"][e] < energy["plausible"][e - 1] < energy["impossible"][e]
    if kind == "fall_through_floor":
        assert any(left_the_scene)


def test_pairs_regenerate_from_their_seeds_and_kinds(pairs):
    chosen = np.arange(0, len(pairs), 3)
    again = make_pairs_from_seeds(pairs.plausible.seeds[chosen], pairs.kinds[chosen], pairs.plausible.config)
    assert_same_videos(again.plausible, pairs.plausible[chosen])
    assert_same_videos(again.impossible, pairs.impossible[chosen])
    np.testing.assert_array_equal(again.event_frames, pairs.event_frames[chosen])
    np.testing.assert_array_equal(again.event_balls, pairs.event_balls[chosen])


def test_scene_labels_index_the_set_of_colours_a_video_starts_with():
    from videodiff.data import scene_labels, scene_sets

    table = scene_sets(3)
    assert len(table) == 6 + 15 + 20 and len(set(table)) == len(table)
    assert all(list(colours) == sorted(set(colours)) for colours in table)
    assert [len(colours) for colours in table] == sorted(len(colours) for colours in table)
    videos = make_videos(40, seed=3)
    labels = scene_labels(videos)
    assert labels.dtype == np.int64 and labels.shape == (40,)
    for label, colours, present in zip(labels, videos.colours[:, 0], videos.present[:, 0]):
        assert table[label] == tuple(sorted(colours[present].tolist()))
    assert len(set(labels.tolist())) > 10  # the videos' colours vary
    # An impossible twin whose ball appears later is labelled by the balls it starts with.
    pairs = make_impossible_pairs(20, seed=1, kinds=["appear"])
    twin_labels = scene_labels(pairs.impossible)
    assert all(len(table[label]) == int(present.sum())
               for label, present in zip(twin_labels, pairs.impossible.present[:, 0]))
    empty = replace(videos, present=np.zeros_like(videos.present))
    with pytest.raises(ValueError, match="video 0 has no ball in its first frame"):
        scene_labels(empty)
    for bad in (0, 7, 2.5, True):
        with pytest.raises(ValueError, match="max_balls must be a whole number in 1..6"):
            scene_sets(bad)


def test_a_scene_label_names_the_balls_by_colour_as_scene_labels_labels_a_video_of_them():
    from videodiff.data import PALETTE_NAMES, scene_label, scene_labels

    videos = make_videos(40, seed=3)
    for label, colours, present in zip(scene_labels(videos), videos.colours[:, 0], videos.present[:, 0]):
        names = [PALETTE_NAMES[int(c)] for c in colours[present]][::-1]       # any order, names or indices
        assert scene_label(names) == label == scene_label(colours[present].tolist())
    assert scene_label([" Blue", "RED"]) == scene_label(["red", "blue"])
    for bad, message in ((["red", "purple"], "unknown ball colour 'purple'"), ([6], "unknown ball colour 6"),
                         (["red", "red"], "1..3 balls of distinct colours"), ([], "1..3 balls"),
                         (["red", "green", "blue", "cyan"], "1..3 balls")):
        with pytest.raises(ValueError, match=message):
            scene_label(bad)
    assert scene_label(["red", "green", "blue", "cyan"], max_balls=4) > 40


def test_a_corrupted_copy_loses_or_repaints_exactly_one_ball_and_draws_what_its_states_say(videos):
    from videodiff.data import CORRUPTIONS, corrupted_copies

    copies, corruption = corrupted_copies(videos, seed=5)
    assert copies.frames.shape == videos.frames.shape and corruption.shape == (len(videos),)
    assert set(corruption.tolist()) == {0, 1}  # both kinds are drawn
    # The states say what is drawn.
    assert np.array_equal(copies.frames, render_videos(copies.positions, copies.radii, copies.colours, copies.present,
                                                       copies.occluders, SIZE))
    for same in ("positions", "velocities", "radii", "occluders", "seeds"):
        assert np.array_equal(getattr(copies, same), getattr(videos, same)), same
    for n in range(len(videos)):
        lost = (copies.present[n] != videos.present[n]).any(axis=0)  # (K,) balls removed
        repainted = (copies.colours[n] != videos.colours[n]).any(axis=0)  # (K,) balls repainted
        assert lost.sum() + repainted.sum() == 1, n  # exactly one ball, one way
        ball = int(np.flatnonzero(lost | repainted)[0])
        assert videos.present[n, :, ball].any()  # a ball of the video
        if CORRUPTIONS[corruption[n]] == "remove":
            assert lost[ball] and not copies.present[n, :, ball].any()
        else:
            assert repainted[ball] and (copies.colours[n, :, ball] == copies.colours[n, 0, ball]).all()
            scene = set(videos.colours[n][videos.present[n]].tolist())
            assert copies.colours[n, 0, ball] not in scene  # a colour no ball of the video has
    # The frames differ where the ball shows (a ball behind the occluder all along may not show).
    differs = (np.abs(copies.frames.astype(int) - videos.frames.astype(int)) > 64).any(axis=(1, 2, 3, 4))
    assert differs.mean() > 0.9
    # Any ball of the video may be the one, for either corruption: every slot is chosen.
    many = make_videos(300, seed=1)
    many_copies, many_corruption = corrupted_copies(many, seed=5)
    chosen = ((many_copies.present != many.present) | (many_copies.colours != many.colours)).any(axis=1).argmax(axis=1)
    for kind in range(len(CORRUPTIONS)):
        assert set(chosen[many_corruption == kind].tolist()) == set(range(many.present.shape[2])), CORRUPTIONS[kind]
    # A video with no ball has nothing to corrupt: it is copied as it is.
    nothing = np.zeros_like(videos.present[:3])
    empty = replace(videos[:3], present=nothing, frames=render_videos(
        videos.positions[:3], videos.radii[:3], videos.colours[:3], nothing, videos.occluders[:3], SIZE))
    assert np.array_equal(corrupted_copies(empty, seed=5)[0].frames, empty.frames)
    assert np.array_equal(corrupted_copies(empty, seed=5)[0].colours, empty.colours)
    again, same_corruption = corrupted_copies(videos, seed=5)
    assert np.array_equal(again.frames, copies.frames) and np.array_equal(same_corruption, corruption)
    assert not np.array_equal(corrupted_copies(videos, seed=6)[0].frames, copies.frames)
