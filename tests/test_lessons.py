"""Every lesson runs to the end in quick mode (LESSON_QUICK=1) and writes its figures.

The lessons run in subprocesses, in order, sharing one temporary output root (LESSON_OUTPUT_DIR): lesson
02 trains the quick spiral model once and lessons 03 and 04 reuse it, as they do for a student; likewise
lesson 05 trains the quick VAE and grader and lesson 06 the quick latent DiT, which lesson 07 reuses;
lesson 08 trains the quick per-frame VAE and lesson 09 the quick video DiT, which lessons 10-12 reuse
(each of them trains the two itself, through lesson_setup, when run alone: ``-k "11_ or 12_"``).
Nothing is written inside the repository.

Each lesson's printed numbers are then read back and checked (``LESSON_CHECKS`` below): numbers that
must equal what the library computes (ᾱ_T of each schedule, the timesteps a spacing visits, a latent
scale that gives unit variance), and comparisons that a wrong library or a wrong lesson would turn
around (DDIM's round trip shrinks with the steps, guidance at s = 1 is the conditional model, trained
beats untrained). Quick mode trains for a few hundred steps only: nothing here asks for the quality
that full mode reaches.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imagediff.pipeline import DiffusionRunConfig
from toydiff.experiment import ToyRunConfig
from toydiff.samplers import sampling_timesteps
from toydiff.schedules import make_schedule
from videodiff.evaluation import GUIDANCE_ROWS
from videodiff.data import IMPOSSIBLE_KINDS, PhysicsConfig
from videodiff.dit import rope_split
from videodiff.interp.heads import uniform_attention_scores
from videodiff.pipeline import VideoDiffusionRunConfig
from videodiff.sampling import scheduling_matrix, timesteps_from_indices

REPO = Path(__file__).resolve().parents[1]

LESSONS = {
    "01_forward_process": ["forward_process.png", "schedules.png", "last_step.png"],
    "02_training_ddpm": ["training_loss.png", "samples.png", "trajectories.png", "ddpm_sampling.gif"],
    "03_ddim_and_inversion": ["quality_vs_steps.png", "time_vs_steps.png", "ddim_steps.png", "score_field.png",
                              "inversion.png"],
    "04_guidance": ["classifier_free_guidance.png", "classifier_guidance.png", "guidance_sweep.png",
                    "guidance_diversity.png", "guided_score_field.png"],
    "05_images_and_the_vae": ["classes.png", "reconstructions.png", "latent_channels.png",
                              "posterior_mean_vs_sample.png", "latent_scale.png", "latent_walk.png"],
    "06_latent_diffusion_with_a_dit": ["patchify.png", "samples_over_training.png", "latent_vs_pixel.png",
                                       "latent_vs_pixel_samples.png"],
    "07_guidance_on_images": ["cfg_grid.png", "classifier_guidance_grid.png", "guidance_accuracy.png",
                              "guidance_frechet_distance.png", "guidance_rescale.png", "steps_and_guidance.png",
                              "own_frame_samples.png", "every_angle_samples.png", "told_the_angle_samples.png",
                              "own_frame_upright_samples.png",
                              "told_the_angle_turned.png", "autoguided_samples.png"],
    "08_physics_videos_and_a_per_frame_vae": ["frames.png", "energy.png", "impossible_twins.png",
                                              "reconstructions.png"],
    "09_video_dit_and_diffusion_forcing": ["noise_levels.png", "scheduling_matrices.png", "training_loss.png",
                                           "prediction_and_interpolation.png", "from_nothing.png"],
    "10_rollouts_and_history_guidance": ["rollout.gif", "rollout_frames.png", "error_over_time.png"],
    "11_looking_inside_the_video_dit": ["attention_per_frame.png", "head_scores.png"],
    "12_the_physics_probe": ["impossible_pairs.png", "probe_heatmaps.png", "probe_sweeps.png"],
}


@pytest.fixture(scope="module")
def output_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lessons")


def run_lesson(name: str, output_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LESSON_QUICK": "1", "LESSON_OUTPUT_DIR": str(output_root), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(REPO / "lessons" / f"{name}.py")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_lesson_files_match_the_list():
    on_disk = sorted(p.stem for p in (REPO / "lessons").glob("[0-9][0-9]_*.py"))
    assert on_disk == list(LESSONS)


@pytest.mark.parametrize("name", list(LESSONS))
def test_lesson_runs_in_quick_mode_and_writes_its_figures(name, output_root):
    source = (REPO / "lessons" / f"{name}.py").read_text()
    assert source.startswith("# %% [markdown]"), "a lesson opens with a markdown cell"
    assert re.search(r"^# Time: +about .+2-core", source, re.MULTILINE), "the header states the run time"

    result = run_lesson(name, output_root)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    folder = output_root / "lessons_quick" / name
    for figure in LESSONS[name]:
        path = folder / figure
        assert path.is_file(), f"{name} did not write {figure}"
        assert path.stat().st_size > 5_000, f"{path} is suspiciously small"
        with Image.open(path) as image:
            assert image.format == ("GIF" if figure.endswith(".gif") else "PNG")
            if image.format == "GIF":
                assert image.n_frames > 5
    # every file the lesson says it wrote is under the output root, never inside the repository
    written = re.findall(r"^wrote (.+)$", result.stdout, re.MULTILINE)
    assert len(written) == len(LESSONS[name])
    assert all(Path(p).resolve().is_relative_to(output_root.resolve()) for p in written)
    # the numbers the lesson prints say what the lesson says they say
    LESSON_CHECKS[name](result.stdout)


# ---------------------------------------------------------------------------------------------
# Reading a lesson's printout
# ---------------------------------------------------------------------------------------------

NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)"


def lines(stdout: str, pattern: str, count: int | None = None) -> list[tuple[str, ...]]:
    """The groups of every line that matches ``pattern`` (NUMBER stands for a number), at least one."""
    found = [m.groups() for m in re.finditer(pattern.replace("NUMBER", NUMBER), stdout, re.MULTILINE)]
    assert found, f"the lesson printed no line matching {pattern!r}"
    if count is not None:
        assert len(found) == count, f"expected {count} lines matching {pattern!r}, found {len(found)}"
    return found


def number(stdout: str, pattern: str) -> float:
    """The one number that ``pattern`` captures (the last such line if several match)."""
    return float(lines(stdout, pattern)[-1][0])


def comparison(text: str) -> dict[str, tuple[float, float]]:
    """Parse toydiff.metrics.format_comparison: {'energy_distance': (value, floor), ...}."""
    pairs = re.findall(rf"(\w+) {NUMBER} \(floor {NUMBER}\)", text)
    assert pairs, f"no 'name value (floor f)' in {text!r}"
    return {name: (float(value), float(floor)) for name, value, floor in pairs}


def energy(text: str) -> float:
    return comparison(text)["energy_distance"][0]


def sweep_table(stdout: str, title: str) -> dict[float, tuple[float, float]]:
    """Parse imagediff.evaluation.format_sweep: {scale: (accuracy, Fréchet distance)}."""
    rows = lines(stdout, rf"^ *{title} \|.*\n((?: +NUMBER \| +NUMBER \| +NUMBER.*\n)+)")[0][0]
    table = {}
    for scale, accuracy, distance in re.findall(rf"^ +{NUMBER} \| +{NUMBER} \| +{NUMBER}", rows, re.MULTILINE):
        table[float(scale)] = (float(accuracy), float(distance))
    return table


# ---------------------------------------------------------------------------------------------
# What each lesson's numbers must satisfy (in quick mode)
# ---------------------------------------------------------------------------------------------

def check_01_forward_process(out: str) -> None:
    # The loop of t single steps and the closed form give one distribution: at the sampling floor.
    (text,) = lines(out, r"^t = \d+: step-by-step vs closed form: (.*)$", count=1)[0]
    value, floor = comparison(text)["energy_distance"]
    assert value < 3 * floor, text
    # The table of ᾱ_T is toydiff's, to the printed digits; only the too-short schedule stays away from N(0, I).
    for kind in ("linear", "scaled_linear", "cosine", "sigmoid"):
        alpha_bar, root, text = lines(out, rf"^{kind}, T = 1000 +(\S+) +NUMBER +(.*)$", count=1)[0]
        expected = make_schedule(kind, 1000).alphas_cumprod[-1].item()
        assert float(alpha_bar) == pytest.approx(expected, rel=5e-3), kind
        assert float(root) == pytest.approx(expected**0.5, abs=5e-4), kind
        value, floor = comparison(text)["energy_distance"]
        assert value < 2 * floor, (kind, text)
    alpha_bar, text = lines(out, r"^DDPM β range over T = 100 +(\S+) +\S+ +(.*)$", count=1)[0]
    unscaled = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100, dtype=torch.float64), 0)[-1].item()
    assert float(alpha_bar) == pytest.approx(unscaled, rel=5e-3)
    value, floor = comparison(text)["energy_distance"]
    assert value > 2 * floor, f"x_T of one arm should stay visibly away from N(0, I): {text}"
    assert number(out, r"^scaled_linear \+ zero terminal SNR +NUMBER ") == 0.0
    assert number(out, r"^linear, T = 20: largest β = NUMBER") == pytest.approx(1.0, abs=1e-3)
    lines(out, r"^linear, T = 10: refused: every beta must lie in \(0, 1\]", count=1)


def check_02_training_ddpm(out: str) -> None:
    baseline = number(out, r"^loss of always predicting ε̂ = 0: NUMBER")
    assert 0.85 < baseline < 1.15  # E‖ε‖² / D = 1, on one batch of 512 points
    steps = number(out, r"^training: NUMBER steps")
    assert number(out, r"^trained NUMBER steps") == steps
    final = number(out, r"final loss NUMBER")
    assert final < 0.95 * baseline, f"after {steps:.0f} steps the loss {final} should be below the ε̂ = 0 baseline"
    by_t = [float(v) for (v,) in lines(out, r"^  t in \[ *\d+, *\d+\]: NUMBER$", count=10)]
    assert all(0 < v < 2 for v in by_t), by_t
    start = comparison(lines(out, r"^N\(0, I\), the start: +(.*)$", count=1)[0][0])
    ddpm = comparison(lines(out, r"^DDPM, \d+ steps: +(.*)$", count=1)[0][0])
    # Even briefly trained, DDPM's samples are closer to the data than the Gaussian they start from.
    for distance in ("energy_distance", "sliced_wasserstein"):
        assert ddpm[distance][0] < start[distance][0], (distance, start, ddpm)


def check_03_ddim_and_inversion(out: str) -> None:
    table = {(int(n), int(eta)): energy(text)
             for n, eta, _, text in lines(out, r"^ +(\d+) +(\d) +NUMBER +(energy_distance.*)$", count=12)}
    # The naive shortcut (a DDPM step at 50 of the 1000 timesteps) leaves noise that DDIM's 50 steps remove.
    naive = energy(lines(out, r"^DDPM step at 50 of the \d+ timesteps: (.*)$", count=1)[0][0])
    assert naive > 3 * table[50, 0], (naive, table[50, 0])
    # One step lands on x̂_0 whatever η (σ = 0 where ᾱ_prev = 1); many steps are far better than one.
    assert table[1, 0] == table[1, 1]
    assert table[1, 0] > 3 * table[50, 0], table
    # Each spacing visits toydiff's timesteps, and the printed √ᾱ is the schedule's.
    recipe = ToyRunConfig()
    schedule = make_schedule(recipe.schedule, recipe.num_timesteps)
    for n, spacing, first, root, visited in lines(
            out, r"^ ?(\d+) steps, (\w+) +starts at t = +(\d+) \(√ᾱ = NUMBER\), visits (\[.*\])$", count=6):
        expected = sampling_timesteps(schedule.num_timesteps, int(n), spacing)
        assert visited == str(expected) and int(first) == expected[0], (spacing, visited)
        assert float(root) == pytest.approx(schedule.alpha_bar(expected[0]).sqrt().item(), abs=5e-4)
    # DDIM inversion then sampling returns the data; the error shrinks with the steps.
    errors = {int(n): float(mean) for n, mean in lines(out, r"^ +(\d+) steps: round-trip error mean NUMBER")}
    counts = sorted(errors)
    assert len(counts) >= 2 and all(errors[a] > errors[b] for a, b in zip(counts, counts[1:])), errors
    assert errors[counts[-1]] < 0.25, errors  # the data's spread is 1 per coordinate


def check_04_guidance(out: str) -> None:
    assert number(out, r"^real data of arm 0: NUMBER% on arm 0") >= 95
    lines(out, r"^CFG at s = 1 equals the conditional model bit for bit: True$", count=1)
    on_arm = {(kind, float(s)): (float(share) / 100, text) for kind, s, share, text in lines(
        out, r"^(classifier-free|classifier guidance), s = NUMBER +on arm 0: +NUMBER%   against arm-0 data: (.*)$",
        count=8)}
    # s = 0 of either kind is the unconditional model, drawn from the same noise: the same samples.
    assert on_arm["classifier-free", 0.0] == on_arm["classifier guidance", 0.0]
    unconditional = on_arm["classifier-free", 0.0][0]
    assert 0.15 < unconditional < 0.6, "the unconditional model fills all three arms"
    assert on_arm["classifier-free", 1.0][0] > unconditional
    assert max(on_arm["classifier-free", s][0] for s in (1.0, 2.0, 4.0)) > unconditional + 0.15, on_arm
    assert min(on_arm["classifier guidance", s][0] for s in (1.0, 2.0, 4.0)) > unconditional + 0.2, on_arm
    # Guidance cuts no steps: at each scale, 5 steps are farther from the arm's data than 50.
    by_steps = {(int(n), float(s)): energy(text) for n, s, text in lines(
        out, r"^ ?(\d+) steps, s = NUMBER \(.*\) +on arm 0: .*against arm-0 data: (.*)$", count=4)}
    for scale in (1.0, 4.0):
        assert by_steps[5, scale] > by_steps[50, scale], by_steps
    accuracy = {int(t): float(a) / 100 for t, a in lines(
        out, r"^classifier accuracy on points noised to t = +(\d+): NUMBER%$", count=3)}
    assert all(0 <= a <= 1 for a in accuracy.values())
    assert accuracy[0] > 0.8 and accuracy[0] > accuracy[max(accuracy)], accuracy


def check_05_images_and_the_vae(out: str) -> None:
    held_out = number(out, r"^VAE, held-out images: +NUMBER dB")
    training = number(out, r"^VAE, training images: +NUMBER dB")
    floor = number(out, r"^floor, resize by \d+ and back: NUMBER dB")
    # Quick mode trains 150 steps: near the resizing floor, not above it (full mode is above).
    assert held_out > floor - 3, (held_out, floor)
    assert abs(held_out - training) < 1.5, "held-out and training images reconstruct about equally"
    # encode_images / decode_latents (scaled latents) and decoding the posterior mean are the same map.
    assert number(out, r"^decoding the mean: +NUMBER dB") == pytest.approx(held_out, abs=0.011)
    assert number(out, r"^decoding a sample: +NUMBER dB") > held_out - 1
    posterior_std, spread = (float(v) for v in lines(
        out, r"^posterior std, averaged: NUMBER;  std of the posterior means over the data: NUMBER", count=1)[0])
    assert posterior_std < 0.5 * spread
    # The measured scale brings the latents to unit standard deviation.
    scale = number(out, r"^latent_scale = NUMBER")
    before, after = (float(v) for v in lines(out, r"^std of the latents: NUMBER before scaling, NUMBER after", 1)[0])
    assert after == pytest.approx(1.0, abs=0.05) and after == pytest.approx(before * scale, abs=0.005)
    # Where signal and noise cross: σ² ᾱ_t / (1 - ᾱ_t) = 1, on the latent recipe's schedule.
    recipe = DiffusionRunConfig()
    snr = make_schedule(recipe.schedule, recipe.num_timesteps).snr(torch.arange(recipe.num_timesteps))
    for std in (1.0, 5.5, 0.2):
        printed = number(out, rf"^[^\n]*std {std:g}\)? *: signal and noise equal at t = NUMBER")
        assert printed == int(torch.nonzero(std**2 * snr < 1)[0, 0]), std
    reference = number(out, r"^grader on \d+ held-out real images: accuracy NUMBER")
    assert 0.9 <= reference <= 1.0, "the grader classifies real images well: its ceiling is high"


def check_06_latent_diffusion_with_a_dit(out: str) -> None:
    assert 0.9 <= number(out, r"^real held-out images: accuracy NUMBER") <= 1.0
    lines(out, r"^unpatchify\(patchify\(z\)\) == z exactly: True$", count=1)
    # adaLN-Zero: at initialisation every gate is 0, every block the identity, the output 0 ...
    for gate, change in lines(out, r"^block \d+: max \|gate\| = NUMBER, max \|block\(x\) - x\| = NUMBER"):
        assert float(gate) == 0.0 and float(change) == 0.0
    assert number(out, r"^model output: max \|output\| = NUMBER") == 0.0
    # ... and the gradient wakes the layers one after another: final projection, then gates, then attention.
    norms = {int(step): (float(final), float(gates), float(attention)) for step, final, gates, attention in lines(
        out, r"^step (\d): gradient norms final projection NUMBER, block 0 adaLN \(gates\) NUMBER, "
             r"block 0 attention NUMBER", count=3)}
    assert norms[1][0] > 0 and norms[1][1] == 0 and norms[1][2] == 0, norms
    assert norms[2][1] > 0 and norms[2][2] == 0, norms
    assert norms[3][2] > 0, norms
    # Training lowers the loss; every accuracy is a share.
    history = [(float(loss), float(accuracy)) for loss, accuracy, _ in lines(
        out, r"^ +\d+ +\d+ +NUMBER +NUMBER +NUMBER$")]
    assert history[-1][0] < history[0][0], history
    assert all(0 <= accuracy <= 1 for _, accuracy in history)
    # Pitfall 14: the trained model's output depends on t and on the label.
    change_t, change_label = (float(v) for v in lines(
        out, r"^relative change of the output: t \+ 200: NUMBER;  null label instead of the class: NUMBER", 1)[0])
    assert change_t > 0.05 and change_label > 0.05


def check_07_guidance_on_images(out: str) -> None:
    reference = number(out, r"^real held-out images: accuracy NUMBER")
    assert 0.9 <= reference <= 1.0
    chance = number(out, r"^chance accuracy: NUMBER")
    cfg, classifier = sweep_table(out, "CFG scale"), sweep_table(out, "classifier scale")
    for table in (cfg, classifier):
        assert all(0 <= accuracy <= 1 and distance > 0 for accuracy, distance in table.values()), table
    # s = 0 of either kind is the unconditional model from the same noise: the same samples, the same grades.
    assert cfg[0.0] == classifier[0.0]
    # Asking for a class helps even a briefly trained model: guided accuracy beats unguided and chance.
    assert max(accuracy for scale, (accuracy, _) in cfg.items() if scale >= 1) > max(cfg[0.0][0], chance)
    for accuracy in lines(out, r"^noisy-latent classifier at t = +\d+: accuracy NUMBER", count=4):
        assert 0 <= float(accuracy[0]) <= 1
    # Guidance rescale (0.7 at the largest s, the default φ = 1 at s = 3) pulls the spread of the latents
    # back towards the unguided one; without rescale (φ = 0) the same request and seed grade exactly as in the sweep.
    rescaled = {(float(s), float(phi)): (float(std), float(accuracy), float(distance))
                for s, phi, std, _, accuracy, distance in lines(
                    out, r"^s = NUMBER, φ = NUMBER: std of the sampled latents NUMBER \(real latents: NUMBER\); "
                         r"accuracy NUMBER, Fréchet distance NUMBER", count=5)}
    largest = max(s for s, _ in rescaled)
    assert rescaled[largest, 0.7][0] < rescaled[largest, 0.0][0], rescaled
    assert rescaled[3.0, 1.0][0] < rescaled[3.0, 0.0][0], rescaled  # the sampler's default at s = 3
    for scale in (1.0, 3.0, largest):
        assert rescaled[scale, 0.0][1:] == cfg[scale], (rescaled, cfg)
    # The orientation experiment: the same grader on the three short runs (own frame, every angle, told the
    # angle); each line lists an accuracy per shape, whose mean is the overall accuracy.
    graded = lines(out, r"^(own frame|every angle|told the angle), (\d+) steps: "
                        r"accuracy NUMBER at s = 3; (.*)$", count=3)
    assert sorted(name for name, *_ in graded) == ["every angle", "own frame", "told the angle"]
    for name, _, overall, per_shape in graded:
        accuracies = [float(value) for value in re.findall(rf"\w+ {NUMBER}", per_shape)]
        assert accuracies and all(0 <= a <= 1 for a in accuracies), per_shape
        assert abs(sum(accuracies) / len(accuracies) - float(overall)) < 0.01, (name, overall, per_shape)
    assert len(lines(out, r"^  most often seen instead: ", count=3)) == 3
    # Autoguidance by the run's early EMA: w = 1 is plain CFG (the sweep's samples at s = 3 exactly); w = 2
    # draws other samples.
    guide_step, steps = lines(out, r"^the guide: the EMA weights at step (\d+) of (\d+)$", count=1)[0]
    assert 1 <= int(guide_step) < int(steps)
    autoguided = {(float(s), float(w)): (float(accuracy), float(distance)) for s, w, accuracy, distance in lines(
        out, r"^CFG s = NUMBER, autoguidance w = NUMBER: accuracy NUMBER, Fréchet distance NUMBER;", count=3)}
    assert autoguided[3.0, 1.0][0] == cfg[3.0][0]
    assert autoguided[1.0, 2.0] != autoguided[3.0, 1.0] and autoguided[2.0, 2.0] != autoguided[3.0, 1.0]


def px_or_none(text: str) -> float | None:
    """A printed distance in px, or None where the lesson printed '-' (no ball to compare)."""
    return None if text == "-" else float(text)


def per_frame_errors(text: str) -> list[float | None]:
    return [px_or_none(value) for value in text.split()]


def check_08_physics_videos_and_a_per_frame_vae(out: str) -> None:
    physics = PhysicsConfig(num_frames=12)  # quick mode's videos
    # The stored states are the exact simulation: replayed from frame 0, and energy conserved in flight ...
    assert number(out, r"^simulate_balls from frame 0 reproduces all 12 stored frames: max difference NUMBER px") < 1e-3
    assert number(out, r"^in flight \(\d+ steps without a contact\): energy changes by at most NUMBER per frame") < 1e-4
    # ... and a floor bounce keeps e² of the vertical energy, to float32 rounding.
    count, mean, low, high, e2 = lines(out, r"^vertical energy kept by a floor bounce, over (\d+) bounces: mean NUMBER, "
                                            r"min NUMBER, max NUMBER \(restitution² = NUMBER\)", count=1)[0]
    assert int(count) >= 5 and float(e2) == pytest.approx(physics.restitution**2, abs=1e-4)
    for value in (mean, low, high):
        assert float(value) == pytest.approx(physics.restitution**2, abs=1e-3), (low, high)
    # One impossible twin of each kind, identical before its event frame (within the default range), and the
    # tracker sees the event: a teleported ball is far from its place, a vanished or recoloured one is missing,
    # a ball that appears out of nothing breaks the frame.
    twins = {kind: (int(frame), same, px_or_none(error), float(found), float(formed))
             for kind, frame, same, error, found, formed in lines(
                 out, r"^(\w+) +event at frame +(\d+): identical before it: (\w+); from it on, against the plausible "
                      r"video: position error +(\S+)(?: px)?, balls found +NUMBER%, well-formed frames +NUMBER%$",
                 count=len(IMPOSSIBLE_KINDS))}
    assert sorted(twins) == sorted(IMPOSSIBLE_KINDS)
    for kind, (frame, same, *_) in twins.items():
        assert same == "True" and 12 // 4 <= frame <= 12 - 12 // 4, (kind, frame, same)
    assert twins["teleport"][2] > 1.0, twins["teleport"]
    assert twins["vanish"][3] < 100 and twins["colour_change"][3] < 100, twins
    assert twins["appear"][4] < 100, twins["appear"]
    # PSNR: above an untrained decoder's (about 6 dB on these mostly black frames), whatever quick mode reaches.
    held_out = number(out, r"^VAE, held-out frames: +NUMBER dB")
    assert held_out > 8, held_out
    assert number(out, r"^an all-black frame: +NUMBER dB") > 10  # most of a frame is black
    # The measured scale brings the latents of the frames it was measured on to unit standard deviation.
    scale = number(out, r"^latent_scale = NUMBER")
    before, after, held_out_std = (float(v) for v in lines(
        out, r"^std of the latents: NUMBER before scaling, NUMBER after; held-out frames after scaling: NUMBER", 1)[0])
    assert after == pytest.approx(1.0, abs=0.02) and after == pytest.approx(before * scale, abs=0.005)
    assert held_out_std == pytest.approx(1.0, abs=0.25)
    # The tracker on reconstructions: an error in px (or '-'), shares in [0, 100] %.
    error, found, formed = lines(out, r"^tracker on VAE reconstructions of \d+ held-out videos: position error (\S+)"
                                      r"(?: px)?, balls found NUMBER%, well-formed frames NUMBER%", count=1)[0]
    assert (px_or_none(error) or 0) >= 0 and 0 <= float(found) <= 100 and 0 <= float(formed) <= 100


def check_09_video_dit_and_diffusion_forcing(out: str) -> None:
    # Tokens: every frame's N patches, laid end to end, time-major.
    batch, frames, _, height, width, per_frame, patch, b, total, _ = (int(v) for v in lines(
        out, r"^a window: latents \((\d+), (\d+), (\d+), (\d+), (\d+)\) .* -> (\d+) tokens per frame \(patch (\d+)\) "
             r"-> tokens \((\d+), (\d+), (\d+)\)", count=1)[0])
    assert per_frame == (height // patch) * (width // patch) and total == frames * per_frame and b == batch
    assert number(out, r"^time-major: .* max \|difference\| NUMBER$") == 0.0
    # 3-D RoPE: the library's split, and scores that depend on offsets only.
    head_dim, *split = (int(v) for v in lines(
        out, r"^head dimension d = (\d+): \d+ frequency pairs -> (\d+) turn with the frame, (\d+) with the row, "
             r"(\d+) with the column", count=1)[0])
    assert tuple(split) == rope_split(head_dim)
    assert number(out, r"^score\(p_q \+ Δ, p_k \+ Δ\) - score\(p_q, p_k\), .* max \|difference\| NUMBER") < 1e-4
    assert number(out, r"^moving the key one frame further instead changes the score by NUMBER") > 0.05
    # Noise levels: independent per frame, shared per clip, or a clean context of K frames out of F.
    spread = {mode: (float(value), float(clean)) for mode, value, clean in lines(
        out, r"^(\w+) *: levels \(16, \d+\), mean spread within a clip \(std over its frames\) +NUMBER, "
             r"clean frames +NUMBER%", count=3)}
    assert spread["diffusion_forcing"][0] > 100 and spread["full_sequence"][0] == 0.0
    num_frames, num_context, num_steps = (int(v) for v in lines(
        out, r"^a window of (\d+) frames, (\d+) of them context, S = (\d+) steps per frame:$", count=1)[0])
    assert spread["clean_context"][1] == pytest.approx(100 * num_context / num_frames, abs=0.5)
    # The scheduling matrices are the library's, row count, first and last row.
    for kind, rows, first, last in lines(out, r"^  (\w+) *: +(\d+) rows = .*; first row (\[.*\]), last row (\[.*\]); "
                                              r"invariants hold$", count=3):
        matrix = scheduling_matrix(kind, num_frames, num_steps, context=num_context)
        assert int(rows) == matrix.shape[0] and first == str(matrix[0].tolist()) and last == str(matrix[-1].tolist())
    (table,) = lines(out, r"^index -> timestep: (\{.*\})$", count=1)[0]
    recipe = VideoDiffusionRunConfig()
    ladder = timesteps_from_indices(torch.arange(num_steps + 1), recipe.num_timesteps, num_steps).tolist()
    assert table == str(dict(enumerate(ladder)))
    # Training: below the loss of predicting v̂ = 0 on unit-variance latents (about 1).
    first_loss, last_loss = (float(v) for v in lines(out, r"^training loss: NUMBER at step \d+, NUMBER at step \d+",
                                                      count=1)[0])
    assert last_loss < 1.0, (first_loss, last_loss)
    # Sampling returns the context bit for bit; every generated frame gets an error (or '-').
    lines(out, r"^  context frames \[[\d, ]+\] come back unchanged: True$", count=2)
    rows = lines(out, r"^  ([\w ()]+?) *: position error per generated frame ((?:\S+ )*\S+) px; mean (\S+)", count=6)
    for name, errors, _ in rows[:3]:
        assert len(per_frame_errors(errors)) == num_frames - num_context, (name, errors)
    for name, errors, _ in rows[3:]:
        assert len(per_frame_errors(errors)) == num_frames - 2, (name, errors)
    assert all(e is None or e >= 0 for _, errors, _ in rows for e in per_frame_errors(errors))


def rollout_table(out: str) -> dict[str, tuple]:
    """Parse videodiff.cli.format_table: {guidance: (err first 8, err all, found, well-formed, intact, motion,
    moves)}."""
    names = "|".join(re.escape(name) for name, _, _ in GUIDANCE_ROWS)
    rows = lines(out, rf"^({names}) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+) (True|False|None)$",
                 count=len(GUIDANCE_ROWS))
    return {name: (*(px_or_none(v) for v in values[:6]), values[6]) for name, *values in rows}


def check_10_rollouts_and_history_guidance(out: str) -> None:
    window, context, length = (int(v) for v in lines(
        out, r"^window W = (\d+), (\d+) real frames, then (\d+) generated", count=1)[0])
    assert length == 4 * window
    lines(out, rf"^frames \(\d+, {context + length}, 32, 32, 3\) ", count=1)
    # Guidance at s = 1 is the conditional model: the same rollout, bit for bit.
    lines(out, r"^vanilla guidance at s = 1 equals no guidance bit for bit: True$", count=1)
    table = rollout_table(out)
    # The table's unguided row is the rollout above: same videos, same seed, same numbers.
    first, every = (px_or_none(v) for v in lines(
        out, r"^no guidance: position error (\S+)(?: px)? over the first 8 generated frames, (\S+)(?: px)? over all",
        count=1)[0])
    assert table["none"][:2] == (first, every), (table["none"], first, every)
    # Where the frames fail: every generated frame of the rollout falls in one group of each breakdown.
    for title in ("balls in the frame", "the closest two balls' gap"):
        groups = lines(out, rf"^intact by {title}: (.*)$", count=1)[0][0]
        counts = [int(n) for n in re.findall(r"\((\d+)\)", groups)]
        assert sum(counts) == int(lines(out, r"^frames \((\d+), ", count=1)[0][0]) * length, (title, groups)
    for name, (_, _, found, formed, intact, motion, moves) in table.items():
        assert 0 <= found <= 1 and 0 <= formed <= 1 and 0 <= intact <= 1, name
        assert moves == ("None" if motion is None else str(motion >= 0.25)), name
    curves = dict(lines(out, r"^(none|vanilla, s = [\d.]+(?:, stabilised)?|fractional, s = [\d.]+) *: mean position "
                             r"error (\S+)", count=4))
    assert px_or_none(curves["none"]) == table["none"][1]
    # Strong history guidance freezes a video that moves.  A quick-mode model's balls jitter instead (the
    # motion ratio of its unguided rollout is about 3, and which scale jitters more depends on the seed):
    # the comparison is made only for a model whose unguided balls move about as fast as the true ones.
    plain, strong = (px_or_none(v) for v in lines(
        out, r"^motion ratio \(generated displacement per frame / true\): no guidance (\S+), vanilla s = [\d.]+ (\S+)$",
        count=1)[0])
    if plain is not None and strong is not None and 0.5 <= plain <= 2.0:
        assert strong < plain, (plain, strong)
    # Autoguidance: the rollouts above used the run's default scale, so its line repeats the first rollout's
    # figures, and w = 1 is the table's "autoguidance off" row (same videos, same seed).
    autoguided = {float(w): px_or_none(first_error) for w, first_error in lines(
        out, r"^autoguidance w = ([\d.]+): position error (\S+)(?: px)? over the first 8", count=4)}
    default = float(lines(out, r"rollouts above used w = ([\d.]+)$", count=1)[0][0])
    assert autoguided[default] == first and default != 1.0
    off = lines(out, r"^none, autoguidance off +(\S+) ", count=1)[0][0]
    assert autoguided[1.0] == px_or_none(off), (autoguided, off)


# The sites of one block, as docs/hooks.md lists them (the image DiT's blocks, inherited by the video DiT).
BLOCK_SITES = {"resid_pre", "shift_attn", "scale_attn", "gate_attn", "shift_mlp", "scale_mlp", "gate_mlp", "q", "k",
               "v", "scores", "pattern", "z", "head_out", "attn_out", "resid_mid", "hidden", "mlp_out", "resid_post"}


def shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.strip("()").split(",") if v.strip())


def ablation_rows(out: str) -> list[tuple]:
    """Parse videodiff.interp.ablations.format_ablation_table: [(name, err first 8, err all, found, well-formed,
    motion, moves)], in order; '-' (nothing to measure) reads None."""
    header = re.search(r"^ablation +err first 8 .*$", out, re.MULTILINE)
    assert header is not None, "no ablation table printed"
    rows = []
    for line in out[header.end():].splitlines()[1:]:
        match = re.match(r"^(.+?) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+) (True|False|None)$", line)
        if match is None:
            break
        name, *values, moves = match.groups()
        rows.append((name, *(px_or_none(v) for v in values), moves))
    assert rows, "no ablation table printed"
    return rows


def check_11_looking_inside_the_video_dit(out: str) -> None:
    clips, frames, tokens, total, depth, heads, last_clean, level = (int(v) for v in lines(
        out, r"^(\d+) clips of F = (\d+) frames, (\d+) tokens per frame \(T = (\d+) tokens\), depth (\d+), (\d+) heads "
             r"per block; frames 0-(\d+) clean, frames \d+-\d+ at t = (\d+)$", count=1)[0])
    context = last_clean + 1
    assert total == frames * tokens
    # Every site of a block, in the order a forward visits them: the stream comes in first and leaves last.
    sites = lines(out, r"^  blocks\.0\.(?:attention\.|mlp\.)?hook_(\w+) +(\(.*\))$")
    assert int(number(out, r"^block 0 has NUMBER hook points")) == len(sites)
    assert {kind for kind, _ in sites} == BLOCK_SITES
    assert sites[0][0] == "resid_pre" and sites[-1][0] == "resid_post"
    shapes = {kind: shape(text) for kind, text in sites}
    width = shapes["resid_post"][2]
    head_dim = shapes["z"][3]
    assert shapes["resid_pre"] == shapes["resid_post"] == (clips, total, width)
    assert shapes["pattern"] == shapes["scores"] == (clips, heads, total, total)
    assert shapes["q"] == shapes["z"] == (clips, heads, total, head_dim) and heads * head_dim == width
    assert shapes["shift_attn"] == (clips, frames, width)  # one modulation row per frame: its own noise level
    stacked = shape(lines(out, r"^resid_post of block 0: .*; stacked over the blocks: (\(.*\))$", count=1)[0][0])
    assert stacked == (depth, clips, total, width)
    lines(out, r"^cache\['resid_post', 0\] is cache\['blocks\.0\.hook_resid_post'\]: True$", count=1)
    # A hook that returns None changes nothing, bit for bit; one that edits a site changes the output.
    lines(out, r"^a hook that returns None: output identical bit for bit: True$", count=1)
    assert number(out, r"^a hook that zeroes block \d+'s attention output: relative change of the output NUMBER") > 0
    assert number(out, r"^pattern formed explicitly instead of the fused kernel: max \|difference\| of the output "
                       r"NUMBER") < 1e-3
    assert number(out, r"^hook points still hooked after the with blocks: NUMBER") == 0
    # Attention rows are distributions, over tokens and over frames.
    token_rows, frame_rows = (float(v) for v in lines(
        out, r"^token patterns .*: rows sum to 1 within NUMBER; frame patterns .*: within NUMBER", count=1)[0])
    assert token_rows < 1e-5 and frame_rows < 1e-5
    for shares, uniform in lines(out, r"^block \d+: attention of the noisy frames to the \d+ clean ones: (.*) "
                                      r"\(uniform attention: NUMBER\)$", count=depth):
        assert float(uniform) == pytest.approx(context / frames, abs=5e-3)
        values = re.findall(rf"L\d+H\d+ {NUMBER}", shares)
        assert len(values) == heads and all(0 <= float(v) <= 1 for v in values), shares
    # Head scores: one line per level, every head, attention masses next to the library's chance levels.
    chance = uniform_attention_scores(frames, tokens)
    per_level = {}
    for kind in ("previous_frame", "spatial_alignment", "induction", "induction_permuted"):
        found = lines(out, rf"^{kind} at level +(\d+): ((?:L\d+H\d+ NUMBER ?)+) \(chance NUMBER\)$")
        levels = [int(row[0]) for row in found]
        assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == 999, (kind, levels)
        for _, text, *_, printed_chance in found:
            values = dict(re.findall(rf"(L\d+H\d+) {NUMBER}", text))
            assert len(values) == depth * heads and all(0 <= float(v) <= 1 for v in values.values()), (kind, text)
            assert float(printed_chance) == pytest.approx(chance[kind.removesuffix("_permuted")], abs=5e-4)
        per_level[kind] = [{head: float(v) for head, v in re.findall(rf"(L\d+H\d+) {NUMBER}", row[1])} for row in found]
    # The control exists because a fixed-offset head scores 1 on repeated clips and exactly 0 on shuffled ones.
    repeated, shuffled = (float(v) for v in lines(
        out, r"^a head that always looks \d+ frame\(s\) back: induction score NUMBER on repeated clips, NUMBER on the "
             r"control$", count=1)[0])
    assert repeated == 1.0 and shuffled == 0.0
    # The top heads are those of highest previous-frame score averaged over the levels (to printed rounding).
    top = re.findall(rf"(L\d+H\d+) {NUMBER}", lines(out, r"^top \d+ previous-frame head\(s\), averaged over levels: "
                                                         r"(.*) \(chance", count=1)[0][0])
    previous = per_level["previous_frame"]
    averages = {head: np.mean([row[head] for row in previous]) for head in previous[0]}
    others = [value for head, value in averages.items() if head not in dict(top)]
    for head, value in top:
        assert float(value) == pytest.approx(averages[head], abs=2e-3)
        assert all(float(value) >= other - 2e-3 for other in others), (top, averages)
    zero, mean = (float(v) for v in lines(out, r"^relative change of the output, heads .*: zero-ablated NUMBER, "
                                               r"mean-ablated NUMBER$", count=1)[0])
    assert zero > 0 and mean >= 0
    lines(out, r"^skip_block\(0\): block 0's resid_post equals its resid_pre exactly: True$", count=1)
    # The table: every standard ablation, the top heads zero- and mean-ablated; the copy of the last real
    # frame does not move.
    rows = ablation_rows(out)
    assert len(rows) == 5 + 2 * depth + 2, [row[0] for row in rows]
    assert rows[0][0].startswith("none") and rows[1][0].startswith("skip the DiT")
    assert rows[-2][0].startswith("zero heads") and rows[-1][0].startswith("mean heads")
    for name, *numbers, moves in rows:
        found_share, formed, motion = numbers[2:5]
        assert all(v is None or 0 <= v <= 1 for v in (found_share, formed)), name
        assert moves == ("None" if motion is None else str(motion >= 0.25)), name
    frozen, plain = rows[1][5], rows[0][5]
    assert frozen in (None, 0.0) and rows[1][6] in ("False", "None")
    printed = lines(out, r"^motion ratio: the model as trained (\S+), skip the DiT (\S+)$", count=1)[0]
    assert (px_or_none(printed[0]), px_or_none(printed[1])) == (plain, frozen)
    if plain is not None and frozen is not None:
        assert plain > frozen, (plain, frozen)
    # The reading of the table is the table's: the row named as the largest error has the largest error.
    scored = [row for row in rows[2:] if row[2] is not None]
    if rows[0][2] is not None and scored:
        name, _ = lines(out, r"^largest position error of the ablations: (.+) \((\S+) px, against", count=1)[0]
        assert name == max(scored, key=lambda row: row[2])[0]
        worse = int(number(out, r"^ablations with a larger position error than the model as trained: NUMBER of"))
        # Counted on unrounded errors: a row printed equal to the model's may count either way.
        assert sum(row[2] > rows[0][2] for row in scored) <= worse <= sum(row[2] >= rows[0][2] for row in scored)
    name, share = lines(out, r"^fewest well-formed frames: (.+) \(NUMBER, against", count=1)[0]
    assert float(share) == min(row[4] for row in rows[2:])
    assert name in [row[0] for row in rows[2:] if row[4] == float(share)]


def check_12_the_physics_probe(out: str) -> None:
    pairs, videos, window, plausible, impossible = (int(v) for v in lines(
        out, r"^(\d+) pairs, (\d+) videos, windows of W = (\d+) frames; labels: (\d+) plausible, (\d+) impossible$",
        count=1)[0])
    assert videos == 2 * pairs and plausible == impossible == pairs
    kinds = {kind: int(count) for kind, count in re.findall(
        r"'(\w+)': (\d+)", lines(out, r"^kinds of impossibility \(pairs each\): (\{.*\})$", count=1)[0][0])}
    assert set(kinds) <= set(IMPOSSIBLE_KINDS) and sum(kinds.values()) == pairs
    assert max(kinds.values()) - min(kinds.values()) <= 1  # the kinds cycle evenly over the pairs
    if pairs >= len(IMPOSSIBLE_KINDS):
        assert set(kinds) == set(IMPOSSIBLE_KINDS)
    offsets = {int(k): int(v) for k, v in re.findall(
        r"(\d+): (\d+)", lines(out, r"^event frame within the window \(pairs each\): (\{.*\})$", count=1)[0][0])}
    assert sum(offsets.values()) == pairs and all(0 < offset < window for offset in offsets)
    # The twins are the same video up to the event, and different at it.
    same, different = lines(out, r"^twins identical before their event: (\w+); different at the event frame: (\d+) of",
                            count=1)[0]
    assert same == "True" and int(different) == pairs
    # The history the run trained with is held clean, and it ends where the event begins (or before).
    held, frames, event = (int(v) for v in lines(
        out, r"^the first (\d+) of the window's (\d+) frames held clean; the event is frame (\d+) of pair 0's window$",
        count=1)[0])
    assert frames == window and 0 < held <= event < window
    # The inversion visits as many levels as it takes steps, from the clean video up.
    steps, visited = lines(out, r"^DDIM inversion in (\d+) steps evaluates the model at levels (\[.*\])$", count=1)[0]
    visited = [int(v) for v in re.findall(r"\d+", visited)]
    assert len(visited) == int(steps) and visited[0] == 0 and visited == sorted(visited)
    pooled, depth, levels = lines(out, r"^at level \d+: resid_post of block 0 pooled over tokens (\(.*\)) "
                                       r"\(videos, D\); cells per site: (\d+) blocks x (\d+) levels$", count=1)[0]
    assert shape(pooled)[0] == 2 and int(levels) == len(visited)
    depth = int(depth)
    # Ordinary folds split twins across training and test; grouped folds never do.
    ordinary, grouped = (int(v) for v in lines(
        out, r"^pairs split by ordinary folds \(5 folds\): (\d+); by folds grouped by pair: (\d+)$", count=1)[0])
    assert ordinary > 0 and grouped == 0
    # Picking the best of 40 noise cells after looking is biased upward; the nested figure is not.
    picked, nested = (float(v) for v in lines(
        out, r"^40 cells of pure noise: the best cell picked by its held-out accuracy scores NUMBER; the nested "
             r"figure is NUMBER", count=1)[0])
    assert picked > 0.5 and picked >= nested
    num_pairs, inversion_steps, permutations, sweep = lines(
        out, r"^config: (\d+) pairs, (\d+) inversion steps, .* (\d+) relabellings, step sweep (\[.*\])$", count=1)[0]
    assert int(num_pairs) == pairs and int(inversion_steps) == int(steps)
    sweep = [int(v) for v in re.findall(r"\d+", sweep)]
    (heatmap,) = lines(out, r"^levels of the heatmap: (\[.*\])$", count=1)[0]
    heatmap_levels = [int(v) for v in re.findall(r"\d+", heatmap)]
    assert heatmap_levels == visited  # the same inversion as above, for every video
    site, block, level = lines(out, r"^selected cell: (\w+), block (\d+), level (\d+);", count=1)[0]
    assert site in ("resid_post", "attn_out", "mlp_out") and int(block) < depth and int(level) in visited
    for name in ("trained DiT, nested", "vae_latent_baseline *", "x_t_baseline *", "random_init_baseline"):
        values = [float(v) for v in lines(out, rf"^{name}: per-video NUMBER ± NUMBER, pairwise NUMBER, AUROC NUMBER$",
                                          count=1)[0]]
        assert all(0 <= v <= 1 for v in values), (name, values)
    # The permutation p-value is (1 + k) / (1 + N) for a whole k, never below 1 / (N + 1).
    observed, null_mean, null_max, p_value, smallest, n = lines(
        out, r"^permutation null over .*: observed NUMBER, null mean NUMBER, null max NUMBER; p = NUMBER "
             r"\(smallest possible NUMBER, N = (\d+)\)$", count=1)[0]
    n = int(n)
    assert n == int(permutations)
    assert float(smallest) == pytest.approx(1 / (n + 1), abs=5e-5)
    assert 1 / (n + 1) - 5e-5 <= float(p_value) <= 1
    assert float(p_value) * (n + 1) == pytest.approx(round(float(p_value) * (n + 1)), abs=5e-3)
    assert float(null_max) >= float(null_mean)
    verdict = lines(out, r"^at the 5 % level the observed accuracy is (above|not distinguishable from) the null$",
                    count=1)[0][0]
    assert verdict == ("above" if float(p_value) <= 0.05 else "not distinguishable from")
    control = lines(out, r"^control task: accuracy NUMBER, task accuracy on the same cells NUMBER, selectivity NUMBER$")
    control_accuracy, task, selectivity = (float(v) for v in control[0])
    assert task == pytest.approx(float(observed), abs=1.5e-3)  # the permutation test's observed figure
    assert selectivity == pytest.approx(task - control_accuracy, abs=1.5e-3)
    # Leave one kind out: one figure per kind of the pairs; the sweep and the intervention as configured.
    loto = {kind: float(v) for kind, v in lines(out, r"^leave one kind out: (\w+) +accuracy on the unseen kind "
                                                      r"NUMBER$")}
    assert set(loto) == set(kinds) and all(0 <= v <= 1 for v in loto.values())
    above = int(number(out, r"^kinds on which the transferred probe is above 0\.5: NUMBER of"))
    assert above == sum(v > 0.5 for v in loto.values())
    swept = [int(s) for s, _ in lines(out, r"^inversion with +(\d+) steps: nested per-video accuracy NUMBER$")]
    assert swept == sweep
    flips = {int(b): (float(share), float(accuracy_then)) for b, share, accuracy_then in lines(
        out, r"^noise into block (\d+) \(α = [\d.]+\): verdicts flipped NUMBER, accuracy then NUMBER$", count=depth)}
    assert sorted(flips) == list(range(depth)) and all(0 <= s <= 1 and 0 <= a <= 1 for s, a in flips.values())
    most = int(number(out, r"^the block whose noise flips the most verdicts: block NUMBER"))
    assert flips[most][0] == max(share for share, _ in flips.values())


LESSON_CHECKS = {
    "01_forward_process": check_01_forward_process,
    "02_training_ddpm": check_02_training_ddpm,
    "03_ddim_and_inversion": check_03_ddim_and_inversion,
    "04_guidance": check_04_guidance,
    "05_images_and_the_vae": check_05_images_and_the_vae,
    "06_latent_diffusion_with_a_dit": check_06_latent_diffusion_with_a_dit,
    "07_guidance_on_images": check_07_guidance_on_images,
    "08_physics_videos_and_a_per_frame_vae": check_08_physics_videos_and_a_per_frame_vae,
    "09_video_dit_and_diffusion_forcing": check_09_video_dit_and_diffusion_forcing,
    "10_rollouts_and_history_guidance": check_10_rollouts_and_history_guidance,
    "11_looking_inside_the_video_dit": check_11_looking_inside_the_video_dit,
    "12_the_physics_probe": check_12_the_physics_probe,
}


def test_every_lesson_has_its_checks():
    assert list(LESSON_CHECKS) == list(LESSONS)


def test_every_header_states_a_full_mode_time_within_ten_minutes():
    sys.path.insert(0, str(REPO / "lessons"))
    try:
        from run_all import LIMIT_SECONDS, stated_seconds
    finally:
        sys.path.remove(str(REPO / "lessons"))
    for name in LESSONS:
        seconds = stated_seconds(REPO / "lessons" / f"{name}.py")
        assert 0 < seconds <= LIMIT_SECONDS, f"{name} states {seconds:.0f} s"


def test_make_lessons_prints_the_measured_time_next_to_the_header(tmp_path):
    env = {**os.environ, "LESSON_QUICK": "1", "LESSON_OUTPUT_DIR": str(tmp_path), "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(REPO / "lessons" / "run_all.py"), "01"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    row = re.search(r"^01_forward_process\s+([0-9.]+) s\s+([0-9.]+) s", result.stdout, re.MULTILINE)
    assert row is not None, result.stdout[-2000:]
    assert float(row.group(2)) == 5  # the header's "about 5 s"
    # the measured time is the lesson's whole run: at least what the lesson timed itself, plus start-up
    own = float(re.search(r"lesson 01 finished in ([0-9.]+) s", result.stdout)[1])
    assert own <= float(row.group(1)) < own + 30
    bad = subprocess.run([sys.executable, str(REPO / "lessons" / "run_all.py"), "99"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown lesson" in bad.stderr


def test_a_checkpoint_of_another_recipe_is_set_aside_not_reused(tmp_path, capsys, monkeypatch):
    """A lesson's shared checkpoint trained before the library's defaults changed is not loaded as if
    it were the lesson's model: finished() moves it aside and asks for training."""
    from dataclasses import replace

    from toydiff.checkpoints import save_checkpoint

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "lessons"))
    from lesson_setup import finished

    recipe = VideoDiffusionRunConfig()
    checkpoint = tmp_path / "checkpoint.pt"
    for stored, expected in ((recipe, True), (replace(recipe, clean_history_frames=None), False)):
        save_checkpoint(checkpoint, {"kind": "videodiff.diffusion", "step": recipe.train.steps,
                                     "config": {**stored.to_dict(), "vae_latent_scale": 0.97}})
        assert finished(checkpoint, recipe.train.steps, recipe) is expected
        assert checkpoint.exists() is expected
    assert (tmp_path / "checkpoint.previous-recipe.pt").exists()
    assert "trained with another recipe (differs in: clean_history_frames)" in capsys.readouterr().out
    assert finished(checkpoint, recipe.train.steps, recipe) is False  # nothing left: train
