"""Rollouts scored against the true physics: one rollout, and a table over history guidances.

    generated, truth, metrics = rollout_and_score(run, 32, context=4, length=64, guidance=HistoryGuidance("none"))
    print(format_table(evaluation_table(run, 32, context=4, length=64, scale=2.0, stabilization=20)))
    print(format_table(reference_rows(run, 32, context=4, length=64)))   # what the metrics give non-models
    learning_curve_point(run, 32)    # {"position_error_first": ..., "intact_share": ...}: train --evaluate-every

Used by the command line (rollout, evaluate), the demo, the bench and lesson 10.
"""

from __future__ import annotations

from typing import Optional

from videodiff.metrics import physics_metrics
from videodiff.pipeline import ROLLOUT_SCHEDULING, ROLLOUT_SPACING, ROLLOUT_STEPS, held_out_videos
from videodiff.sampling import HistoryGuidance


def rollout_and_score(run, num_videos: int, context: int, length: int, guidance: HistoryGuidance, **options):
    """Continue ``num_videos`` held-out videos; returns (generated, truth PhysicsVideos, metrics). A run
    trained with scene labels is given each video's (unless ``labels`` is among the options)."""
    truth = held_out_videos(run.config, num_videos, num_frames=context + length)
    options.setdefault("labels", run.labels_for(truth))
    generated = run.rollout(truth.frames[:, :context], length, guidance, **options)
    return generated, truth, physics_metrics(generated, truth, num_context=context)


CURVE_FIGURES = ("position_error_first", "intact_share", "found_share", "missing")
# A learning curve's sampler: 2 deterministic DDIM steps a window (the rollout default until 2026-12-05). With no
# fresh noise, two points of a curve differ by the weights alone, and the curves stay comparable with those
# measured before the default became 10 steps with η = 1 (which also cost five times the calls at every point).
CURVE_STEPS = 2
CURVE_ETA = 0.0


def learning_curve_point(run, num_videos: int = 32, context: int = 4, length: int = 8, seed: int = 0) -> dict:
    """One point of a learning curve (`python -m videodiff train --evaluate-every N`): ``num_videos``
    held-out videos continued by ``length`` frames after ``context`` real ones, no history guidance, CURVE_STEPS
    deterministic DDIM steps, and the model alone (autoguidance w = 1: a run still training has no guide yet, so
    every point of the curve, its last included, is scored the same way). Returns {name: float} for each of
    CURVE_FIGURES: the position error over the first 8 generated frames (px), the intact, found and
    ball-missing shares of the generated frames (videodiff.metrics)."""
    _, _, metrics = rollout_and_score(run, num_videos, context, length, HistoryGuidance("none"), guide_scale=1.0,
                                      num_steps=CURVE_STEPS, eta=CURVE_ETA, seed=seed)
    figures = {"position_error_first": metrics["position_error_first"], "intact_share": metrics["intact_share"],
               "found_share": metrics["found_share"], "missing": metrics["faults"]["all"]["missing"]}
    return {name: None if value is None else float(value) for name, value in figures.items()}


AUTOGUIDANCE_OFF_ROW = "none, autoguidance off"
# The rows of the bench's and lesson 10's table: (name, guidance for a scale, stabilised history?).
GUIDANCE_ROWS = (
    ("none", lambda s: HistoryGuidance("none"), False),
    ("vanilla", lambda s: HistoryGuidance("vanilla", s), False),
    ("fractional", lambda s: HistoryGuidance("fractional", s, fractional_level=500), False),
    ("temporal", lambda s: HistoryGuidance("temporal", s, temporal_windows=(2, None), temporal_weights=(1.0, 1.0)),
     False),
    ("none + stabilised", lambda s: HistoryGuidance("none"), True),
    ("vanilla + stabilised", lambda s: HistoryGuidance("vanilla", s), True),
)


