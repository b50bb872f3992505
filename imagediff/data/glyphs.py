"""Handwritten-style digits 0-9, a stand-in for MNIST that needs no download.

Real handwriting is not available offline, but fonts are: matplotlib ships a dozen typefaces
(DejaVu, STIX, Computer Modern) in upright, bold, italic and monospaced styles. Each digit is drawn
once per font at twice the output resolution, centred and scaled like MNIST's digits, and also
drawn with thicker strokes (dilation): a small bank of templates. Every image then picks a template
and writes it with its own random "hand", an affine map made of a rotation, a slant (shear), a
scale, a squash and a translation, applied to all images at once with affine_grid and grid_sample.

Why templates at twice the resolution: bilinear sampling at an output pixel's centre averages the
2x2 template pixels around it, so the output is area-averaged (anti-aliased) rather than point-sampled,
and a dilation by one template pixel thickens a stroke by only half an output pixel per side.

Class names are the digits themselves, "0" to "9", the names load_idx gives MNIST's labels, so a
model trained on glyphs and one trained on MNIST share their prompts. Images are grayscale, white
digits on black, with ``channels`` = 1 (the default, like MNIST) or 3 (the gray value copied into R,
G and B, for models built for colour images).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import PathPatch
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D

from imagediff.data.dataset import (
    DataError, ImageDataset, balanced_labels, check_generation_request, to_model_range,
)

# Fonts that matplotlib installs with itself, so every machine draws the same templates.
FONT_FILES: tuple[str, ...] = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "cmr10.ttf", "cmss10.ttf",
)
DIGIT_CLASS_NAMES: list[str] = [str(digit) for digit in range(10)]

# MNIST fits each digit into a 20x20 box inside its 28x28 frame; the templates do the same.
DIGIT_BOX_FRACTION = 20 / 28

# Random ranges of one image's "hand". Translation is in image half-widths (0.12 ~ 2 pixels at 32x32).
ROTATION_DEGREES = 15.0
SLANT_RANGE = (-0.3, 0.3)  # horizontal shear: x += slant * y
SCALE_RANGE = (0.8, 1.1)
SQUASH_RANGE = (0.85, 1.15)  # extra horizontal scale: narrow or wide writing
TRANSLATION = 0.12
# Printed strokes are thinner than pen strokes, and eroding would break the hairlines of the serif
# fonts, so strokes are kept or thickened by one or two template pixels (half an output pixel) per side.
STROKE_CHANGES = (0, 1, 2)


# ---------------------------------------------------------------------------------------------
#                                      Templates from fonts
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def digit_templates(resolution: int) -> torch.Tensor:
    """Every digit in every font, (num_fonts, 10, resolution, resolution) in [0, 1], white on black.

    Each digit's outline (a matplotlib TextPath) is centred and scaled so its larger side fills
    DIGIT_BOX_FRACTION of the frame, then filled with anti-aliasing by the Agg renderer: one figure
    per font holds the ten digits side by side. Cached; do not modify the returned tensor.
    """
    fonts_folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    templates = []
    for font_file in FONT_FILES:
        font = FontProperties(fname=fonts_folder / font_file)
        dpi = 100
        figure = Figure(figsize=(10 * resolution / dpi, resolution / dpi), dpi=dpi, facecolor="black")
        for digit in range(10):
            outline = TextPath((0, 0), str(digit), size=1, prop=font)
            (left, bottom), (right, top) = outline.get_extents().get_points()
            scale = DIGIT_BOX_FRACTION * resolution / max(right - left, top - bottom)
            # Figure pixels, origin at the bottom left: the digit's box centre goes to its tile's centre.
            to_tile = (Affine2D().translate(-(left + right) / 2, -(bottom + top) / 2).scale(scale)
                       .translate((digit + 0.5) * resolution, resolution / 2))
            figure.add_artist(PathPatch(outline, transform=to_tile, facecolor="white", edgecolor="none"))
        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        gray = np.asarray(canvas.buffer_rgba())[:, :, 0].astype(np.float32) / 255  # (res, 10 * res)
        templates.append(torch.from_numpy(gray).reshape(resolution, 10, resolution).permute(1, 0, 2))
    return torch.stack(templates)  # (F, 10, res, res)


# ---------------------------------------------------------------------------------------------
#                                   A random hand for each image
# ---------------------------------------------------------------------------------------------


def random_hand_transforms(num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Random affine maps (N, 2, 3) for affine_grid: each takes output coordinates to template ones.

    Each image's forward map is x_out = A x_in + b with A = rotation @ slant @ scale; affine_grid
    asks where each *output* pixel comes from, so the inverse, x_in = A⁻¹ (x_out - b), is returned.
    """
    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(num_samples).uniform_(low, high, generator=generator)  # (N,)

    angle = uniform(-ROTATION_DEGREES, ROTATION_DEGREES) * (math.pi / 180)
    slant, scale, squash = uniform(*SLANT_RANGE), uniform(*SCALE_RANGE), uniform(*SQUASH_RANGE)
    translation = torch.stack([uniform(-TRANSLATION, TRANSLATION), uniform(-TRANSLATION, TRANSLATION)], dim=1)
    ones, zeros = torch.ones(num_samples), torch.zeros(num_samples)

    def matrices(a, b, c, d):  # (N, 2, 2) from four (N,) entries, row by row
        return torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], dim=-2)

    rotation = matrices(angle.cos(), -angle.sin(), angle.sin(), angle.cos())
    shear = matrices(ones, slant, zeros, ones)
    stretch = matrices(scale * squash, zeros, zeros, scale)
    forward = rotation @ shear @ stretch  # (N, 2, 2)
    inverse = torch.linalg.inv(forward)  # (N, 2, 2)
    return torch.cat([inverse, -inverse @ translation[:, :, None]], dim=2)  # (N, 2, 3)


