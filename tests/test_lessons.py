"""Every lesson runs to the end in quick mode (LESSON_QUICK=1) and writes its figures.

The lessons run in subprocesses, in order, sharing one temporary output root (LESSON_OUTPUT_DIR): lesson
02 trains the quick spiral model once and lessons 03 and 04 reuse it, as they do for a student; likewise
lesson 05 trains the quick VAE and lesson 06 the quick latent DiT and grader, which lesson 07 reuses.
Nothing is written inside the repository.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

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
                              "guidance_frechet_distance.png", "guidance_rescale.png", "steps_and_guidance.png"],
}


@pytest.fixture(scope="module")
def output_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lessons")


def run_lesson(name: str, output_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LESSON_QUICK": "1", "LESSON_OUTPUT_DIR": str(output_root), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, str(REPO / "lessons" / f"{name}.py")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


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
    # the metrics are printed next to their floors
    assert "floor" in result.stdout
