"""videodiff's command line and demo: the documented commands write what they promise (a short
end-to-end rollout on a model trained for a few steps), and every bad request exits 2 with one line."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import videodiff.cli
from toydiff.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from videodiff.cli import main
from videodiff.data import PhysicsVideos
from videodiff.demo import run_demo
from videodiff.dit import video_dit_config
from videodiff.evaluation import AUTOGUIDANCE_OFF_ROW, GUIDANCE_ROWS, evaluation_table, rollout_and_score
from videodiff.interp.ablations import ABLATION_ETA, ABLATION_STEPS
from videodiff.interp.activations import pool_tokens
from videodiff.interp.experiment import pair_windows, quick_probe_config
from videodiff.interp.trajectories import invert_video
from videodiff.pipeline import (
    AUTOGUIDANCE_SCALE, ROLLOUT_ETA, ROLLOUT_SPACING, ROLLOUT_STEPS, VideoDiffusionRunConfig, held_out_videos,
    load_video_diffusion, video_vae_run_config,
)
from videodiff.sampling import HistoryGuidance

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo's quick mode: a VAE and a one-block video DiT trained for 20 steps on 12-frame videos."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("video_demo")
    report = run_demo(out, progress=False, quick=True)
    torch.set_num_threads(threads)
    return out, report


def test_the_quick_demo_writes_its_gif_metrics_and_stage_times(demo_run):
    out, report = demo_run
    for name in ("rollout.gif", "metrics.json", "report.json", "vae/checkpoint.pt", "dit/checkpoint.pt"):
        assert (out / name).exists(), name
    assert all(report[key] >= 0 for key in ("vae_seconds", "dit_seconds", "rollout_seconds"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["position_error_per_frame"]) == 5


def test_rollout_writes_frames_truth_gif_and_metrics(demo_run, tmp_path, capsys):
    out, _ = demo_run
    target = tmp_path / "roll"
    code = main(["rollout", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "3", "--context", "2",
                 "--length", "7", "--guidance", "vanilla", "--scale", "2", "--steps", "4", "--out", str(target)])
    assert code == 0
    frames, truth = np.load(target / "frames.npy"), np.load(target / "truth.npy")
    assert frames.dtype == np.uint8 and frames.shape == (3, 9, 32, 32, 3) and truth.shape == frames.shape
    # The context frames come back as the VAE reconstructs the true ones.
    run = load_video_diffusion(out / "dit" / "checkpoint.pt")
    assert np.array_equal(frames[:, :2], run.decode(run.encode(truth[:, :2])))
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["request"]["guidance"] == "vanilla" and len(metrics["position_error_per_frame"]) == 7
    # Where the frames fail: every generated frame is in one group by ball count and one by gap.
    crowding = metrics["intact_by_crowding"]
    assert sum(group["frames"] for group in crowding["by_balls"].values()) == 3 * 7
    assert sum(group["frames"] for group in crowding["by_gap"].values()) == 3 * 7
    # And how: the faults of every generated frame, over all of them and by ball count.
    faults = metrics["faults"]
    assert faults["all"]["frames"] == 3 * 7 and {"missing", "smeared", "stray colour"} <= set(faults["all"])
    printed = capsys.readouterr().out
    assert "intact by the closest two balls' gap: overlapping" in printed and "why frames fail" in printed
    assert (target / "rollout.gif").stat().st_size > 1000
    # Same seed, same video (on the same device: "auto" is the CPU here).
    again = tmp_path / "again"
    main(["rollout", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "3", "--context", "2",
          "--length", "7", "--guidance", "vanilla", "--scale", "2", "--steps", "4", "--out", str(again),
          "--device", "cpu"])
    assert np.array_equal(np.load(again / "frames.npy"), frames)


def test_data_writes_videos_and_matched_pairs(tmp_path):
    path = tmp_path / "v.npz"
    assert main(["data", "--num-videos", "5", "--seed", "3", "--num-frames", "16", "--out", str(path)]) == 0
    videos = PhysicsVideos.load(path)
    assert videos.frames.shape == (5, 16, 32, 32, 3) and videos.positions.shape[:2] == (5, 16)
    pairs = tmp_path / "p.npz"
    assert main(["data", "--num-videos", "7", "--impossible", "--out", str(pairs)]) == 0
    plausible, impossible = PhysicsVideos.load(pairs), PhysicsVideos.load(tmp_path / "p-impossible.npz")
    table = json.loads((tmp_path / "p-pairs.json").read_text())
    assert len(plausible) == len(impossible) == len(table["kinds"]) == 7
    for index, event in enumerate(table["event_frames"]):
        assert np.array_equal(plausible.frames[index, :event], impossible.frames[index, :event])


@pytest.mark.parametrize("args, message", [
    (["rollout", "--context", "8"], "does not fit the model's window of 4 frames"),
    (["rollout", "--guidance", "sideways"], "invalid choice: 'sideways'"),
    (["rollout", "--length", "0"], "expected a positive integer, got 0"),
    (["rollout", "--eta", "2"], "expected a number in [0, 1], got 2"),
    (["rollout", "--context", "2", "--guidance", "fractional", "--fractional-level", "5000"],
     "fractional_level must be a timestep"),
    (["rollout", "--context", "2", "--guidance", "temporal", "--temporal-windows", "1,2,all"],
     "give one weight per sub-window"),
    (["data", "--num-videos", "2", "--out", "x.txt"], "--out must be a .npz file"),
    (["train", "--logit-std", "0"], "expected a number > 0, got 0"),
    (["train", "--logit-mean", "nan"], "expected a finite number, got nan"),
    (["train", "--timestep-sampling", "beta"], "invalid choice: 'beta'"),
    (["train", "--history-frames", "8"], "--history-frames 8 leaves no frame to learn in a window of 8"),
    (["train", "--history-frames", "quarter"], "expected a number of frames >= 1, 'half' or 'random', got 'quarter'"),
    (["train", "--history-frames", "0"], "expected a number of frames >= 1, 'half' or 'random', got '0'"),
    (["train", "--history-noise", "1000"], "--history-noise is a timestep in 0..999, got 1000"),
    (["train", "--future-level-lag", "100", "--no-shared-future-level"], "this run has --noise-mode diffusion_forcing, "
     "--clean-history 0.9, --no-shared-future-level, --timestep-sampling uniform"),
    (["train", "--future-level-lag", "1000"], "needs a lag below 1000 timesteps"),
    (["train", "--future-level-lag", "100", "--timestep-sampling", "logit_normal"],
     "--shared-future-level, --timestep-sampling logit_normal"),
    (["train", "--future-level-lag", "100", "--clean-frame-loss"], "--timestep-sampling uniform, --clean-frame-loss"),
    (["train", "--future-level-lag", "-1"], "expected an integer >= 0"),
    (["train", "--history-noise", "20", "--clean-history", "0"], "--history-noise 20 noises the clean history"),
    (["train", "--model-history", "0.5", "--history-frames", "random"], "--model-history 0.5 replaces the clean history"),
    (["train", "--model-history", "2"], "expected a number in [0, 1], got 2"),
    (["train", "--corrupt-history", "0.25"], "--corrupt-history 0.25 corrupts the clean history"),
    (["train", "--corrupt-history", "0.25", "--anchor-frame", "--model-history", "0.5"],
     "--corrupt-history 0.25 corrupts the clean history"),
    (["train", "--corrupt-history", "0.25", "--corrupt-end", "--history-frames", "random"],
     "--corrupt-history 0.25 corrupts the clean history"),
    (["train", "--corrupt-history", "1.5", "--anchor-frame"], "expected a number in [0, 1], got 1.5"),
    (["train", "--memory-frames", "2", "--model-history", "0.5"], "--model-history 0.5 does not support --memory-frames"),
    (["train", "--memory-stride", "0"], "expected a positive integer, got 0"),
    (["train", "--width", "200"], "--width 200: the heads of --dit-size tiny are 32 wide, so the width must be a "
                                  "multiple of 32 (e.g. 192)"),
    (["train", "--width", "0"], "expected a positive integer, got 0"),
    (["train", "--depth", "0"], "argument --depth: expected a positive integer, got 0"),
    (["train", "--memory-frames", "-1"], "expected an integer >= 0, got -1"),
    (["train", "--min-balls", "4"], "--min-balls 4: the videos hold at most 3 balls"),
    (["train", "--scene-labels", "--min-balls", "2"],
     "--min-balls 2 leaves out the scenes of fewer balls, whose scene labels would never be trained"),
    (["train", "--scene-labels", "--label-dropout", "1"], "label_dropout must lie in [0, 1), got 1.0"),
    (["train", "--guide-fraction", "1", "--vae", "missing.pt"], "guide_fraction is the share of training"),
])
def test_bad_requests_exit_2_with_one_line(demo_run, tmp_path, capsys, args, message):
    out, _ = demo_run
    if args[0] == "rollout":
        args = [*args, "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--out", str(tmp_path / "r")]
    assert main(args) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error


def test_checkpoints_of_another_layer_or_corrupt_ones_are_refused(demo_run, tmp_path, capsys):
    out, _ = demo_run
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    for checkpoint, message in ((out / "vae" / "checkpoint.pt", "imagediff.vae"), (corrupt, "corrupt.pt")):
        assert main(["rollout", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "r")]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, error
    assert main(["rollout", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_train_commands_train_the_default_recipes(monkeypatch, tmp_path, capsys):
    started = {}

    def stand_in(name, result):
        def train(config, **_):
            started[name] = config
            return result
        return train

    monkeypatch.setattr(videodiff.cli, "train_video_vae",
                        stand_in("vae", SimpleNamespace(seconds=0.0, vae=SimpleNamespace(latent_scale=1.0))))
    monkeypatch.setattr(videodiff.cli, "train_video_diffusion",
                        stand_in("dit", SimpleNamespace(seconds=0.0, history=[])))
    assert main(["train-vae", "--out", str(tmp_path)]) == 0
    assert main(["train", "--out", str(tmp_path)]) == 0
    assert started["vae"] == video_vae_run_config() and started["dit"] == VideoDiffusionRunConfig()
    assert main(["train-vae", "--out", str(tmp_path), "--kl-weight", "0.02"]) == 0
    assert started["vae"].vae.kl_weight == 0.02 and started["vae"].vae.latent_channels == 4
    for bad in ("-0.001", "inf", "nan", "heavy"):
        assert main(["train-vae", "--out", str(tmp_path), "--kl-weight", bad]) == 2
        error = capsys.readouterr().err.strip()
        assert "--kl-weight" in error and len(error.splitlines()) == 1, error
    # The recipe's levers reach the run's config.
    other = "uniform" if VideoDiffusionRunConfig().weighting == "min_snr" else "min_snr"
    assert main(["train", "--out", str(tmp_path), "--weighting", other, "--learning-rate", "0.003"]) == 0
    assert started["dit"].weighting == other and started["dit"].train.learning_rate == 0.003
    assert main(["train", "--out", str(tmp_path), "--train-seed", "7", "--seed", "3"]) == 0
    assert started["dit"].train.seed == 7 and started["dit"].data_seed == 3
    assert main(["train", "--out", str(tmp_path), "--timestep-sampling", "logit_normal", "--logit-mean", "-0.5",
                 "--logit-std", "2"]) == 0
    assert (started["dit"].timestep_sampling, started["dit"].logit_mean, started["dit"].logit_std) == (
        "logit_normal", -0.5, 2.0)
    for flag, shared in (("--shared-future-level", True), ("--no-shared-future-level", False)):
        assert main(["train", "--out", str(tmp_path), flag]) == 0
        assert started["dit"].shared_future_level is shared
    for flag, loss in (("--no-clean-frame-loss", False), ("--clean-frame-loss", True)):
        assert main(["train", "--out", str(tmp_path), flag]) == 0
        assert started["dit"].clean_frame_loss is loss
    assert main(["train", "--out", str(tmp_path), "--whole-window", "0.05"]) == 0
    assert started["dit"].whole_window_probability == 0.05 and VideoDiffusionRunConfig().whole_window_probability == 0
    for bad, expected in ((["--whole-window", "0.2"], "at most 0.1"),
                          (["--whole-window", "0.1", "--noise-mode", "full_sequence"], "diffusion_forcing"),
                          (["--whole-window", "0.1", "--anchor-frame"], "never draws")):
        assert main(["train", "--out", str(tmp_path), *bad]) == 2
        error = capsys.readouterr().err.strip()
        assert "--whole-window" in error and expected in error and len(error.splitlines()) == 1, error
    for value, stored in (("3", 3), ("random", None), ("half", "half")):
        assert main(["train", "--out", str(tmp_path), "--history-frames", value]) == 0
        assert started["dit"].clean_history_frames == stored
    # Without a clean history there is nothing for the shared level to follow: the option falls away.
    assert main(["train", "--out", str(tmp_path), "--shared-future-level", "--clean-history", "0"]) == 0
    assert started["dit"].shared_future_level is False
    assert main(["train", "--out", str(tmp_path), "--history-noise", "50"]) == 0
    assert started["dit"].history_noise_max == 50
    assert started["dit"].future_level_lag == 0
    assert main(["train", "--out", str(tmp_path), "--future-level-lag", "100"]) == 0
    assert started["dit"].future_level_lag == 100
    assert main(["train", "--out", str(tmp_path), "--model-history", "0.25"]) == 0
    assert started["dit"].model_history_probability == 0.25
    assert main(["train", "--out", str(tmp_path), "--anchor-frame", "--corrupt-history", "0.25"]) == 0
    assert started["dit"].corrupt_history_probability == 0.25 and started["dit"].dit.anchor_frame
    assert not started["dit"].corrupt_history_end
    assert main(["train", "--out", str(tmp_path), "--corrupt-end", "--corrupt-history", "0.5"]) == 0
    assert started["dit"].corrupt_history_end and not started["dit"].dit.anchor_frame
    for value, step in (("0", 0), ("0.3", 2100)):
        assert main(["train", "--out", str(tmp_path), "--guide-fraction", value]) == 0
        assert started["dit"].guide_fraction == float(value) and started["dit"].guide_step() == step
    for value, physics in (("3", {"min_balls": 3}), ("2", {"min_balls": 2}), ("1", {})):
        assert main(["train", "--out", str(tmp_path), "--min-balls", value, "--no-scene-labels"]) == 0
        assert started["dit"].training_physics == physics and started["dit"].physics == {}
    # With scene labels (the default) fewer kinds of scene are refused before any work, naming the way out.
    started.clear()
    assert main(["train", "--out", str(tmp_path), "--min-balls", "2"]) == 2 and not started
    assert "add --no-scene-labels" in capsys.readouterr().err
    # Scene labels (the default) train on every ball count unless told otherwise; without them, on two or three.
    assert main(["train", "--out", str(tmp_path), "--scene-labels", "--label-dropout", "0.2"]) == 0
    assert started["dit"].scene_labels is True and started["dit"].label_dropout == 0.2
    assert started["dit"].dit.label_init_std == 0.02  # the video DiT's label table starts small
    assert started["dit"].training_physics is None and started["dit"].training_physics_fields() == {}
    assert main(["train", "--out", str(tmp_path), "--no-scene-labels"]) == 0
    assert started["dit"].scene_labels is False and started["dit"].training_physics_config().min_balls == 2
    assert main(["train", "--out", str(tmp_path), "--scene-labels"]) == 0
    assert started["dit"].scene_label_dropout() == 0.1
    # An anchor frame is an option of the DiT, off by default.
    assert started["dit"].dit.anchor_frame is False
    assert main(["train", "--out", str(tmp_path), "--anchor-frame"]) == 0
    assert started["dit"].dit.anchor_frame is True and started["dit"].dit.input_frames == 9
    # So are memory frames: none by default, M of them S frames apart on request, a witness for a corrupted history.
    assert main(["train", "--out", str(tmp_path)]) == 0
    assert started["dit"].dit.memory_frames == 0
    assert main(["train", "--out", str(tmp_path), "--memory-frames", "2", "--memory-stride", "3"]) == 0
    assert (started["dit"].dit.memory_frames, started["dit"].dit.memory_stride, started["dit"].dit.input_frames) == (2, 3, 10)
    assert main(["train", "--out", str(tmp_path), "--memory-frames", "1", "--corrupt-history", "0.25"]) == 0
    assert started["dit"].corrupt_history_probability == 0.25 and not started["dit"].corrupt_history_end
    # --width widens the size's model, its heads keeping the size's head dimension. Unless asked: the recipe's
    # width for the recipe's size (the registry's tiny is 128 wide: 4 heads of 32), the size's own for another.
    assert (started["dit"].dit.hidden_dim, started["dit"].dit.num_heads) == (192, 6)
    assert main(["train", "--out", str(tmp_path), "--dit-size", "small"]) == 0
    assert (started["dit"].dit.hidden_dim, started["dit"].dit.num_heads) == (384, 6)
    assert main(["train", "--out", str(tmp_path), "--width", "256"]) == 0
    assert (started["dit"].dit.hidden_dim, started["dit"].dit.num_heads, started["dit"].dit.depth) == (256, 8, 4)
    assert main(["train", "--out", str(tmp_path), "--width", "192", "--memory-frames", "1"]) == 0
    widened_dit = started["dit"].dit
    assert (widened_dit.hidden_dim, widened_dit.num_heads, widened_dit.memory_frames) == (192, 6, 1)
    # --depth sets the number of blocks, of the recipe's width unless --width says otherwise.
    assert started["dit"].dit.depth == 4
    assert main(["train", "--out", str(tmp_path), "--depth", "8"]) == 0
    assert (started["dit"].dit.depth, started["dit"].dit.hidden_dim) == (8, 192)
    assert main(["train", "--out", str(tmp_path), "--depth", "6", "--width", "256"]) == 0
    assert (started["dit"].dit.depth, started["dit"].dit.hidden_dim, started["dit"].dit.num_heads) == (6, 256, 8)
    # Mixed precision: the recipe's "auto" unless asked; --bf16 is short for --precision bf16.
    assert VideoDiffusionRunConfig().train.mixed_precision == "auto"
    for flags, precision in (([], "auto"), (["--precision", "no"], "no"), (["--bf16"], "bf16"),
                             (["--precision", "bf16"], "bf16")):
        assert main(["train", "--out", str(tmp_path), *flags]) == 0
        assert started["dit"].train.mixed_precision == precision


def test_train_records_a_learning_curve_of_the_ema_weights_without_changing_the_run(demo_run, tmp_path, capsys):
    from videodiff.evaluation import CURVE_ETA, CURVE_FIGURES, CURVE_STEPS, learning_curve_point

    out, _ = demo_run
    quick = ["train", "--vae", str(out / "vae" / "checkpoint.pt"), "--window", "4", "--steps", "200",
             "--batch-size", "4", "--num-videos", "8", "--no-compile", "--quiet"]
    assert main([*quick, "--out", str(tmp_path / "curve"), "--evaluate-every", "100", "--evaluate-videos", "3"]) == 0
    printed = capsys.readouterr().out
    curve = json.loads((tmp_path / "curve" / "curve.json").read_text())
    assert [point["step"] for point in curve] == [100, 200]
    assert printed.count("3 held-out videos, 8 generated frames, the model alone") == 2
    for point in curve:
        assert set(CURVE_FIGURES) <= set(point) and point["seconds"] >= 0
        assert all(0 <= point[name] <= 1 for name in ("intact_share", "found_share", "missing"))
    # The last point is the saved EMA weights' own score, the model alone (w = 1) on the same videos.
    run = load_video_diffusion(tmp_path / "curve" / "checkpoint.pt")
    assert learning_curve_point(run, 3, context=3) == {name: curve[-1][name] for name in CURVE_FIGURES}
    # ... scored with the curve's own deterministic sampler, not the rollout default.
    assert (CURVE_STEPS, CURVE_ETA) == (2, 0.0)
    _, _, metrics = rollout_and_score(run, 3, 3, 8, HistoryGuidance("none"), guide_scale=1.0, num_steps=2, eta=0.0)
    assert curve[-1]["position_error_first"] == metrics["position_error_first"]
    assert curve[-1]["intact_share"] == metrics["intact_share"]
    # Scoring leaves the training as it was: the same weights as a run without a curve.
    assert main([*quick, "--out", str(tmp_path / "plain")]) == 0
    with_curve = load_checkpoint(tmp_path / "curve" / "checkpoint.pt")["ema"]["model"]
    plain = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")["ema"]["model"]
    assert all(torch.equal(with_curve[name], plain[name]) for name in plain)
    assert not (tmp_path / "plain" / "curve.json").exists()
    capsys.readouterr()
    assert main([*quick, "--out", str(tmp_path / "odd"), "--evaluate-every", "150"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--evaluate-every 150 must be a multiple of the log interval, 100 steps" in error
    assert len(error.splitlines()) == 1


def test_a_run_started_from_a_checkpoint_begins_at_its_ema_weights(demo_run, tmp_path):
    from videodiff.pipeline import quick_run_configs, train_video_diffusion

    out, _ = demo_run
    start = load_checkpoint(out / "dit" / "checkpoint.pt")["ema"]["model"]
    _, config = quick_run_configs(str(out / "vae" / "checkpoint.pt"))
    config.train = replace(config.train, steps=1, learning_rate=1e-9, warmup_steps=1)
    fresh = train_video_diffusion(config).model.state_dict()
    config.init_checkpoint = str(out / "dit" / "checkpoint.pt")
    started = train_video_diffusion(config).model.state_dict()
    # One step at a vanishing learning rate: the weights are the checkpoint's, not a fresh draw.
    assert all(torch.allclose(started[name], start[name], atol=1e-6) for name in start)
    assert not all(torch.allclose(fresh[name], start[name], atol=1e-3) for name in start)
    # A checkpoint of another shape, or none, is refused with one line.
    config.dit = replace(config.dit, hidden_dim=64)
    with pytest.raises(CheckpointError, match="holds a video DiT of another shape than this run's"):
        train_video_diffusion(config)
    assert main(["train", "--init", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "d")]) == 2
    # A fine-tuning run that resumes from its own checkpoint no longer needs the one it started from.
    config.dit = replace(config.dit, hidden_dim=48)
    # A scene-labelled checkpoint does not start an unlabelled run: the one line says which option to pass.
    with pytest.raises(CheckpointError, match="trained with scene labels and this run is not: train with --scene-lab"):
        train_video_diffusion(replace(config, scene_labels=False))
    base = tmp_path / "base.pt"
    base.write_bytes((out / "dit" / "checkpoint.pt").read_bytes())
    config.init_checkpoint = str(base)
    train_video_diffusion(config, out_dir=tmp_path / "tuned")
    base.unlink()
    config.train = replace(config.train, steps=2)
    assert train_video_diffusion(config, out_dir=tmp_path / "tuned").history[-1]["step"] == 2


def test_the_runs_timestep_sampling_reaches_its_objective(demo_run, objective_options):
    import videodiff.pipeline
    from videodiff.pipeline import quick_run_configs, train_video_diffusion

    _, config = quick_run_configs(str(demo_run[0] / "vae" / "checkpoint.pt"))
    config.timestep_sampling, config.logit_mean, config.logit_std = "logit_normal", 0.7, 1.3
    config.shared_future_level = not config.shared_future_level
    options = objective_options(videodiff.pipeline, "VideoDiffusionObjective", train_video_diffusion, config)
    assert (options["timestep_sampling"], options["logit_mean"], options["logit_std"]) == ("logit_normal", 0.7, 1.3)
    assert options["shared_future_level"] == config.shared_future_level
    config.history_noise_max, config.model_history_probability = 30, 0.5
    options = objective_options(videodiff.pipeline, "VideoDiffusionObjective", train_video_diffusion, config)
    assert options["history_noise_max"] == 30 and options["model_history_probability"] == 0.5
    config.history_noise_max, config.model_history_probability, config.corrupt_history_probability = 0, 0.0, 0.3
    config.dit = replace(config.dit, anchor_frame=True)
    options = objective_options(videodiff.pipeline, "VideoDiffusionObjective", train_video_diffusion, config)
    assert options["corrupt_history_probability"] == 0.3 and options["anchor_frame"] is True
    assert options["corrupt_history_end"] is False
    config.corrupt_history_end = True
    assert objective_options(videodiff.pipeline, "VideoDiffusionObjective", train_video_diffusion,
                             config)["corrupt_history_end"] is True
    # The recipe's "half" reaches the objective as a number of frames: half the quick window of 4.
    assert config.clean_history_frames == "half" and options["clean_history_frames"] == 2
    assert options["future_level_lag"] == 0
    config.future_level_lag = 100
    assert objective_options(videodiff.pipeline, "VideoDiffusionObjective", train_video_diffusion,
                             config)["future_level_lag"] == 100
    assert options["whole_window_probability"] == 0.0
    config.whole_window_probability = 0.05
    assert objective_options(videodiff.pipeline, "VideoDiffusionObjective", train_video_diffusion,
                             config)["whole_window_probability"] == 0.05


def test_help_lists_the_commands():
    completed = subprocess.run([sys.executable, "-m", "videodiff", "--help"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0
    for command in ("data", "train-vae", "train", "rollout", "evaluate", "probe", "ablate", "demo"):
        assert command in completed.stdout
    assert Path(videodiff.cli.__file__).exists()


def test_probe_writes_the_figures_json_and_refittable_features(demo_run, tmp_path, capsys):
    out, _ = demo_run
    target = tmp_path / "probe"
    assert main(["probe", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--quick", "--out", str(target)]) == 0
    result = json.loads((target / "probe.json").read_text())
    for key in ("site", "block", "noise_level", "per_video_accuracy", "pairwise_accuracy", "auroc"):
        assert key in result["best"]
    for key in ("vae_latent_baseline", "random_init_baseline", "x_t_baseline"):
        assert 0 <= result[key]["per_video_accuracy"] <= 1
    permutations = result["permutation"]["num_permutations"]
    assert 1 / (1 + permutations) <= result["permutation_p_value"] <= 1
    assert set(result["leave_one_type_out"]) == set(result["kinds"]) == set(result["best"]["per_kind_accuracy"])
    assert set(result["inversion_steps"]) == {"1", "2"} and set(result["intervention"]) == {"0"}
    for name in ("probe_heatmaps.png", "probe_sweeps.png"):
        assert (target / name).stat().st_size > 1000
    # features.npz: one array per (site, block, level) of the heatmap, rows aligned with labels and pairs.
    features = np.load(target / "features.npz")
    labels, pair_ids = features["labels"], features["pair_ids"]
    assert len(labels) == result["num_videos"] and labels.sum() * 2 == len(labels)
    for pair in np.unique(pair_ids):
        assert sorted(labels[pair_ids == pair].tolist()) == [0, 1]
    for site in result["config"]["sites"]:
        for level in result["heatmap"]["levels"]:
            assert features[f"{site}_block0_level{level}"].shape == (len(labels), 48)
    assert features["vae_latent_block0_level0"].shape[0] == len(labels)
    assert "per-video accuracy" in capsys.readouterr().out
    # By default the inversion holds the history the run trained with clean, and the stored features are
    # those of that trajectory: one video's pooled block-0 state, recomputed, matches features.npz.
    run = load_video_diffusion(out / "dit" / "checkpoint.pt")
    held = run.config.history_frames()
    assert held and result["history_frames"] == held
    config = replace(quick_probe_config(), **{key: result["config"][key] for key in ("pool", "frames_before_event")})
    latents = run.encode(pair_windows(run, config).frames[:2])
    level = result["heatmap"]["levels"][-1]
    for history in (held, 0):
        trajectory = invert_video(run.model, latents, run.schedule, num_steps=config.inversion_steps,
                                  prediction_type=run.config.prediction_type, names=["resid_post"], layers=[0],
                                  select=pool_tokens, levels=[level], history_frames=history)
        recomputed = trajectory.caches[level]["resid_post", 0].numpy()
        stored = features[f"resid_post_block0_level{level}"][:2]
        assert np.allclose(recomputed, stored, atol=1e-4) == (history == held)


def test_probe_per_frame_pools_each_frame_and_projects_the_frames_together(demo_run, tmp_path):
    out, _ = demo_run
    target = tmp_path / "probe"
    checkpoint = out / "dit" / "checkpoint.pt"
    assert main(["probe", "--checkpoint", str(checkpoint), "--quick", "--pool", "per_frame", "--out", str(target)]) == 0
    result = json.loads((target / "probe.json").read_text())
    assert result["config"]["pool"] == "per_frame"
    run = load_video_diffusion(checkpoint)
    width = min(run.window * run.model.config.hidden_dim, result["config"]["projection_dim"])
    features = np.load(target / "features.npz")
    level = result["heatmap"]["levels"][0]
    assert features[f"resid_post_block0_level{level}"].shape == (result["num_videos"], width)


@pytest.mark.parametrize("args, message", [
    (["probe", "--num-pairs", "4"], "--num-pairs must be at least 10"),
    (["probe", "--pool", "middle"], "invalid choice: 'middle'"),
    (["probe", "--steps", "0"], "expected a positive integer, got 0"),
    (["probe", "--history-frames", "4"], "history_frames must leave a frame of the model's window of 4"),
    (["probe", "--history-frames", "-1"], "expected an integer >= 0, got -1"),
    (["ablate", "--context", "9"], "does not fit the model's window of 4 frames"),
])
def test_probe_and_ablate_refuse_bad_requests_with_one_line(demo_run, tmp_path, capsys, args, message):
    out, _ = demo_run
    assert main([*args, "--checkpoint", str(out / "dit" / "checkpoint.pt")]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1, error


def test_ablate_rolls_out_deterministically_unless_told_otherwise(demo_run, monkeypatch):
    import videodiff.pipeline

    out, _ = demo_run
    seen, real_rollout = [], videodiff.pipeline.rollout

    def spy(*args, **options):
        seen.append((options["num_steps"], options["eta"]))
        return real_rollout(*args, **options)

    monkeypatch.setattr(videodiff.pipeline, "rollout", spy)
    arguments = ["ablate", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "1", "--context", "2",
                 "--length", "2"]
    assert main(arguments) == 0
    assert (ABLATION_STEPS, ABLATION_ETA) == (2, 0.0)
    assert seen and set(seen) == {(2, 0.0), (1, 0.0)}          # the "one denoising step" row takes 1
    seen.clear()
    assert main(arguments + ["--steps", "3", "--eta", "1"]) == 0
    assert set(seen) == {(3, 1.0), (1, 1.0)}


def test_ablate_prints_one_row_per_ablation_and_copying_the_last_frame_does_not_move(demo_run, tmp_path, capsys):
    out, _ = demo_run
    table_file = tmp_path / "ablations.json"
    assert main(["ablate", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "3", "--context", "2",
                 "--length", "4", "--steps", "2", "--out", str(table_file)]) == 0
    table = {row["ablation"]: row for row in json.loads(table_file.read_text())}
    assert "skip block 0" in table and "noise into block 0 (α = 0.5)" in table
    frozen = table["skip the DiT (copy the last real frame)"]
    assert frozen["motion_ratio"] in (None, 0.0) or frozen["motion_ratio"] < 1e-6


def test_rollout_passes_the_sampler_through(demo_run):
    out, _ = demo_run
    run = load_video_diffusion(out / "dit" / "checkpoint.pt")
    context = run.decode(run.encode(np.zeros((2, 2, 32, 32, 3), np.uint8)))
    deterministic = run.rollout(context, 3, num_steps=4, sampler="ddim", eta=0.0)
    # η = 1 draws fresh noise at every step, so the frames differ; "ddpm" is that same step.
    stochastic = run.rollout(context, 3, num_steps=4, eta=1.0)
    assert not np.array_equal(stochastic, deterministic)
    assert np.array_equal(run.rollout(context, 3, num_steps=4, sampler="ddpm"), stochastic)
    halfway = run.rollout(context, 3, num_steps=4, eta=0.5)
    assert np.array_equal(halfway, run.rollout(context, 3, num_steps=4, eta=0.5))
    assert not np.array_equal(halfway, stochastic) and not np.array_equal(halfway, deterministic)


def test_the_default_rollout_takes_ten_steps_with_fresh_noise(demo_run):
    """The default sampler (ROLLOUT_STEPS DDIM steps at η = ROLLOUT_ETA) is the 10-step DDPM sampler, bit for bit."""
    out, _ = demo_run
    run = load_video_diffusion(out / "dit" / "checkpoint.pt")
    context = run.decode(run.encode(np.zeros((2, 2, 32, 32, 3), np.uint8)))
    assert (ROLLOUT_STEPS, ROLLOUT_ETA) == (10, 1.0)
    default = run.rollout(context, 3)
    assert np.array_equal(default, run.rollout(context, 3, num_steps=10, sampler="ddpm"))
    assert not np.array_equal(default, run.rollout(context, 3, num_steps=10, eta=0.0))
    assert not np.array_equal(default, run.rollout(context, 3, num_steps=2, eta=1.0))


def test_the_rollout_command_defaults_to_the_library_sampler(demo_run, tmp_path):
    out, _ = demo_run
    arguments = ["rollout", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "2", "--context", "2",
                 "--length", "3", "--out"]
    assert main(arguments + [str(tmp_path / "default")]) == 0
    assert main(arguments + [str(tmp_path / "explicit"), "--steps", "10", "--eta", "1"]) == 0
    assert main(arguments + [str(tmp_path / "deterministic"), "--eta", "0"]) == 0
    default = np.load(tmp_path / "default" / "frames.npy")
    assert np.array_equal(default, np.load(tmp_path / "explicit" / "frames.npy"))
    assert not np.array_equal(default, np.load(tmp_path / "deterministic" / "frames.npy"))
    request = json.loads((tmp_path / "default" / "metrics.json").read_text())["request"]
    assert (request["steps"], request["eta"]) == (ROLLOUT_STEPS, ROLLOUT_ETA)


def test_the_rollout_visits_the_timesteps_its_spacing_gives(demo_run, tmp_path, monkeypatch):
    """``spacing`` reaches every window's timesteps: the default is the trailing ladder (999 ... 99 for 10 steps), and
    "linspace" (999 ... 0) draws other frames; the command passes --spacing through and records it; an unknown spacing
    is refused before any window is drawn."""
    import videodiff.sampling

    out, _ = demo_run
    run = load_video_diffusion(out / "dit" / "checkpoint.pt")
    context = run.decode(run.encode(np.zeros((2, 2, 32, 32, 3), np.uint8)))
    assert ROLLOUT_SPACING == "trailing"
    seen, original = [], videodiff.sampling.sample_window

    def spy(denoiser, x, context, schedule, timesteps, **options):
        seen.append(sorted({int(t) for t in timesteps[:, -1].tolist()}, reverse=True))
        return original(denoiser, x, context, schedule, timesteps, **options)

    default = run.rollout(context, 3, num_steps=4, eta=0.0)
    monkeypatch.setattr(videodiff.sampling, "sample_window", spy)
    assert np.array_equal(run.rollout(context, 3, num_steps=4, eta=0.0, spacing="trailing"), default)
    trailing = seen[-1]
    spaced = run.rollout(context, 3, num_steps=4, eta=0.0, spacing="linspace")
    linspace = seen[-1]
    assert trailing == [999, 749, 499, 249, -1] and linspace == [999, 666, 333, 0, -1]
    assert not np.array_equal(spaced, default)
    with pytest.raises(ValueError, match="unknown timestep spacing 'even'; expected one of leading, trailing"):
        run.rollout(context, 3, spacing="even")

    arguments = ["rollout", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "2", "--context", "2",
                 "--length", "3", "--steps", "4", "--eta", "0", "--out"]
    assert main(arguments + [str(tmp_path / "linspace"), "--spacing", "linspace"]) == 0
    request = json.loads((tmp_path / "linspace" / "metrics.json").read_text())["request"]
    assert request["spacing"] == "linspace"
    assert main(arguments + [str(tmp_path / "default")]) == 0
    assert json.loads((tmp_path / "default" / "metrics.json").read_text())["request"]["spacing"] == ROLLOUT_SPACING
    assert not np.array_equal(np.load(tmp_path / "linspace" / "frames.npy"),
                              np.load(tmp_path / "default" / "frames.npy"))


def test_rollout_command_passes_eta_through(demo_run, tmp_path):
    out, _ = demo_run
    frames = {}
    for eta in ("0", "1"):
        main(["rollout", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "2", "--context", "2",
              "--length", "3", "--steps", "4", "--eta", eta, "--out", str(tmp_path / eta)])
        frames[eta] = np.load(tmp_path / eta / "frames.npy")
    assert not np.array_equal(frames["0"], frames["1"])


def test_evaluate_writes_every_guidance_row_and_the_reference_rows(demo_run, tmp_path, capsys):
    out, _ = demo_run
    target = tmp_path / "table.json"
    assert main(["evaluate", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "2", "--context", "2",
                 "--length", "3", "--steps", "2", "--out", str(target)]) == 0
    rows = json.loads(target.read_text())
    names = [row["guidance"] for row in rows]
    assert names[-2:] == ["truth through the VAE", "frozen last frame"]
    assert [row.get("reference", False) for row in rows] == [False] * (len(rows) - 2) + [True, True]
    assert rows[-1]["motion_ratio"] in (0.0, None)  # a frozen video does not move (None: no ball tracked)
    assert "reference rows" in capsys.readouterr().out


def test_evaluate_rolls_out_along_the_requested_scheduling_matrix_eta_and_spacing(demo_run, tmp_path, monkeypatch):
    import videodiff.evaluation

    out, _ = demo_run
    seen, original = [], videodiff.evaluation.rollout_and_score

    def spy(*args, **options):
        seen.append((options["scheduling"], options["num_steps"], options["eta"], options["spacing"]))
        return original(*args, **options)

    monkeypatch.setattr(videodiff.evaluation, "rollout_and_score", spy)
    assert main(["evaluate", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "2", "--context", "2",
                 "--length", "2", "--steps", "2", "--scheduling", "full_sequence"]) == 0
    assert seen and set(seen) == {("full_sequence", 2, ROLLOUT_ETA, ROLLOUT_SPACING)}
    seen.clear()
    assert main(["evaluate", "--checkpoint", str(out / "dit" / "checkpoint.pt"), "--num-videos", "2", "--context", "2",
                 "--length", "2", "--steps", "3", "--eta", "0", "--spacing", "leading"]) == 0
    assert seen and set(seen) == {("full_sequence", 3, 0.0, "leading")}


def test_rollout_and_evaluate_pass_the_label_scale_and_an_unlabelled_run_refuses_it(demo_run, tmp_path, monkeypatch,
                                                                                   capsys):
    import videodiff.evaluation

    out, _ = demo_run
    checkpoint = str(out / "dit" / "checkpoint.pt")
    seen, original = [], videodiff.evaluation.rollout_and_score

    def spy(*args, **options):
        seen.append((options.get("label_scale", 1.0), options["guide_scale"]))
        return original(*args, **options)

    monkeypatch.setattr(videodiff.evaluation, "rollout_and_score", spy)
    monkeypatch.setattr(videodiff.cli, "rollout_and_score", spy)
    assert main(["rollout", "--checkpoint", checkpoint, "--num-videos", "2", "--context", "2", "--length", "2",
                 "--steps", "2", "--label-scale", "2.5", "--out", str(tmp_path / "roll")]) == 0
    assert seen == [(2.5, AUTOGUIDANCE_SCALE)]
    assert json.loads((tmp_path / "roll" / "metrics.json").read_text())["request"]["label_scale"] == 2.5
    seen.clear()
    assert main(["evaluate", "--checkpoint", checkpoint, "--num-videos", "2", "--context", "2", "--length", "2",
                 "--steps", "2", "--label-scale", "2.5"]) == 0
    # Every guided row with the label scale; the last row is the model alone, neither guidance.
    assert seen[:-1] and set(seen[:-1]) == {(2.5, AUTOGUIDANCE_SCALE)} and seen[-1] == (1.0, 1.0)
    assert "guidance by the scene label s = 2.5; the last row is the model alone" in capsys.readouterr().out
    # A run trained without scene labels has no label to guide by: one line, exit 2.
    unlabelled = load_video_diffusion(checkpoint)
    unlabelled.config = replace(unlabelled.config, scene_labels=False)
    monkeypatch.setattr(videodiff.cli, "load_video_diffusion", lambda *args, **kwargs: unlabelled)
    for command in ("rollout", "evaluate"):
        assert main([command, "--checkpoint", checkpoint, "--context", "2", "--label-scale", "2"]) == 2
        error = capsys.readouterr().err
        assert "--label-scale 2 needs a run trained with scene labels" in error and "Traceback" not in error


def test_sample_makes_videos_from_nothing_of_the_balls_asked_for(demo_run, tmp_path, monkeypatch, capsys):
    import videodiff.pipeline
    from videodiff.data import scene_label, scene_labels

    out, _ = demo_run
    checkpoint = str(out / "dit" / "checkpoint.pt")
    seen, original = [], videodiff.pipeline.rollout

    def spy(denoiser, context, length, *args, **options):
        seen.append((tuple(context.shape), length))
        return original(denoiser, context, length, *args, **options)

    monkeypatch.setattr(videodiff.pipeline, "rollout", spy)
    given, real_denoiser = [], videodiff.pipeline.VideoDiffusionModel.denoiser

    def recording(self, guide_scale=1.0, labels=None, label_scale=1.0):
        given.append(None if labels is None else torch.as_tensor(labels).tolist())
        return real_denoiser(self, guide_scale, labels, label_scale)

    monkeypatch.setattr(videodiff.pipeline.VideoDiffusionModel, "denoiser", recording)
    target = tmp_path / "red_blue"
    assert main(["sample", "--checkpoint", checkpoint, "--num-videos", "3", "--length", "6", "--steps", "2",
                 "--balls", "Red, blue", "--out", str(target)]) == 0
    run = load_video_diffusion(checkpoint)
    latent = (run.model.config.in_channels, *run.model.config.input_size)
    assert seen == [((3, 0, *latent), 6)]                      # no real frame: the rollout starts from nothing
    assert given and all(labels == [7, 7, 7] for labels in given)   # the model is told the scene asked for
    frames = np.load(target / "frames.npy")
    assert frames.dtype == np.uint8 and frames.shape == (3, 6, 32, 32, 3)
    assert (target / "samples.gif").stat().st_size > 1000
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["request"]["balls"] == ["red", "blue"] and metrics["request"]["labels"] == [7, 7, 7]
    assert scene_label(["red", "blue"]) == 7
    judged = metrics["drawn_as_asked"]
    assert len(judged["share_per_frame"]) == 6 and 0 <= judged["share"] <= 1 and "share" in metrics["reference"]
    assert "frames that hold the balls asked for" in capsys.readouterr().out
    # The same seed draws the same videos; a shorter video is the start of a longer one.
    with torch.no_grad():
        made = run.generate(6, labels=[7, 7, 7], num_steps=2)
        assert np.array_equal(made, frames)
        # (The same latents; the VAE decodes 4 frames a video instead of 6, and its products' last bits move a
        # pixel's value by 1 here and there.)
        shorter = run.generate(4, labels=[7, 7, 7], num_steps=2).astype(int)
        assert np.abs(shorter - frames[:, :4]).max() <= 1 and (shorter != frames[:, :4]).mean() < 1e-3
    # Without --balls, the scenes of the held-out videos.
    assert main(["sample", "--checkpoint", checkpoint, "--num-videos", "2", "--length", "3", "--steps", "2",
                 "--out", str(tmp_path / "held_out")]) == 0
    labels = json.loads((tmp_path / "held_out" / "metrics.json").read_text())["request"]["labels"]
    assert labels == scene_labels(held_out_videos(run.config, 2, num_frames=3)).tolist()
    # Bad requests: one line, exit 2.
    for balls, message in (("red,purple", "unknown ball colour 'purple'"), ("red,red", "distinct colours"),
                           ("red,green,blue,cyan", "1..3 balls"), ("red,,blue", "colour names separated by commas")):
        assert main(["sample", "--checkpoint", checkpoint, "--balls", balls, "--out", str(tmp_path / "bad")]) == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
    with pytest.raises(ValueError, match="num_videos=2 but 3 labels"):
        run.generate(4, 2, labels=[7, 7, 7])
    remembering = load_video_diffusion(checkpoint)
    remembering.model.config = replace(remembering.model.config, memory_frames=2)
    with pytest.raises(ValueError, match="reads earlier frames of the video .* cannot make a video from nothing"):
        remembering.generate(4, labels=[7, 7, 7])
    # One frame: the held-out videos behind the scenes and the reference still have the two frames a video needs.
    assert main(["sample", "--checkpoint", checkpoint, "--num-videos", "2", "--length", "1", "--steps", "2",
                 "--out", str(tmp_path / "one")]) == 0
    assert np.load(tmp_path / "one" / "frames.npy").shape == (2, 1, 32, 32, 3)
    with pytest.raises(ValueError, match="use generate"):
        run.rollout(frames[:, :0], 4)
    unlabelled = load_video_diffusion(checkpoint)
    unlabelled.config = replace(unlabelled.config, scene_labels=False)
    monkeypatch.setattr(videodiff.cli, "load_video_diffusion", lambda *args, **kwargs: unlabelled)
    assert main(["sample", "--checkpoint", checkpoint, "--balls", "red", "--out", str(tmp_path / "bad")]) == 2
    assert "--balls needs a run trained with scene labels" in capsys.readouterr().err


def test_history_length_is_resolved_against_the_window():
    recipe = VideoDiffusionRunConfig()
    assert recipe.clean_history_frames == "half" and recipe.history_frames() == recipe.dit.num_frames // 2 == 4
    assert replace(recipe, dit=video_dit_config("tiny", num_frames=6)).history_frames() == 3
    assert replace(recipe, clean_history_frames=5).history_frames() == 5
    assert replace(recipe, clean_history_frames=None).history_frames() is None              # random lengths
    assert replace(recipe, clean_history_probability=0.0).history_frames() is None           # no clean histories
    assert replace(recipe, noise_mode="full_sequence").history_frames() is None
    for bad in (8, 0, "quarter", True):
        with pytest.raises(ValueError, match=r"clean_history_frames must be 'half', None or a number of frames in 1\.\.7"):
            replace(recipe, clean_history_frames=bad).history_frames()
    # A run stored before the option existed drew random lengths, and is read back that way.
    stored = recipe.to_dict()
    del stored["clean_history_frames"]
    assert VideoDiffusionRunConfig.from_dict(stored).history_frames() is None
    # One stored before the MLP's activation was an option used the tanh GELU.
    del stored["dit"]["mlp_activation"]
    assert VideoDiffusionRunConfig.from_dict(stored).dit.mlp_activation == "gelu_tanh"
    assert VideoDiffusionRunConfig.from_dict(recipe.to_dict()).dit.mlp_activation == "gelu"


def test_a_rollout_keeps_the_history_its_model_was_trained_with(demo_run, monkeypatch):
    import videodiff.pipeline

    run = load_video_diffusion(demo_run[0] / "dit" / "checkpoint.pt")
    seen = []
    real_rollout = videodiff.pipeline.rollout

    def spy(*args, **options):
        seen.append((options["frames_per_window"], options["kind"], options["num_steps"]))
        return real_rollout(*args, **options)

    monkeypatch.setattr(videodiff.pipeline, "rollout", spy)
    context = held_out_videos(run.config, 2, num_frames=3).frames
    assert run.config.history_frames() == 2 and run.window == 4
    assert run.rollout(context[:, :1], 3).shape[1] == 4
    assert run.rollout(context, 3, new_frames=1).shape[1] == 6
    run.config = replace(run.config, clean_history_frames=None)   # a model trained with random lengths
    run.rollout(context, 3)
    assert seen == [(2, "full_sequence", ROLLOUT_STEPS), (1, "full_sequence", ROLLOUT_STEPS),
                    (None, "full_sequence", ROLLOUT_STEPS)]


def test_label_guidance_is_toydiffs_classifier_free_guidance_on_top_of_autoguidance(demo_run):
    out, _ = demo_run
    run = load_video_diffusion(out / "dit" / "checkpoint.pt")
    assert run.config.scene_labels and run.guide is not None
    # 20 steps barely move the label table from its small start: give it rows that tell the labels apart.
    with torch.no_grad():
        run.model.label_embedding.weight.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(0))
    videos = held_out_videos(run.config, 2, num_frames=4)
    latents, labels = run.encode(videos.frames), torch.tensor([3, 17])     # two videos, two scenes
    null = torch.full_like(labels, run.model.null_label)
    assert torch.equal(run.check_labels(run.check_labels([3, 17], 2), 2), labels)   # a checked tensor passes again
    t = torch.tensor([[0, 0, 500, 500], [0, 300, 300, 900]])
    with torch.no_grad():
        cond, uncond = run.model(latents, t, labels=labels), run.model(latents, t, labels=null)
        weak = run.guide(latents, t, labels=labels)
        assert not torch.allclose(cond, uncond, atol=1e-3)   # the label matters to this model
        # s = 1 is the labelled model exactly (the null branch never called); s = 3 is c + 2 (c - u), toydiff's
        # convention; autoguidance w = 2 adds (w - 1)(c - weak) on top, as the image layer's guidance does.
        assert torch.equal(run.denoiser(1.0, labels, 1.0)(latents, t), cond)
        assert torch.allclose(run.denoiser(1.0, labels, 3.0)(latents, t), cond + 2 * (cond - uncond), atol=1e-5)
        both = cond + 2 * (cond - uncond) + (cond - weak)
        assert torch.allclose(run.denoiser(2.0, labels, 3.0)(latents, t), both, atol=1e-5)
        # History guidance stacks its branches along the batch: each branch's videos keep their own labels.
        other = torch.randn_like(latents)
        stacked = run.denoiser(2.0, labels, 3.0)(torch.cat([latents, other]), torch.cat([t, t]))
        assert torch.allclose(stacked[:2], both, atol=1e-5)
        assert torch.allclose(stacked[2:], run.denoiser(2.0, labels, 3.0)(other, t), atol=1e-5)
    context = videos.frames[:, :2]
    plain = run.rollout(context, 3, num_steps=2, labels=labels)
    assert np.array_equal(run.rollout(context, 3, num_steps=2, labels=labels, label_scale=1.0), plain)
    assert not np.array_equal(run.rollout(context, 3, num_steps=2, labels=labels, label_scale=3.0), plain)
    with pytest.raises(ValueError, match="label guidance scale 2 asked for without scene labels"):
        run.rollout(context, 3, label_scale=2.0)
    with pytest.raises(ValueError, match="label guidance scale must be >= 0"):
        run.denoiser(1.0, labels, -1.0)


def test_the_run_keeps_its_early_ema_as_the_guide_and_rolls_out_autoguided_by_default(demo_run, tmp_path, capsys):
    out, _ = demo_run
    path = out / "dit" / "checkpoint.pt"
    run, state = load_video_diffusion(path), load_checkpoint(path)
    step = run.config.guide_step()
    assert step == round(0.15 * 20) and sorted(state["snapshots"]) == [step]
    assert all(torch.equal(value, state["snapshots"][step][name]) for name, value in run.guide.state_dict().items())
    assert not torch.equal(run.guide.final_layer.linear.weight, run.model.final_layer.linear.weight)
    assert run.default_guide_scale == AUTOGUIDANCE_SCALE
    # Every denoiser call is D + (w - 1)(D - D_weak); w = 1 is the model alone.
    latents = run.encode(held_out_videos(run.config, 2, num_frames=4).frames)
    t = torch.tensor([[0, 0, 500, 500], [0, 300, 300, 900]])
    with torch.no_grad():
        strong, weak = run.model(latents, t), run.guide(latents, t)
        assert torch.allclose(run.denoiser(2.0)(latents, t), strong + (strong - weak), atol=1e-5)
        assert torch.equal(run.denoiser(1.0)(latents, t), strong)
    context = held_out_videos(run.config, 2, num_frames=2).frames
    default = run.rollout(context, 3, num_steps=2)
    assert np.array_equal(default, run.rollout(context, 3, num_steps=2, guide_scale=AUTOGUIDANCE_SCALE))
    assert not np.array_equal(default, run.rollout(context, 3, num_steps=2, guide_scale=1.0))
    # A run stored before guides existed has none: the default is off, and asking for one is refused.
    del state["snapshots"]
    del state["config"]["guide_fraction"]
    save_checkpoint(tmp_path / "old.pt", state)
    old = load_video_diffusion(tmp_path / "old.pt")
    assert old.guide is None and old.default_guide_scale == 1.0 and old.config.guide_fraction == 0.0
    assert np.array_equal(old.rollout(context, 3, num_steps=2), run.rollout(context, 3, num_steps=2, guide_scale=1.0))
    with pytest.raises(ValueError, match="autoguidance scale 2 asked for, but this run kept no guide"):
        old.rollout(context, 3, guide_scale=2.0)
    for command in ("rollout", "evaluate"):
        assert main([command, "--checkpoint", str(tmp_path / "old.pt"), "--autoguidance", "2", "--context", "2",
                     "--length", "2", "--num-videos", "2", "--out", str(tmp_path / "x.json")]) == 2
        error = capsys.readouterr().err.strip()
        assert "--autoguidance 2: this run kept no guide" in error and len(error.splitlines()) == 1, error
    with pytest.raises(ValueError, match=r"guide_fraction is the share of training .* in \[0, 1\)"):
        VideoDiffusionRunConfig(guide_fraction=1.0)


def test_the_table_adds_the_model_alone_when_rollouts_are_autoguided(demo_run):
    run = load_video_diffusion(demo_run[0] / "dit" / "checkpoint.pt")
    options = dict(num_videos=2, context=2, length=3, scale=2.0, stabilization=20, rows=(), num_steps=2)
    assert evaluation_table(run, guide_scale=1.0, **options) == []
    (row,) = evaluation_table(run, **options)  # autoguided by default: the model alone follows as its own row
    _, no_history_guidance, stabilised = GUIDANCE_ROWS[0]
    (alone,) = evaluation_table(run, guide_scale=1.0, **{**options, "rows": ((AUTOGUIDANCE_OFF_ROW, no_history_guidance,
                                                                             stabilised),)})
    assert row == alone
    # Without an η the table's rollouts take the library's (fresh noise at every step, as a rollout does).
    (unguided,) = evaluation_table(run, guide_scale=1.0, **{**options, "rows": GUIDANCE_ROWS[:1]})
    _, _, metrics = rollout_and_score(run, 2, 2, 3, HistoryGuidance("none"), num_steps=2, eta=ROLLOUT_ETA,
                                      guide_scale=1.0)
    assert unguided["position_error_per_frame"] == metrics["position_error_per_frame"]
    _, _, deterministic = rollout_and_score(run, 2, 2, 3, HistoryGuidance("none"), num_steps=2, eta=0.0,
                                            guide_scale=1.0)
    assert unguided["position_error_per_frame"] != deterministic["position_error_per_frame"]


def test_ablations_roll_out_the_model_without_its_guide(demo_run):
    from videodiff.interp.ablations import Ablation, ablation_table
    from videodiff.metrics import physics_metrics

    run = load_video_diffusion(demo_run[0] / "dit" / "checkpoint.pt")
    (row,) = ablation_table(run, [Ablation("none")], num_videos=2, context=2, length=3, num_steps=2)
    truth = held_out_videos(run.config, 2, num_frames=5)
    generated = run.rollout(truth.frames[:, :2], 3, num_steps=2, eta=ABLATION_ETA, guide_scale=1.0,
                            labels=run.labels_for(truth))
    alone = physics_metrics(generated, truth, num_context=2)
    assert row["position_error"] == alone["position_error"] and row["found_share"] == alone["found_share"]