def with_stroke_widths(templates: torch.Tensor) -> torch.Tensor:
    """Templates (F, 10, R, R) drawn with every stroke change in STROKE_CHANGES: (F, S, 10, R, R).

    A 3x3 maximum filter grows white strokes by one pixel on every side (dilation); the same filter
    applied to the negated image shrinks them (erosion). A change of k applies it |k| times.
    """
    variants = []
    for change in STROKE_CHANGES:
        variant = templates
        for _ in range(abs(change)):
            sign = 1 if change > 0 else -1  # erosion is dilation of the background
            variant = sign * F.max_pool2d(sign * variant, kernel_size=3, stride=1, padding=1)
        variants.append(variant)
    return torch.stack(variants, dim=1)


def make_glyphs(
    num_samples: int,
    seed: int = 0,
    image_size: int = 32,
    channels: int = 1,
    chunk_size: int = 2048,
) -> ImageDataset:
    """``num_samples`` handwritten-style digits, (N, channels, image_size, image_size) in [-1, 1].

    Ten classes named "0" to "9" (DIGIT_CLASS_NAMES); labels are balanced (class counts differ by at
    most one) in a random order. ``channels`` is 1 (grayscale) or 3 (gray copied to RGB). The same
    seed gives identical tensors. ``chunk_size`` images are written at a time, which bounds memory
    without changing the result.
    """
    check_generation_request(num_samples, image_size)
    if channels not in (1, 3):
        raise DataError(f"glyphs have 1 (grayscale) or 3 (RGB) channels, got channels={channels}")
    templates = with_stroke_widths(digit_templates(2 * image_size))  # (F, S, 10, 2H, 2W)
    generator = torch.Generator().manual_seed(seed)
    labels = balanced_labels(num_samples, 10, generator)  # (N,)
    fonts = torch.randint(len(FONT_FILES), (num_samples,), generator=generator)  # (N,)
    strokes = torch.randint(len(STROKE_CHANGES), (num_samples,), generator=generator)  # (N,)
    transforms = random_hand_transforms(num_samples, generator)  # (N, 2, 3)

    chunks = []
    for i in range(0, num_samples, chunk_size):
        chunk = slice(i, i + chunk_size)
        digits = templates[fonts[chunk], strokes[chunk], labels[chunk]][:, None]  # (n, 1, 2H, 2W)
        # The grid is laid out at the output size; its coordinates are normalised to [-1, 1], so it
        # reads the template at twice the resolution without any change.
        grid = F.affine_grid(transforms[chunk], [len(digits), 1, image_size, image_size], align_corners=False)
        # Outside the template is background: zero padding is black.
        chunks.append(F.grid_sample(digits, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    images = torch.cat(chunks).expand(-1, channels, -1, -1).contiguous()  # (N, C, H, W)
    return ImageDataset(to_model_range(images), labels, list(DIGIT_CLASS_NAMES))
