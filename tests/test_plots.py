"""toydiff.plots: the files are real images, and the figures show what toydiff computes.

The score-field test uses an analytic oracle: for data x_0 ~ N(μ, s² I) the noisy marginal is
p_t = N(sqrt(ᾱ_t) μ, (ᾱ_t s² + 1 - ᾱ_t) I), whose score and ε are known in closed form.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.quiver import Quiver
from PIL import Image

from toydiff import plots
from toydiff.cli import main as cli_main
from toydiff.data import make_dataset
from toydiff.experiment import ToyModel, ToyRunConfig, build_denoiser, train_toy_model
from toydiff.models import MLPConfig
from toydiff.parameterisation import convert_prediction
from toydiff.samplers import ddim_sample, sampling_timesteps
from toydiff.schedules import make_schedule
from toydiff.training import TrainConfig

MEAN = torch.tensor([0.7, -0.4], dtype=torch.float64)
STD = 0.5


def oracle_score(schedule, x: torch.Tensor, t: int) -> torch.Tensor:
    """∇ log p_t(x) of x_0 ~ N(MEAN, STD² I), in float64: -(x - sqrt(ᾱ) μ) / (ᾱ s² + 1 - ᾱ)."""
    a = schedule.alpha_bar(t).item()
    return -(x.double() - a**0.5 * MEAN) / (a * STD**2 + 1 - a)


def oracle_model(schedule, prediction_type: str = "epsilon"):
    """model(x, t) returning the exact ε (or v) of the Gaussian data: ε = -sqrt(1 - ᾱ_t) · score."""

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = schedule.alpha_bar(t)[:, None]                               # (B, 1) float64
        mean_t, var_t = a.sqrt() * MEAN, a * STD**2 + 1 - a
        epsilon = (1 - a).sqrt() * (x.double() - mean_t) / var_t          # (B, 2)
        if prediction_type == "epsilon":
            return epsilon.float()
        return convert_prediction(schedule, epsilon, t, x.double(), "epsilon", prediction_type).float()

    return model


def assert_png(path, min_bytes: int = 5000) -> Image.Image:
    assert path.exists(), f"{path} was not written"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert path.stat().st_size > min_bytes, f"{path} is suspiciously small ({path.stat().st_size} bytes)"
    image = Image.open(path)
    image.load()
    colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 20, f"{path} is nearly blank ({len(colours)} colours)"
    return image


def gif_frames(path) -> list[np.ndarray]:
    assert path.read_bytes()[:6] in (b"GIF87a", b"GIF89a"), f"{path} is not a GIF"
    image = Image.open(path)
    frames = []
    for index in range(image.n_frames):
        image.seek(index)
        frames.append(np.asarray(image.convert("RGB"), dtype=np.int16))
    return frames


@pytest.fixture(scope="module")
def tiny_run() -> ToyModel:
    """An untrained conditional spiral model with T = 100: enough to exercise every figure quickly."""
    config = ToyRunConfig(num_timesteps=100, model=MLPConfig(hidden_dim=32, num_blocks=1))
    torch.manual_seed(0)
    model = build_denoiser(config).eval()
    return ToyModel(config, model, make_schedule(config.schedule, config.num_timesteps))


# ----------------------------------------------------------------------------------------------
# The score field is the model's score
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_score_field_arrows_are_the_oracle_score(prediction_type):
    schedule = make_schedule("cosine", 1000)
    timesteps = [900, 400, 50]
    figure = plots.plot_score_field(oracle_model(schedule, prediction_type), schedule, timesteps,
                                    prediction_type=prediction_type, extent=2.0, grid_size=9)
    quivers = [c for ax in figure.axes for c in ax.collections if isinstance(c, Quiver)]
    assert len(quivers) == len(timesteps)
    for quiver, t in zip(quivers, timesteps):
        grid = torch.tensor(np.column_stack([quiver.X, quiver.Y]))
        assert grid.shape == (81, 2)
        arrows = torch.tensor(np.column_stack([np.asarray(quiver.U), np.asarray(quiver.V)]))
        expected = oracle_score(schedule, grid, t)
        torch.testing.assert_close(arrows, expected, rtol=1e-4, atol=1e-5)
        # the arrows point towards the noisy data's mean: the score of a Gaussian
        towards = (schedule.alpha_bar(t).item() ** 0.5 * MEAN - grid) * arrows
        assert (towards.sum(dim=1) >= -1e-9).all()


def test_score_field_of_a_guided_model_uses_the_guided_output(tiny_run):
    """With a batch-sized guided denoiser, the plotted vectors are -ε̃ / sqrt(1 - ᾱ) of the guided ε."""
    grid_size, t = 5, 60
    guided = tiny_run.denoiser(label=1, guidance_scale=3.0, batch_size=grid_size**2)
    figure = plots.plot_score_field(guided, tiny_run.schedule, [t], grid_size=grid_size, extent=1.5)
    (quiver,) = [c for c in figure.axes[0].collections if isinstance(c, Quiver)]
    grid = plots.score_grid(1.5, grid_size)
    with torch.no_grad():
        epsilon = guided(grid, torch.full((grid_size**2,), t))
    expected = -epsilon.double() / (1 - tiny_run.schedule.alpha_bar(t).item()) ** 0.5
    torch.testing.assert_close(torch.tensor(np.column_stack([quiver.U, quiver.V])), expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Figures show toydiff's quantities
# ----------------------------------------------------------------------------------------------

def test_forward_process_panels_go_from_data_to_noise():
    schedule = make_schedule("cosine", 1000)
    points, labels = make_dataset("spiral", 2000, seed=3)
    figure = plots.plot_forward_process(points, schedule, [0, 500, 999], labels=labels)
    offsets = [torch.tensor(ax.collections[0].get_offsets().data) for ax in figure.axes]
    assert [ax.get_title().split()[2] for ax in figure.axes] == ["0", "500", "999"]
    # t = 0: the data itself (ᾱ_0 ≈ 1); t = T-1: noise, uncorrelated with the data, variance 1.
    assert (offsets[0] - points.double()).abs().max() < 0.05
    correlation = torch.corrcoef(torch.stack([offsets[2][:, 0], points[:, 0].double()]))[0, 1]
    assert abs(correlation) < 0.1
    assert abs(offsets[2].std().item() - 1.0) < 0.1
    # in between: x_t = sqrt(ᾱ) x_0 + sqrt(1 - ᾱ) ε, so its correlation with x_0 is sqrt(ᾱ_500)
    middle = torch.corrcoef(torch.stack([offsets[1][:, 0], points[:, 0].double()]))[0, 1]
    assert abs(middle.item() - schedule.alpha_bar(500).item() ** 0.5) < 0.05


def test_schedule_figure_marks_alpha_bar_at_the_last_step():
    schedules = {"cosine": make_schedule("cosine", 1000), "short": make_schedule("linear", 50)}
    figure = plots.plot_schedules(schedules)
    ax_alpha = figure.axes[0]
    markers = [line for line in ax_alpha.get_lines() if len(line.get_xdata()) == 1]
    assert len(markers) == 2
    for marker, schedule in zip(markers, schedules.values()):
        assert marker.get_xdata()[0] == 1.0
        assert marker.get_ydata()[0] == pytest.approx(schedule.alphas_cumprod[-1].item())
    legend = [text.get_text() for text in ax_alpha.get_legend().get_texts()]
    assert any("2.4e-09" in entry for entry in legend)


def test_trajectory_recorder_follows_the_sampler():
    schedule = make_schedule("cosine", 200)
    model = oracle_model(schedule)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    recorder = plots.TrajectoryRecorder()
    samples = ddim_sample(model, x_T, schedule, num_steps=20, callback=recorder)
    assert recorder.x.shape == (20, 64, 2) and recorder.pred_x0.shape == (20, 64, 2)
    torch.testing.assert_close(recorder.x[-1], samples)
    assert recorder.timesteps == sampling_timesteps(200, 20)
    assert recorder.next_timesteps[-1] == -1
    sparse = plots.TrajectoryRecorder(keep_every=7)
    ddim_sample(model, x_T, schedule, num_steps=20, callback=sparse)
    assert [s.step for s in sparse.states] == [0, 7, 14, 19]  # always keeps the last state
    with pytest.raises(ValueError, match="callback"):
        plots.TrajectoryRecorder().x


def test_trajectory_figure_draws_the_recorded_paths():
    schedule = make_schedule("cosine", 100)
    recorder = plots.TrajectoryRecorder()
    ddim_sample(oracle_model(schedule), torch.randn(10, 2), schedule, num_steps=10, callback=recorder)
    figure = plots.plot_trajectories(recorder, num_paths=4)
    paths = [line for line in figure.axes[0].get_lines() if len(line.get_xdata()) == 10]
    assert len(paths) == 4
    ends = {tuple(np.round(line.get_xydata()[-1], 5)) for line in paths}
    assert ends <= {tuple(np.round(p, 5)) for p in recorder.x[-1].double().numpy()}


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------

def test_save_figure_writes_a_png_and_creates_folders(tmp_path):
    grid = {"a": torch.randn(300, 2), "b": torch.randn(300, 2) * 0.5, "c": torch.randn(300, 2) * 0.3}
    figure = plots.plot_sample_grid(grid, "three sets")
    assert [ax.get_title() for ax in figure.axes if ax.get_visible()] == ["a", "b", "c"]
    assert figure.get_suptitle() == "three sets"
    path = plots.save_figure(figure, tmp_path / "deep" / "folder" / "grid.png")
    image = assert_png(path)
    assert image.width > 600 and image.height > 200


def test_sample_grid_view_is_fitted_to_the_data_not_to_diverged_samples():
    data = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)).clamp(-2, 2)
    diverged = data.clone()
    diverged[:3] = 1e4  # three samples blew up
    figure = plots.plot_sample_grid({"data": data, "model": diverged}, "diverged")
    data_ax, model_ax = figure.axes[:2]
    assert model_ax.get_xlim() == data_ax.get_xlim() and data_ax.get_xlim()[1] < 6
    assert model_ax.get_title() == "model\n(3 of 500 points outside the view)"
    assert data_ax.get_title() == "data"


def test_animation_is_a_multi_frame_gif(tmp_path):
    schedule = make_schedule("cosine", 100)
    recorder = plots.TrajectoryRecorder()
    ddim_sample(oracle_model(schedule), torch.randn(200, 2), schedule, num_steps=12, callback=recorder)
    path = plots.animate_sampling(recorder, tmp_path / "anim" / "sampling.gif", data=torch.randn(100, 2) * 0.5,
                                  max_frames=6, hold_frames=2)
    frames = gif_frames(path)
    assert len(frames) == 6  # Pillow stores the held last frame once, with a longer duration
    assert np.abs(frames[0] - frames[5]).sum() > 0, "the points did not move between the first and last frame"
    image = Image.open(path)
    durations = []
    for index in range(image.n_frames):
        image.seek(index)
        durations.append(image.info["duration"])
    assert durations[-1] == pytest.approx(3 * durations[0], rel=0.1)  # shown for 1 + 2 held frames
    # a plain (S, B, 2) tensor works too
    frames = gif_frames(plots.animate_sampling(recorder.x, tmp_path / "plain.gif", max_frames=50, hold_frames=0))
    assert len(frames) == 12


def test_write_data_figures(tmp_path):
    paths = plots.write_data_figures("moons", tmp_path)
    assert [p.name for p in paths] == ["moons_forward_process.png", "schedules.png"]
    for path in paths:
        assert_png(path, min_bytes=20_000)


def test_cli_plot_command_writes_the_model_figures(tmp_path, capsys):
    """`python -m toydiff plot --checkpoint` calls write_model_figures: three PNGs and a GIF."""
    config = ToyRunConfig(num_timesteps=100, num_train_points=500, model=MLPConfig(hidden_dim=16, num_blocks=1),
                          train=TrainConfig(steps=2, batch_size=32, progress=False, device="cpu"))
    train_toy_model(config, out_dir=tmp_path / "run")
    assert cli_main(["plot", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--out", str(tmp_path / "figs")]) == 0
    for name in ("samples.png", "trajectories.png", "score_field.png"):
        assert_png(tmp_path / "figs" / name, min_bytes=10_000)
    assert len(gif_frames(tmp_path / "figs" / "sampling.gif")) > 10
    assert capsys.readouterr().out.count("wrote") == 4


def test_the_video_grid_puts_each_video_beside_its_truth_or_alone_with_its_borders():
    from videodiff.plots import side_by_side_frames

    rng = np.random.default_rng(0)
    generated, truth = (rng.integers(0, 256, (3, 5, 4, 4, 3), dtype=np.uint8) for _ in range(2))
    paired = side_by_side_frames(generated, truth, num_context=2, columns=3, zoom=1, gap=2)
    alone = side_by_side_frames(generated, None, num_context=0, columns=3, zoom=1, gap=2)
    assert paired.shape == (5, 2 + 6 + 2, 2 + 3 * (2 * 6 + 2 + 2), 3)   # cells of two framed 4 x 4 panels
    assert alone.shape == (5, 2 + 6 + 2, 2 + 3 * (6 + 2), 3)            # cells of one
    # The first video: the generated frame framed at (2, 2), its truth beside it; borders white for the context
    # frames, red once generated, green for the truth.
    assert np.array_equal(paired[1, 3:7, 3:7], generated[0, 1]) and np.array_equal(paired[1, 3:7, 11:15], truth[0, 1])
    assert tuple(paired[1, 2, 2]) == (255, 255, 255) and tuple(paired[3, 2, 2]) == (220, 40, 40)
    assert tuple(paired[3, 2, 10]) == (40, 200, 40)
    assert np.array_equal(alone[4, 3:7, 3:7], generated[0, 4]) and tuple(alone[0, 2, 2]) == (220, 40, 40)
    assert np.array_equal(alone[4, 3:7, 11:15], generated[1, 4])          # the next video, one cell over
