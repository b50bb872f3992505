"""Figures of the toy layer: the forward process, schedules, trajectories, score fields, samples.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` with a caption-like title and
:func:`save_figure` writes it as a PNG.  Figures are built with matplotlib's object-oriented API on the
Agg canvas, never through ``pyplot``: nothing opens a window, nothing piles up in pyplot's list of
open figures, and a notebook still shows a returned figure inline.

The plots never compute diffusion themselves: noising is ``schedule.add_noise``, the score is
:func:`toydiff.guidance.guided_score` (``-ε̂ / sqrt(1 - ᾱ_t)``), trajectories come from a sampler's
``callback`` and distances from :mod:`toydiff.metrics`.

    recorder = TrajectoryRecorder()
    points = run.sample(2000, sampler="ddim", num_steps=50, callback=recorder)
    save_figure(plot_trajectories(recorder, data=data), "runs/figures/trajectories.png")
    animate_sampling(recorder, "runs/figures/sampling.gif", data=data)
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from matplotlib.animation import PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from toydiff.guidance import guided_score
from toydiff.samplers import SamplerState
from toydiff.schedules import NoiseSchedule, make_schedule

POINT_SIZE = 3.0
DATA_COLOUR = "0.75"          # light grey: the real data, drawn behind whatever is being shown
SAMPLE_COLOUR = "tab:blue"
LABEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                 "tab:pink", "tab:olive")


# ----------------------------------------------------------------------------------------------
# Figures and files
# ----------------------------------------------------------------------------------------------

def new_figure(num_panels: int = 1, panel_size: float = 3.2, rows: int = 1, square: bool = True):
    """A figure of ``rows`` x ceil(num_panels / rows) panels on the Agg canvas.  Returns (fig, axes list)."""
    columns = math.ceil(num_panels / rows)
    height = panel_size if square else panel_size * 0.8
    fig = Figure(figsize=(panel_size * columns, height * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)  # an explicit non-interactive canvas: savefig and PillowWriter draw on it
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[num_panels:]:
        ax.set_visible(False)
    return fig, axes[:num_panels]


def save_figure(fig: Figure, path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (creating folders) and close it.  Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    if "matplotlib.pyplot" in sys.modules:  # a figure made with pyplot also leaves pyplot's registry
        sys.modules["matplotlib.pyplot"].close(fig)
    return path


def _numpy(points) -> np.ndarray:
    if isinstance(points, torch.Tensor):
        return points.detach().cpu().double().numpy()
    return np.asarray(points, dtype=np.float64)


def _scatter(ax, points, labels=None, colour: str = SAMPLE_COLOUR, size: float = POINT_SIZE,
             alpha: float = 0.6, zorder: int = 2) -> None:
    """Scatter (N, 2) points; with labels (N,), one colour per class."""
    points = _numpy(points)
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, c=colour, alpha=alpha, linewidths=0, zorder=zorder)
        return
    labels = _numpy(labels).astype(int)
    colours = np.array(LABEL_COLOURS)[labels % len(LABEL_COLOURS)]
    ax.scatter(points[:, 0], points[:, 1], s=size, c=colours, alpha=alpha, linewidths=0, zorder=zorder)


def _square_panel(ax, extent: float) -> None:
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _extent_of(*point_sets, margin: float = 1.15, at_least: float = 1.0) -> float:
    """Half-width of a square view holding (nearly) every point: the 99.5th percentile of |coordinate|."""
    values = [np.abs(_numpy(p)).ravel() for p in point_sets if p is not None and len(p)]
    finite = np.concatenate(values) if values else np.zeros(1)
    finite = finite[np.isfinite(finite)]
    return max(at_least, float(np.quantile(finite, 0.995)) * margin) if finite.size else at_least


# ----------------------------------------------------------------------------------------------
# The forward process and the noise schedules
# ----------------------------------------------------------------------------------------------

def plot_forward_process(points: torch.Tensor, schedule: NoiseSchedule, timesteps: Sequence[int],
                         labels: Optional[torch.Tensor] = None, seed: int = 0,
                         title: Optional[str] = None) -> Figure:
    """One panel per timestep: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε drawn with ``schedule.add_noise``.

    points: (N, 2) clean data;  labels: (N,) to colour the classes;  the same ε is used in every
    panel, so a point can be followed from panel to panel.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(points.shape, generator=generator, dtype=points.dtype)  # (N, 2), one ε for all t
    fig, axes = new_figure(len(timesteps))
    extent = max(3.2, _extent_of(points))
    for ax, t in zip(axes, timesteps):
        x_t = schedule.add_noise(points, noise, int(t))                           # (N, 2)
        _scatter(ax, x_t, labels)
        _square_panel(ax, extent)
        alpha_bar = float(schedule.alpha_bar(int(t)))
        ax.set_title(f"t = {t}   ᾱ_t = {alpha_bar:.3g}", fontsize=10)
    fig.suptitle(title or f"Forward process q(x_t | x_0): x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε  "
                          f"({schedule.kind} schedule, T = {schedule.num_timesteps})")
    return fig


