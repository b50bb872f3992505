"""Coloured shapes on a black background: the default image data set.

Each image shows one shape (circle, square, triangle, cross, ring, diamond or star) in one colour
(red, green, blue, yellow, cyan or magenta), at a random position, size and rotation. Every
shape-and-colour pair is one class, named the way a person would say it ("red circle"), because
those names are the text prompts of the later lessons.

How an image is drawn, for all images at once (no drawing library, no loop over images):
  1. Every pixel centre p is moved into the shape's own frame: q = R(-angle) (p - centre) / size,
     where the shape touches the unit circle (``size`` is its circumradius).
  2. The signed distance d(q) to the shape's outline is measured: negative inside, positive outside.
     Circles and rings have closed forms; every other shape is a polygon.
  3. The pixel's coverage is clamp(1/2 - d / pixel_width, 0, 1): 1 well inside, 0 well outside and a
     linear ramp one pixel wide across the edge. This is analytic anti-aliasing; it gives the same
     soft edges as supersampling, without rendering at a higher resolution.
  4. image = coverage * colour, on black.

Coordinates: the image spans [-1, 1] on both axes with y pointing up, so at angle 0 the triangle
points to the top of the picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral

import torch

from imagediff.data.dataset import (
    DataError, ImageDataset, balanced_labels, check_generation_request, to_model_range,
)

# ---------------------------------------------------------------------------------------------
#                                        Shapes and colours
# ---------------------------------------------------------------------------------------------


def regular_polygon(
    num_corners: int, first_corner_angle: float, radii: Sequence[float] = (1.0,)
) -> torch.Tensor:
    """Corners (num_corners, 2) evenly spaced in angle, counter-clockwise from first_corner_angle.

    ``radii`` cycles over the corners: (1.0,) gives a regular polygon, (1.0, 0.45) a star.
    """
    angles = first_corner_angle + 2 * math.pi * torch.arange(num_corners, dtype=torch.float64) / num_corners
    radius = torch.tensor(radii, dtype=torch.float64).repeat(num_corners // len(radii))
    return torch.stack([radius * angles.cos(), radius * angles.sin()], dim=1).float()


# A plus sign: two bars of half-length 0.95 and half-width 0.3, so its corners lie just inside the
# unit circle (0.95² + 0.3² < 1), traced counter-clockwise from the right arm.
_ARM, _HALF_WIDTH = 0.95, 0.3
CROSS_CORNERS = torch.tensor([
    (_ARM, -_HALF_WIDTH), (_ARM, _HALF_WIDTH), (_HALF_WIDTH, _HALF_WIDTH),
    (_HALF_WIDTH, _ARM), (-_HALF_WIDTH, _ARM), (-_HALF_WIDTH, _HALF_WIDTH),
    (-_ARM, _HALF_WIDTH), (-_ARM, -_HALF_WIDTH), (-_HALF_WIDTH, -_HALF_WIDTH),
    (-_HALF_WIDTH, -_ARM), (_HALF_WIDTH, -_ARM), (_HALF_WIDTH, -_HALF_WIDTH),
])

# Polygons by name, in the shape's own frame (circumradius 1). The diamond is a rhombus 0.6 wide
# and 1 tall (half-diagonals), so that no rotation turns it into the square.
POLYGONS: dict[str, torch.Tensor] = {
    "square": regular_polygon(4, math.pi / 4),  # sides parallel to the axes at angle 0
    "triangle": regular_polygon(3, math.pi / 2),  # equilateral, pointing up at angle 0
    "cross": CROSS_CORNERS,
    "diamond": torch.tensor([(0.0, 1.0), (-0.6, 0.0), (0.0, -1.0), (0.6, 0.0)]),
    "star": regular_polygon(10, math.pi / 2, radii=(1.0, 0.45)),  # five points, inner radius 0.45
}

# The ring is the set of points whose distance to the centre lies in [RING_INNER_RADIUS, 1].
RING_INNER_RADIUS = 0.55

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "ring", "diamond", "star")

# The primary and secondary colours of RGB: each is told apart by which channels are lit.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
}

# Random ranges of one image. Sizes are circumradii in image half-widths: at 32x32 pixels a shape
# fits a circle 13 to 24 pixels across. Brightness scales the colour, so "red" images vary but stay red.
SIZE_RANGE = (0.4, 0.75)
BRIGHTNESS_RANGE = (0.7, 1.0)


# ---------------------------------------------------------------------------------------------
#                                        Signed distances
# ---------------------------------------------------------------------------------------------


def polygon_signed_distance(points: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Signed distance from points (..., 2) to the polygon with corners (E, 2); returns (...).

    Negative inside, positive outside, exact everywhere: the distance is the one to the nearest edge
    segment, the sign comes from the even-odd rule (a ray from an inside point crosses the outline
    an odd number of times), so the polygon needs neither convexity nor a particular orientation.
    """
    x, y = points[..., 0], points[..., 1]  # (...) each
    squared_distance = torch.full_like(x, math.inf)  # (...) to the nearest edge seen so far
    inside = torch.zeros_like(x, dtype=torch.bool)  # (...) flips at every edge the ray crosses
    # One edge at a time keeps every intermediate the size of the image batch, which is much faster
    # than broadcasting over all edges at once.
    for (start_x, start_y), (end_x, end_y) in zip(corners.tolist(), corners.roll(-1, dims=0).tolist()):
        edge_x, edge_y = end_x - start_x, end_y - start_y
        from_start_x, from_start_y = x - start_x, y - start_y  # (...) each
        # Closest point of the segment: project onto the edge, clamp to its two ends.
        along = ((from_start_x * edge_x + from_start_y * edge_y) / (edge_x**2 + edge_y**2)).clamp(0, 1)
        squared_distance = torch.minimum(
            squared_distance, (from_start_x - along * edge_x) ** 2 + (from_start_y - along * edge_y) ** 2
        )
        # Even-odd rule with a ray towards +x: the ray crosses this edge if the edge straddles the
        # point's height and meets that height to the right of the point.
        if edge_y != 0:
            straddles = (y < start_y) != (y < end_y)
            inside ^= straddles & (from_start_x < from_start_y * (edge_x / edge_y))
    distance = squared_distance.sqrt()
    return torch.where(inside, -distance, distance)