def _table_row(name: str, metrics: dict) -> dict:
    """One row of the table: the name and the metrics it shows."""
    return {"guidance": name, **{key: metrics[key] for key in (
        "position_error_first", "position_error", "found_share", "well_formed_share", "intact_share", "motion_ratio",
        "moves", "position_error_per_frame", "faults")}}


def evaluation_table(run, num_videos: int, context: int, length: int, scale: float, stabilization: int,
                     num_steps: int = ROLLOUT_STEPS, rows=GUIDANCE_ROWS,
                     scheduling: str = ROLLOUT_SCHEDULING, guide_scale: Optional[float] = None,
                     eta: Optional[float] = None, spacing: str = ROLLOUT_SPACING,
                     label_scale: float = 1.0) -> list[dict]:
    """The physics metrics of rollouts under each history guidance, one dict per row; every rollout
    takes ``num_steps`` steps per frame, at the timesteps ``spacing`` gives, along the scheduling matrix
    ``scheduling``, DDIM's η = ``eta`` (default: the rollout's, ROLLOUT_ETA), with autoguidance scale
    ``guide_scale`` (default: the run's, ``run.default_guide_scale``) and guidance by the scene label
    ``label_scale`` (1: the labelled model). When either is not 1 a last row, "none, autoguidance off", shows
    the model alone."""
    guide_scale = run.default_guide_scale if guide_scale is None else guide_scale
    table = []
    for name, make, stabilised in rows:
        _, _, metrics = rollout_and_score(run, num_videos, context, length, make(scale), num_steps=num_steps,
                                          scheduling=scheduling, spacing=spacing, guide_scale=guide_scale, eta=eta,
                                          label_scale=label_scale,
                                          stabilization_level=stabilization if stabilised else 0)
        table.append(_table_row(name, metrics))
    if guide_scale != 1.0 or label_scale != 1.0:
        _, _, metrics = rollout_and_score(run, num_videos, context, length, HistoryGuidance("none"),
                                          num_steps=num_steps, scheduling=scheduling, spacing=spacing, eta=eta,
                                          guide_scale=1.0)
        table.append(_table_row(AUTOGUIDANCE_OFF_ROW, metrics))
    return table


def reference_rows(run, num_videos: int, context: int, length: int) -> list[dict]:
    """The metrics of two continuations no model made, in the table's format, to read the others against.

    "truth through the VAE": the true continuation encoded and decoded by the run's VAE, frame by frame.
    A rollout is decoded by the same VAE, so this is the best any model of these latents can score: its
    position error is the tracker's floor and its well-formed share the ceiling of that target.
    "frozen last frame": the last real context frame repeated, the VAE's reconstruction of it (a model
    that learned no motion): its motion ratio is 0 and its position error grows with the balls' speed.
    """
    truth = held_out_videos(run.config, num_videos, num_frames=context + length)
    through_vae = run.decode(run.encode(truth.frames))  # (N, K + L, H, W, 3) uint8
    frozen = through_vae.copy()
    frozen[:, context:] = through_vae[:, context - 1:context]
    rows = []
    for name, frames in (("truth through the VAE", through_vae), ("frozen last frame", frozen)):
        rows.append(_table_row(name, physics_metrics(frames, truth, num_context=context)))
    return rows


def format_table(table: list[dict]) -> str:
    """The rows of `evaluation_table` as a plain-text table."""
    lines = [f"{'guidance':<22} {'err first 8 (px)':>16} {'err all (px)':>12} {'found':>6} {'well-formed':>11} "
             f"{'intact':>6} {'motion':>7} moves"]
    for row in table:
        def number(key, digits=2):
            value = row[key]
            return "   -" if value is None else f"{value:.{digits}f}"
        lines.append(f"{row['guidance']:<22} {number('position_error_first'):>16} {number('position_error'):>12} "
                     f"{number('found_share'):>6} {number('well_formed_share'):>11} {number('intact_share'):>6} "
                     f"{number('motion_ratio'):>7} "
                     f"{row['moves']}")
    return "\n".join(lines)