def plot_schedules(schedules: Mapping[str, NoiseSchedule], title: Optional[str] = None) -> Figure:
    """ᾱ_t and log SNR(t) = log(ᾱ_t / (1 - ᾱ_t)) against t / T for several named schedules.

    The dot at the right end of each curve marks ᾱ at the last step: a schedule whose ᾱ_T is far
    from 0 never turns the data into noise, so sampling from N(0, I) starts from the wrong place.
    """
    fig, (ax_alpha, ax_snr) = new_figure(2, panel_size=4.6, square=False)
    for index, (name, schedule) in enumerate(schedules.items()):
        colour = LABEL_COLOURS[index % len(LABEL_COLOURS)]
        T = schedule.num_timesteps
        t = torch.arange(T)
        fraction = (t.double() + 1) / T                                  # t / T, ending at 1
        alpha_bar = schedule.alpha_bar(t).numpy()
        alpha_bar_T = float(alpha_bar[-1])
        ax_alpha.plot(fraction, alpha_bar, color=colour, label=f"{name}: ᾱ_T = {alpha_bar_T:.2g}")
        ax_alpha.plot([1.0], [alpha_bar_T], "o", color=colour, markersize=5)
        with np.errstate(divide="ignore"):
            ax_snr.plot(fraction, schedule.log_snr(t).numpy(), color=colour, label=name)
    ax_alpha.set_xlabel("t / T")
    ax_alpha.set_ylabel("ᾱ_t  (signal kept: √ᾱ_t)")
    ax_alpha.set_title("ᾱ_t; the dot marks ᾱ at the last step", fontsize=10)
    ax_alpha.legend(fontsize=8)
    ax_snr.set_xlabel("t / T")
    ax_snr.set_ylabel("log SNR(t) = log ᾱ_t - log(1 - ᾱ_t)")
    ax_snr.axhline(0.0, color="0.6", linewidth=0.8, linestyle=":")
    ax_snr.set_title("log signal-to-noise ratio", fontsize=10)
    ax_snr.legend(fontsize=8)
    fig.suptitle(title or "Noise schedules: how much signal survives at each step")
    return fig


# ----------------------------------------------------------------------------------------------
# Samples and trajectories
# ----------------------------------------------------------------------------------------------

def plot_sample_grid(point_sets: Mapping[str, torch.Tensor], title: str,
                     labels: Optional[Mapping[str, torch.Tensor]] = None,
                     background: Optional[torch.Tensor] = None, extent: Optional[float] = None) -> Figure:
    """Several (N, 2) point sets side by side, one panel per entry, titled by its key.

    labels: optional {key: (N,) labels} to colour the classes of some panels;
    background: optional (M, 2) points (e.g. the data) drawn in light grey behind every panel.
    The view is fitted to the background, or else to the first set (usually the data), so that a
    few diverged samples cannot shrink everything else to a dot; a panel whose points fall outside
    the view says how many.
    """
    fig, axes = new_figure(len(point_sets), rows=math.ceil(len(point_sets) / 4))
    if extent is None:
        reference = background if background is not None else next(iter(point_sets.values()))
        extent = _extent_of(reference, margin=1.3)
    for ax, (name, points) in zip(axes, point_sets.items()):
        if background is not None:
            _scatter(ax, background, colour=DATA_COLOUR, alpha=0.5, zorder=1)
        _scatter(ax, points, None if labels is None else labels.get(name))
        _square_panel(ax, extent)
        outside = int((np.abs(_numpy(points)) > extent).any(axis=1).sum())
        ax.set_title(name + (f"\n({outside} of {len(points)} points outside the view)" if outside else ""),
                     fontsize=9)
    fig.suptitle(title)
    return fig