def shape_signed_distance(shape: str, points: torch.Tensor) -> torch.Tensor:
    """Signed distance from points (..., 2), in the shape's own frame, to the shape; returns (...)."""
    if shape == "circle":
        return points.norm(dim=-1) - 1
    if shape == "ring":
        # A ring is the set of points within half_width of the circle of radius `middle`.
        middle, half_width = (1 + RING_INNER_RADIUS) / 2, (1 - RING_INNER_RADIUS) / 2
        return (points.norm(dim=-1) - middle).abs() - half_width
    return polygon_signed_distance(points, POLYGONS[shape])


# ---------------------------------------------------------------------------------------------
#                                          Rasterising
# ---------------------------------------------------------------------------------------------


def pixel_centres(image_size: int) -> torch.Tensor:
    """Pixel centres (H, W, 2) as (x, y) in [-1, 1], y pointing up (row 0 is the top of the image)."""
    coordinates = (torch.arange(image_size, dtype=torch.float32) + 0.5) * (2 / image_size) - 1  # (H,)
    y, x = torch.meshgrid(-coordinates, coordinates, indexing="ij")
    return torch.stack([x, y], dim=-1)


def to_shape_frame(
    points: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor, angles: torch.Tensor
) -> torch.Tensor:
    """Points (H, W, 2) in image coordinates seen from N shapes' own frames: (N, H, W, 2).

    q = R(-angle) (p - centre) / size: undo the translation, the rotation and the scale, so that every
    shape is the same unit shape. centres (N, 2), sizes (N,), angles (N,).
    """
    offset = points - centres[:, None, None, :]  # (N, H, W, 2)
    cos, sin = angles.cos()[:, None, None], angles.sin()[:, None, None]  # (N, 1, 1)
    rotated = torch.stack([
        cos * offset[..., 0] + sin * offset[..., 1],
        -sin * offset[..., 0] + cos * offset[..., 1],
    ], dim=-1)  # (N, H, W, 2)
    return rotated / sizes[:, None, None, None]


