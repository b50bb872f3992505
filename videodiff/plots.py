"""Pictures of videos: rollouts beside the truth as an animated GIF, and frame strips as PNG.

Frames are uint8 (N, F, H, W, 3), as videodiff.data stores them. The GIF is written with Pillow,
which matplotlib already depends on (no new dependency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


def _check_frames(frames: np.ndarray, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 frames (N, F, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def side_by_side_frames(generated: np.ndarray, truth: Optional[np.ndarray], num_context: int, columns: int = 4,
                        zoom: int = 3, gap: int = 2) -> np.ndarray:
    """One picture per time step: a grid of videos, each cell the generated frame beside the true one.

    Context frames get a white border, generated ones a red border, the truth a green one, so that a
    reader sees at a glance where the model takes over. truth None: the generated videos alone (videos made
    from nothing, which continue no true video). Returns uint8 (F, height, width, 3).
    """
    generated = _check_frames(generated, "generated")
    if truth is not None:
        truth = _check_frames(truth, "truth")
        if generated.shape != truth.shape:
            raise ValueError(f"generated {generated.shape} and truth {truth.shape} must have the same shape")
    count, frames, height, width, _ = generated.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    panels = [(0, generated)] if truth is None else [(0, generated), (width * zoom + 2 + gap, truth)]
    cell_h, cell_w = height * zoom + 2, len(panels) * (width * zoom + 2) + (len(panels) - 1) * gap
    canvas = np.full((frames, rows * (cell_h + gap) + gap, columns * (cell_w + gap) + gap, 3), 40, np.uint8)
    for index in range(count):
        top = gap + (index // columns) * (cell_h + gap)
        left = gap + (index % columns) * (cell_w + gap)
        for frame in range(frames):
            for offset, video in panels:
                if video is truth:
                    border = (40, 200, 40)
                else:
                    border = (255, 255, 255) if frame < num_context else (220, 40, 40)
                x0 = left + offset
                canvas[frame, top:top + cell_h, x0:x0 + width * zoom + 2] = border
                picture = video[index, frame].repeat(zoom, axis=0).repeat(zoom, axis=1)
                canvas[frame, top + 1:top + 1 + height * zoom, x0 + 1:x0 + 1 + width * zoom] = picture
    return canvas


def save_rollout_gif(generated: np.ndarray, truth: Optional[np.ndarray], path, num_context: int, columns: int = 4,
                     zoom: int = 3, milliseconds_per_frame: int = 120) -> Path:
    """An animated GIF: every video's rollout (left, red border once generated) beside its truth (right), or
    alone where ``truth`` is None."""
    from PIL import Image

    pictures = side_by_side_frames(generated, truth, num_context, columns, zoom)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(picture) for picture in pictures]
    images[0].save(path, save_all=True, append_images=images[1:], duration=milliseconds_per_frame, loop=0)
    return path


def save_frame_strips(videos: Sequence[np.ndarray], labels: Sequence[str], path, frames: Optional[Sequence[int]] = None,
                      title: str = "", num_context: Optional[int] = None) -> Path:
    """A PNG with one row per video (uint8 (F, H, W, 3) each), the chosen frames left to right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = [np.asarray(video) for video in videos]
    frames = list(frames) if frames is not None else list(range(videos[0].shape[0]))
    figure, axes = plt.subplots(len(videos), len(frames), figsize=(0.9 * len(frames), 1.0 * len(videos) + 0.4),
                                squeeze=False)
    for row, (video, label) in enumerate(zip(videos, labels)):
        for column, frame in enumerate(frames):
            axis = axes[row, column]
            axis.imshow(video[frame], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if num_context is not None and frame >= num_context:
                for spine in axis.spines.values():
                    spine.set_edgecolor("tab:red")
            if row == 0:
                axis.set_title(str(frame), fontsize=7)
        axes[row, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