class TrajectoryRecorder:
    """A sampler ``callback`` that keeps the states it is handed: pass it as ``callback=recorder``.

    keep_every: keep every k-th step (and always the last one), e.g. 20 for a 1000-step DDPM run.
    After sampling, ``x`` is (S, B, D): the sample after each of the S kept steps, ``pred_x0``
    (S, B, D): the model's estimate of the clean point at those steps, ``timesteps`` the t the model
    saw and ``next_timesteps`` the level each x belongs to (-1: clean).  The starting noise x_T is not
    among them: the sampler's callback reports states after a step.
    """

    def __init__(self, keep_every: int = 1):
        self.keep_every = keep_every
        self.states: list[SamplerState] = []

    def __call__(self, state: SamplerState) -> None:
        last = state.step == state.num_steps - 1
        if state.step % self.keep_every == 0 or last:
            self.states.append(SamplerState(state.step, state.num_steps, state.t, state.t_next,
                                            state.x.detach().cpu().clone(), state.pred_x0.detach().cpu().clone()))

    def __len__(self) -> int:
        return len(self.states)

    @property
    def x(self) -> torch.Tensor:
        self._check_not_empty()
        return torch.stack([s.x for s in self.states])          # (S, B, D)

    @property
    def pred_x0(self) -> torch.Tensor:
        self._check_not_empty()
        return torch.stack([s.pred_x0 for s in self.states])    # (S, B, D)

    @property
    def timesteps(self) -> list[int]:
        return [s.t for s in self.states]

    @property
    def next_timesteps(self) -> list[int]:
        return [s.t_next for s in self.states]

    def _check_not_empty(self) -> None:
        if not self.states:
            raise ValueError("the recorder holds no states: pass it to a sampler as callback=recorder first")


def _trajectory_tensor(trajectory) -> tuple[torch.Tensor, list[str]]:
    """(S, B, D) positions, and a caption for each frame, from a recorder or a plain tensor."""
    if isinstance(trajectory, TrajectoryRecorder):
        captions = [f"step {s.step + 1} of {s.num_steps}, now at t = {s.t_next}" for s in trajectory.states]
        return trajectory.x, captions
    x = torch.as_tensor(trajectory)
    if x.ndim != 3:
        raise ValueError(f"a trajectory is (steps, points, dims); got shape {tuple(x.shape)}")
    return x, [f"step {i + 1} of {x.shape[0]}" for i in range(x.shape[0])]


def _view_of_sampling(samples: torch.Tensor, data: Optional[torch.Tensor]) -> float:
    """Half-width of a view of sampling: the data (or else the samples), and the N(0, I) start (±3)."""
    return max(3.0, _extent_of(data if data is not None else samples, margin=1.3))