def render_shapes(
    shape_ids: torch.Tensor,
    centres: torch.Tensor,
    sizes: torch.Tensor,
    angles: torch.Tensor,
    colours: torch.Tensor,
    image_size: int = 32,
) -> torch.Tensor:
    """Draw one shape per image, anti-aliased, on black.

    shape_ids (N,) int64 index into SHAPES; centres (N, 2) as (x, y) in [-1, 1]; sizes (N,)
    circumradii in image half-widths; angles (N,) counter-clockwise rotations in radians;
    colours (N, 3) RGB in [0, 1]. Returns images (N, 3, image_size, image_size) in [0, 1].
    """
    pixel_width = 2 / image_size
    pixels = pixel_centres(image_size)  # (H, W, 2)
    distance = torch.empty(len(shape_ids), image_size, image_size)  # (N, H, W)
    # All images of one shape at a time: one signed-distance function applied to a whole batch.
    for shape_id, shape in enumerate(SHAPES):
        chosen = (shape_ids == shape_id).nonzero()[:, 0]  # (n,) indices of the images of this shape
        if len(chosen) > 0:
            local = to_shape_frame(pixels, centres[chosen], sizes[chosen], angles[chosen])  # (n, H, W, 2)
            # Distances in the shape's frame are divided by its size; multiply back to image units.
            distance[chosen] = shape_signed_distance(shape, local) * sizes[chosen, None, None]
    coverage = (0.5 - distance / pixel_width).clamp(0, 1)  # (N, H, W) the one-pixel edge ramp
    return coverage[:, None] * colours[:, :, None, None]  # (N, 3, H, W)


def drawing_centres(images: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """The centre of what each image draws on black: (N, 2) as (x, y) in [-1, 1], y up.

    images (N, C, H, W) in [-1, 1]. Each pixel weighs by how far its brightest channel rises above
    ``threshold`` (in [0, 1] intensities), so a faint haze around a generated shape does not pull the
    centre. For the shapes here (regular, filled or ringed) the centroid of the drawing is the centre of
    the circumscribed circle. An image with nothing above the threshold is centred on the picture.
    """
    brightness = ((images + 1) / 2).amax(dim=1)  # (N, H, W) in [0, 1]
    weight = (brightness - threshold).clamp(min=0)  # (N, H, W)
    total = weight.sum(dim=(1, 2))  # (N,)
    pixels = pixel_centres(images.shape[-1]).to(images)  # (H, W, 2)
    centres = torch.einsum("nhw,hwk->nk", weight, pixels) / total.clamp(min=1e-8)[:, None]  # (N, 2)
    return torch.where(total[:, None] > 0, centres, torch.zeros_like(centres))


def turn_images(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Turn each image counter-clockwise by its angle about the centre of its drawing.

    images (N, C, H, W) in [-1, 1] on black, angles (N,) radians -> (N, C, H, W). Bilinear: the output
    pixel at p reads the input at c + R(-angle)(p - c), where c is ``drawing_centres``; whatever falls
    outside the picture is black. A shape drawn upright and turned by a reads close to the same shape
    drawn at angle a (the edges are resampled, so about a pixel of their anti-aliasing softens); this
    is how a model that draws in the shapes' own frame gives them an orientation
    (DiffusionRunConfig.canonical_frame, docs/image_levers.md).
    """
    if images.dim() != 4 or angles.shape != images.shape[:1]:
        raise ValueError(f"turn_images takes images (N, C, H, W) and one angle per image (N,), got "
                         f"{tuple(images.shape)} and {tuple(angles.shape)}")
    centres = drawing_centres(images)  # (N, 2)
    pixels = pixel_centres(images.shape[-1]).to(images)  # (H, W, 2)
    # R(-angle)(p - c) + c, written through to_shape_frame's rotation (size 1, no scaling).
    read_at = to_shape_frame(pixels, centres, torch.ones_like(angles), angles) + centres[:, None, None, :]
    grid = torch.stack([read_at[..., 0], -read_at[..., 1]], dim=-1)  # grid_sample's y points down
    intensities = torch.nn.functional.grid_sample((images + 1) / 2, grid, mode="bilinear",
                                                  padding_mode="zeros", align_corners=False)
    return to_model_range(intensities)


# ---------------------------------------------------------------------------------------------
#                                          The data set
# ---------------------------------------------------------------------------------------------


def shape_class_names(shapes: Sequence[str] = SHAPES, colours: Sequence[str] = tuple(COLOURS)) -> list[str]:
    """Class names in label order: shape by shape, each in every colour ("red circle", "green circle", ...).
    """
    return [f"{colour} {shape}" for shape in shapes for colour in colours]


def _checked_names(kind: str, requested: str | Sequence[str], known: Sequence[str]) -> list[str]:
    """``requested`` as a list (one name is a list of one); refused unless it is a choice from ``known``."""
    requested = [requested] if isinstance(requested, str) else list(requested)
    unknown = [name for name in requested if name not in known]
    if unknown or len(requested) == 0 or len(set(requested)) != len(requested):
        raise DataError(
            f"cannot draw {kind} {requested}: expected a non-empty list without repeats "
            f"chosen from {', '.join(known)}"
        )
    return requested


def make_shapes(
    num_samples: int,
    seed: int = 0,
    image_size: int = 32,
    shapes: str | Sequence[str] = SHAPES,
    colours: str | Sequence[str] = tuple(COLOURS),
    chunk_size: int = 8192,
    rotate: bool = True,
    num_angles: int = 0,
) -> ImageDataset:
    """``num_samples`` images of coloured shapes, (N, 3, image_size, image_size) in [-1, 1].

    One class per (shape, colour) pair, named "<colour> <shape>" (see shape_class_names); by default
    7 shapes x 6 colours = 42 classes. Labels are balanced: class counts differ by at most one, in a
    random order. The same seed gives identical tensors. ``chunk_size`` images are drawn at a time,
    which bounds memory without changing the result. ``rotate=False`` draws every shape upright (angle
    0) and leaves every other draw as it was: the same seed gives the same shapes, colours, sizes and
    positions — an experiment on how much of a model's difficulty is the choice of an orientation.
    ``num_angles=n`` (n > 0) turns each drawn angle down to the nearest of the n angles k·2π/n at or
    below it, and leaves every other draw as it was: how hard the data set is to draw as a function of
    how many orientations it holds. The angles (counter-clockwise, radians, uniform in [0, 2π) by
    default) are kept in ``angles``.
    """
    check_generation_request(num_samples, image_size)
    shapes = _checked_names("shapes", shapes, SHAPES)
    colours = _checked_names("colours", colours, tuple(COLOURS))
    generator = torch.Generator().manual_seed(seed)
    class_names = shape_class_names(shapes, colours)
    labels = balanced_labels(num_samples, len(class_names), generator)  # (N,)

    # Class k is shape k // len(colours) in colour k % len(colours) (the order of shape_class_names).
    shape_ids = torch.tensor([SHAPES.index(shape) for shape in shapes])[labels // len(colours)]  # (N,)
    palette = torch.tensor([COLOURS[colour] for colour in colours])  # (num_colours, 3)
    brightness = torch.empty(num_samples).uniform_(*BRIGHTNESS_RANGE, generator=generator)  # (N,)
    colour_values = palette[labels % len(colours)] * brightness[:, None]  # (N, 3)
    sizes = torch.empty(num_samples).uniform_(*SIZE_RANGE, generator=generator)  # (N,)
    # Keep the whole shape in the picture: its centre stays at least one circumradius from the border.
    centres = (torch.rand(num_samples, 2, generator=generator) * 2 - 1) * (1 - sizes[:, None])  # (N, 2)
    angles = torch.rand(num_samples, generator=generator) * 2 * math.pi  # (N,)
    if not rotate:
        angles = torch.zeros_like(angles)  # drawn all the same, so that nothing else changes
    if isinstance(num_angles, bool) or not isinstance(num_angles, Integral) or num_angles < 0:
        raise DataError(f"num_angles is 0 (any angle) or a positive number of orientations, got {num_angles!r}")
    if num_angles > 0:
        step = 2 * math.pi / num_angles
        angles = torch.floor(angles / step) * step

    chunks = []
    for i in range(0, num_samples, chunk_size):
        chunk = slice(i, i + chunk_size)
        chunks.append(render_shapes(
            shape_ids[chunk], centres[chunk], sizes[chunk], angles[chunk], colour_values[chunk], image_size
        ))  # (n, 3, H, W)
    images = torch.cat(chunks)  # (N, 3, H, W)
    return ImageDataset(to_model_range(images), labels, class_names, angles=angles)