def plot_trajectories(trajectory, data: Optional[torch.Tensor] = None, num_paths: int = 16,
                      title: Optional[str] = None) -> Figure:
    """Paths of ``num_paths`` points through the sampler, over the data in grey.

    trajectory: a :class:`TrajectoryRecorder` (then a second panel shows the model's x̂_0 along the
    same paths) or an (S, B, 2) tensor.  A circle marks where a path starts, a dot where it ends.
    """
    x, _ = _trajectory_tensor(trajectory)
    paths = {"x_t along sampling": x}
    if isinstance(trajectory, TrajectoryRecorder):
        paths["the model's x̂_0 at each step"] = trajectory.pred_x0
    fig, axes = new_figure(len(paths), panel_size=4.2)
    chosen = torch.linspace(0, x.shape[1] - 1, min(num_paths, x.shape[1])).round().long()
    extent = _view_of_sampling(x[:, chosen], data)
    for ax, (name, positions) in zip(axes, paths.items()):
        if data is not None:
            _scatter(ax, data, colour=DATA_COLOUR, alpha=0.5, zorder=1)
        for k, i in enumerate(chosen.tolist()):
            path = _numpy(positions[:, i])                                        # (S, 2)
            colour = LABEL_COLOURS[k % len(LABEL_COLOURS)]
            ax.plot(path[:, 0], path[:, 1], color=colour, linewidth=0.9, alpha=0.8, zorder=2)
            ax.plot(*path[0], "o", markerfacecolor="none", color=colour, markersize=5, zorder=3)
            ax.plot(*path[-1], "o", color=colour, markersize=3.5, zorder=3)
        _square_panel(ax, extent)
        ax.set_title(name, fontsize=10)
    num_steps = trajectory.states[-1].num_steps if isinstance(trajectory, TrajectoryRecorder) else x.shape[0]
    fig.suptitle(title or f"Denoising trajectories of {len(chosen)} points over {num_steps} steps "
                          "(circle: start, dot: end; grey: data)")
    return fig


def animate_sampling(trajectory, path, data: Optional[torch.Tensor] = None, fps: int = 10,
                     max_frames: int = 40, hold_frames: int = 6, title: str = "Sampling") -> Path:
    """Write an animated GIF of the sample moving from noise to data (matplotlib's PillowWriter).

    trajectory: a :class:`TrajectoryRecorder` or an (S, B, 2) tensor; at most ``max_frames`` evenly
    spaced steps are drawn (always the last), and the final frame is held ``hold_frames`` times.
    data: (M, 2) points drawn in grey behind the sample.  Returns the path.
    """
    x, captions = _trajectory_tensor(trajectory)
    frames = np.unique(np.linspace(0, x.shape[0] - 1, min(max_frames, x.shape[0])).round().astype(int))
    frames = list(frames) + [frames[-1]] * hold_frames
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax,) = new_figure(1, panel_size=4.0)
    extent = _view_of_sampling(x[-1], data)
    if data is not None:
        _scatter(ax, data, colour=DATA_COLOUR, alpha=0.5, zorder=1)
    first = _numpy(x[frames[0]])
    sample = ax.scatter(first[:, 0], first[:, 1], s=POINT_SIZE, c=SAMPLE_COLOUR, alpha=0.7, linewidths=0, zorder=2)
    _square_panel(ax, extent)
    ax.set_title(f"{title}: {captions[frames[0]]}", fontsize=9)
    fig.canvas.draw()
    fig.set_layout_engine("none")  # lay out once: only the points and the title change between frames
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(path), dpi=80):
        for frame in frames:
            sample.set_offsets(_numpy(x[frame]))
            ax.set_title(f"{title}: {captions[frame]}", fontsize=9)
            writer.grab_frame()
    return path


# ----------------------------------------------------------------------------------------------
# The score field
# ----------------------------------------------------------------------------------------------

def score_grid(extent: float, grid_size: int) -> torch.Tensor:
    """A grid_size x grid_size grid of points on [-extent, extent]², as (grid_size², 2) float32."""
    axis = torch.linspace(-extent, extent, grid_size)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def plot_score_field(model: Callable, schedule: NoiseSchedule, timesteps: Sequence[int],
                     prediction_type: str = "epsilon", points: Optional[torch.Tensor] = None,
                     extent: float = 2.5, grid_size: int = 17, title: Optional[str] = None) -> Figure:
    """Quiver of the model's score ∇_x log p_t(x) = -ε̂(x, t) / sqrt(1 - ᾱ_t) on a grid, one panel per t.

    model: a ``model(x, t)`` as the samplers take it (e.g. ``run.denoiser()``; a guided one works too,
    its batch must then be grid_size²);  points: (N, 2) samples or data drawn in grey behind the arrows.
    The arrows are the score itself (the quiver's U, V), drawn at a per-panel scale: its size changes
    by orders of magnitude with t, its direction is what to look at.
    """
    grid = score_grid(extent, grid_size)                                               # (G², 2)
    score_of = guided_score(model, schedule, prediction_type)
    cell = 2 * extent / (grid_size - 1)
    fig, axes = new_figure(len(timesteps))
    for ax, t in zip(axes, timesteps):
        t_batch = torch.full((grid.shape[0],), int(t), dtype=torch.int64)              # (G²,)
        with torch.no_grad():
            score = _numpy(score_of(grid, t_batch))                                    # (G², 2)
        if points is not None:
            _scatter(ax, points, colour=DATA_COLOUR, alpha=0.6, zorder=1)
        length = np.linalg.norm(score, axis=1)
        typical = float(np.quantile(length, 0.9)) or 1.0
        # scale_units="xy": an arrow of length |score| / scale data units; the 90th percentile fills a cell.
        ax.quiver(_numpy(grid[:, 0]), _numpy(grid[:, 1]), score[:, 0], score[:, 1], angles="xy",
                  scale_units="xy", scale=typical / (0.9 * cell), width=0.004, color="tab:red", zorder=2)
        _square_panel(ax, extent * 1.05)
        alpha_bar = float(schedule.alpha_bar(int(t)))
        ax.set_title(f"t = {t}  ᾱ_t = {alpha_bar:.3g}\ntypical |score| = {typical:.3g}", fontsize=9)
    fig.suptitle(title or "Score of the model, ∇ log p_t(x) = -ε̂(x, t) / √(1 - ᾱ_t), over its samples (grey)")
    return fig


# ----------------------------------------------------------------------------------------------
# Training curves and sweeps
# ----------------------------------------------------------------------------------------------

def plot_training_history(history: Sequence[dict], num_timesteps: Optional[int] = None,
                          title: Optional[str] = None) -> Figure:
    """Left: the training loss against the step.  Right: the loss in bins of t, early and late in training.

    history: the run's list of log entries ``{"step", "loss", "lr", "loss_by_t"}`` (``run.history``).
    """
    if not history:
        raise ValueError("the training history is empty: nothing to plot (was the run trained?)")
    fig, (ax_loss, ax_bins) = new_figure(2, panel_size=4.6, square=False)
    steps = [entry["step"] for entry in history]
    ax_loss.plot(steps, [entry["loss"] for entry in history], color=SAMPLE_COLOUR)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("loss (mean over the log interval)")
    ax_loss.set_title("training loss", fontsize=10)
    with_bins = [entry for entry in history if entry.get("loss_by_t")]
    if with_bins:
        chosen = {f"log interval ending at step {with_bins[0]['step']}": with_bins[0]}
        if len(with_bins) > 1:
            chosen[f"log interval ending at step {with_bins[-1]['step']}"] = with_bins[-1]
        for index, (name, entry) in enumerate(chosen.items()):
            bins = np.asarray(entry["loss_by_t"], dtype=np.float64)
            centres = (np.arange(len(bins)) + 0.5) / len(bins)
            if num_timesteps:
                centres = centres * num_timesteps
            ax_bins.plot(centres, bins, "o-", color=LABEL_COLOURS[index], label=name)
        ax_bins.set_yscale("log")
        ax_bins.legend(fontsize=8)
    ax_bins.set_xlabel("timestep t (bin centre)" if num_timesteps else "t / T (bin centre)")
    ax_bins.set_ylabel("loss in the bin")
    ax_bins.set_title("loss by noise level", fontsize=10)
    fig.suptitle(title or "Training the denoiser: the loss, overall and by timestep")
    return fig


def plot_sweep(x: Sequence, series: Mapping[str, Sequence[float]], *, xlabel: str, ylabel: str, title: str,
               floor: Optional[float] = None, floor_label: str = "floor (data vs data)",
               logx: bool = False, logy: bool = False) -> Figure:
    """One measurement against one setting, a line per named series; ``floor`` as a dashed line."""
    fig, (ax,) = new_figure(1, panel_size=5.0, square=False)
    for index, (name, values) in enumerate(series.items()):
        ax.plot(list(x), list(values), "o-", color=LABEL_COLOURS[index % len(LABEL_COLOURS)], label=name)
    if floor is not None:
        ax.axhline(floor, color="0.4", linestyle="--", linewidth=1, label=floor_label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# Everything for a data set, or for a trained model (the CLI's `plot` command)
# ----------------------------------------------------------------------------------------------

def write_data_figures(dataset_name: str, out_dir, num_points: int = 3000) -> list[Path]:
    """The forward process on ``dataset_name`` and the named schedules, as PNGs in ``out_dir``."""
    from toydiff.data import make_dataset
    from toydiff.experiment import ToyRunConfig

    recipe = ToyRunConfig(dataset=dataset_name)
    out_dir = Path(out_dir)
    points, labels = make_dataset(dataset_name, num_points, seed=1)
    schedule = make_schedule(recipe.schedule, recipe.num_timesteps)
    T = schedule.num_timesteps
    timesteps = sorted({0, T // 20, T // 10, T // 4, T // 2, T - 1})
    forward = plot_forward_process(points, schedule, timesteps, labels=labels,
                                   title=f"Forward process on the {dataset_name}: x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε "
                                         f"({schedule.kind}, T = {T}; colour = class)")
    schedules = {f"{kind}, T = 1000": make_schedule(kind, 1000) for kind in ("linear", "scaled_linear", "cosine",
                                                                             "sigmoid")}
    # DDPM's β range (1e-4 … 0.02) squeezed into 100 steps, without rescaling: it never reaches noise.
    schedules["DDPM β range over T = 100"] = NoiseSchedule(torch.linspace(1e-4, 0.02, 100, dtype=torch.float64),
                                                           kind="linear, unscaled")
    return [
        save_figure(forward, out_dir / f"{dataset_name}_forward_process.png"),
        save_figure(plot_schedules(schedules), out_dir / "schedules.png"),
    ]


def write_model_figures(run, out_dir, num_points: int = 2000, seed: int = 0) -> list[Path]:
    """Samples, trajectories, the score field and a sampling GIF of a trained :class:`ToyModel`.

    Kept fast (a few seconds on two cores): DDIM samplers only, the GIF from the 50-step DDIM run.
    """
    from toydiff.data import make_dataset
    from toydiff.metrics import energy_distance

    out_dir = Path(out_dir)
    name = run.config.dataset
    data, _ = make_dataset(name, num_points, seed=1000 + seed)
    second_data, _ = make_dataset(name, num_points, seed=2000 + seed)
    floor = energy_distance(second_data, data)

    recorder = TrajectoryRecorder()
    samplers = {
        "DDIM η = 1, 100 steps (ancestral, DDPM-like)": dict(num_steps=100, eta=1.0),
        "DDIM η = 0, 50 steps": dict(num_steps=50, eta=0.0, callback=recorder),
        "DDIM η = 0, 10 steps": dict(num_steps=10, eta=0.0),
    }
    point_sets = {f"data ({name})\nenergy distance floor {floor:.4f}": data}
    for label, options in samplers.items():
        samples = run.sample(num_points, sampler="ddim", seed=seed, **options)
        point_sets[f"{label}\nenergy distance {energy_distance(samples, data):.4f}"] = samples
    grid = plot_sample_grid(point_sets, f"Samples of the trained model against fresh {name} data "
                                        f"({num_points} points each)")
    T = run.schedule.num_timesteps
    score = plot_score_field(run.denoiser(), run.schedule, [T - 1, T // 2, T // 5, T // 20],
                             prediction_type=run.config.prediction_type, points=recorder.x[-1],
                             extent=_extent_of(data))
    return [
        save_figure(grid, out_dir / "samples.png"),
        save_figure(plot_trajectories(recorder, data=data,
                                      title="DDIM (η = 0, 50 steps): trajectories from noise to data, "
                                            "and the model's x̂_0 along them"),
                    out_dir / "trajectories.png"),
        save_figure(score, out_dir / "score_field.png"),
        animate_sampling(recorder, out_dir / "sampling.gif", data=data, title="DDIM, 50 steps"),
    ]
