"""Tests of imagediff.data: the generated shapes and digits, and the loaders of a user's own files.

The loaders are tested on tiny files each test writes into its own tmp_path.
"""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from imagediff.data import DataError, ImageDataset, load_idx, load_image_folder, make_dataset
from imagediff.data.shapes import POLYGONS, RING_INNER_RADIUS, SHAPES, render_shapes

# What each colour name must look like, written independently of the library's palette.
LIT_CHANNELS = {
    "red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1),
    "yellow": (1, 1, 0), "cyan": (0, 1, 1), "magenta": (1, 0, 1),
}


def to_unit_interval(images: torch.Tensor) -> torch.Tensor:
    return (images + 1) / 2


@pytest.fixture(scope="module")
def shapes() -> ImageDataset:
    return make_dataset("shapes", 42 * 24, seed=0)


@pytest.fixture(scope="module")
def glyphs() -> ImageDataset:
    return make_dataset("glyphs", 2000, seed=0)


# ---------------------------------------------------------------------------------------------
#                                  Generated sets: form and seeds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, channels, num_classes", [("shapes", 3, 42), ("glyphs", 1, 10)])
def test_generated_sets_have_the_promised_shapes_types_range_and_balanced_labels(name, channels, num_classes):
    dataset = make_dataset(name, 5 * num_classes + 3, seed=1)
    assert dataset.images.shape == (5 * num_classes + 3, channels, 32, 32)
    assert dataset.images.dtype == torch.float32 and dataset.labels.dtype == torch.int64
    assert dataset.images.min() >= -1 and dataset.images.max() <= 1
    # Both ends of the range are used: a black background and a fully lit foreground.
    assert dataset.images.min() == -1 and dataset.images.max() > 0.9
    counts = torch.bincount(dataset.labels, minlength=num_classes)
    assert len(dataset.class_names) == num_classes
    assert counts.min() == 5 and counts.max() == 6  # balanced: counts differ by at most one
    # The labels are shuffled, not sorted by class.
    assert not torch.equal(dataset.labels, dataset.labels.sort().values)


@pytest.mark.parametrize("name", ["shapes", "glyphs"])
def test_same_seed_gives_identical_tensors_and_another_seed_other_images(name):
    first, again, other = (make_dataset(name, 100, seed=seed) for seed in (3, 3, 4))
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.labels, other.labels)
    # Images of the same class still differ between seeds (position, size, rotation, hand).
    label = first.labels[0]
    assert not torch.equal(first.images[0], other.images[other.labels == label][0])


def test_generators_honour_image_size():
    assert make_dataset("shapes", 12, image_size=16).images.shape == (12, 3, 16, 16)
    assert make_dataset("shapes", 12, image_size=64).images.shape == (12, 3, 64, 64)
    assert make_dataset("glyphs", 12, image_size=16).images.shape == (12, 1, 16, 16)


def test_chunking_does_not_change_the_images():
    from imagediff.data import make_glyphs, make_shapes

    assert torch.equal(make_shapes(50, seed=2, chunk_size=7).images, make_shapes(50, seed=2).images)
    assert torch.equal(make_glyphs(50, seed=2, chunk_size=7).images, make_glyphs(50, seed=2).images)


def test_glyphs_with_three_channels_repeat_the_gray_image():
    gray = make_dataset("glyphs", 20, seed=5)
    colour = make_dataset("glyphs", 20, seed=5, channels=3)
    assert colour.images.shape == (20, 3, 32, 32)
    assert torch.equal(colour.images, gray.images.expand(-1, 3, -1, -1))


# ---------------------------------------------------------------------------------------------
#                                     Shapes: names, colours, geometry
# ---------------------------------------------------------------------------------------------


def test_shape_class_names_are_unique_readable_colour_shape_pairs(shapes):
    names = shapes.class_names
    assert len(set(names)) == len(names) == 42
    assert {"red circle", "green square", "blue triangle", "yellow cross"} <= set(names)
    for name in names:
        colour, shape = name.split(" ")
        assert colour in LIT_CHANNELS and shape in SHAPES


def test_every_colour_name_matches_the_colour_of_its_images(shapes):
    for name in shapes.class_names:
        images = to_unit_interval(shapes.images_of_class(name))  # (M, 3, H, W)
        foreground = images.amax(dim=1, keepdim=True) > 0.5  # (M, 1, H, W) well inside the shape
        mean_colour = (images * foreground).sum(dim=(0, 2, 3)) / foreground.sum()  # (3,)
        lit = torch.tensor(LIT_CHANNELS[name.split(" ")[0]], dtype=torch.bool)
        assert mean_colour[lit].min() > 0.6, name  # the named channels are bright ...
        assert mean_colour[~lit].max() < 0.02, name  # ... and the others dark
    red = to_unit_interval(shapes.images_of_class("red circle")).mean(dim=(0, 2, 3))
    assert red[0] > 10 * red[1:].max()


def test_background_is_black(shapes):
    images = to_unit_interval(shapes.images)
    # A shape lies inside its circumcircle, and that circle inside the picture: corners stay black.
    assert images[..., [0, 0, -1, -1], [0, -1, 0, -1]].max() == 0
    # Most of every image is background.
    assert ((images.amax(dim=1) == 0).float().mean(dim=(1, 2)) > 0.4).all()


def shoelace_area(corners: torch.Tensor) -> float:
    x, y = corners[:, 0].double(), corners[:, 1].double()
    return 0.5 * abs(float((x * y.roll(-1) - x.roll(-1) * y).sum()))


def expected_area(shape: str) -> float:
    """Area of the shape with circumradius 1, from geometry rather than from the rasteriser."""
    closed_forms = {
        "circle": math.pi,
        "ring": math.pi * (1 - RING_INNER_RADIUS**2),
        "square": 2.0,  # half-side 1 / sqrt(2)
        "triangle": 3 * math.sqrt(3) / 4,  # equilateral, circumradius 1
    }
    return closed_forms.get(shape) or shoelace_area(POLYGONS[shape])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("angle", [0.0, 0.7])
def test_rendered_area_equals_the_shapes_area_at_any_rotation(shape, angle):
    image_size, size = 64, 0.6
    image = render_shapes(
        torch.tensor([SHAPES.index(shape)]), torch.tensor([[0.1, -0.05]]), torch.tensor([size]),
        torch.tensor([angle]), torch.tensor([[1.0, 1.0, 1.0]]), image_size,
    )[0, 0]  # (H, W) coverage
    pixel_area = (2 / image_size) ** 2  # the image spans [-1, 1]
    assert float(image.sum()) * pixel_area == pytest.approx(expected_area(shape) * size**2, rel=0.02)


def test_squares_fill_their_bounding_box_triangles_half_and_rings_have_a_hole():
    def unrotated(shape: str) -> torch.Tensor:
        return render_shapes(
            torch.tensor([SHAPES.index(shape)]), torch.zeros(1, 2), torch.tensor([0.7]), torch.zeros(1),
            torch.ones(1, 3), image_size=64,
        )[0, 0]  # (H, W) coverage, shape centred

    def bounding_box_fill(coverage: torch.Tensor) -> float:
        rows, columns = (coverage > 0.5).nonzero(as_tuple=True)
        box = coverage[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
        return float(box.mean())

    assert bounding_box_fill(unrotated("square")) > 0.95
    assert bounding_box_fill(unrotated("triangle")) == pytest.approx(0.5, abs=0.05)
    assert bounding_box_fill(unrotated("circle")) == pytest.approx(math.pi / 4, abs=0.04)
    triangle = unrotated("triangle")
    assert triangle[:32].sum() < triangle[32:].sum()  # at angle 0 it points up: more ink below the middle
    assert unrotated("ring")[30:34, 30:34].max() == 0  # the centre of a ring is empty
    assert unrotated("cross")[:16, :16].max() == 0  # the corners of a cross are empty


def test_shape_classes_show_their_shape_in_the_generated_set(shapes):
    def mean_area(shape: str) -> float:
        images = torch.cat([shapes.images_of_class(f"{colour} {shape}") for colour in LIT_CHANNELS])
        return float((to_unit_interval(images).amax(dim=1) > 0.3).float().sum(dim=(1, 2)).mean())

    circle, square, triangle = mean_area("circle"), mean_area("square"), mean_area("triangle")
    # Every shape is drawn with the same distribution of circumradii, so mean areas keep the ratios
    # of the unit shapes: square / circle = 2 / pi, triangle / circle = 3 sqrt(3) / (4 pi).
    assert square / circle == pytest.approx(2 / math.pi, rel=0.12)
    assert triangle / circle == pytest.approx(3 * math.sqrt(3) / (4 * math.pi), rel=0.12)


def test_shapes_options_choose_a_subset_of_classes():
    dataset = make_dataset("shapes", 40, seed=0, shapes=["square", "circle"], colours=["blue", "red"])
    assert dataset.class_names == ["blue square", "red square", "blue circle", "red circle"]
    assert set(dataset.labels.tolist()) == {0, 1, 2, 3}
    blue_squares = to_unit_interval(dataset.images_of_class("blue square"))
    assert blue_squares[:, 2].sum() > 0 and blue_squares[:, 0].sum() == 0


# ---------------------------------------------------------------------------------------------
#                                         Glyphs: digits
# ---------------------------------------------------------------------------------------------


def test_glyph_class_names_are_the_digits(glyphs):
    assert glyphs.class_names == [str(digit) for digit in range(10)]


def test_mean_images_tell_digits_apart_and_agree_across_seeds(glyphs):
    other_seed = make_dataset("glyphs", 2000, seed=1)

    def class_means(dataset: ImageDataset) -> torch.Tensor:
        return torch.stack([dataset.images_of_class(str(digit)).mean(dim=0).flatten() for digit in range(10)])

    means, other_means = class_means(glyphs), class_means(other_seed)  # (10, H*W) each
    between_digits = torch.cdist(means, means)  # (10, 10)
    between_digits.fill_diagonal_(math.inf)
    same_digit_across_seeds = (means - other_means).norm(dim=1)  # (10,)
    assert same_digit_across_seeds.max() < 0.5 * between_digits.min()


def test_a_one_has_less_ink_than_an_eight_and_corners_stay_black(glyphs):
    ink = {digit: float(to_unit_interval(glyphs.images_of_class(digit)).mean()) for digit in ("1", "8")}
    assert ink["1"] < 0.75 * ink["8"]
    corners = to_unit_interval(glyphs.images)[:, :, :3, :3]
    assert corners.max() < 0.05


# ---------------------------------------------------------------------------------------------
#                                 ImageDataset and make_dataset
# ---------------------------------------------------------------------------------------------


def test_class_index_finds_names_and_lists_the_known_ones_when_unknown(shapes):
    index = shapes.class_index("blue triangle")
    assert shapes.class_names[index] == "blue triangle"
    assert torch.equal(shapes.images_of_class("blue triangle"), shapes.images[shapes.labels == index])
    with pytest.raises(DataError, match="unknown class name 'purple circle'") as error:
        shapes.class_index("purple circle")
    assert "'red circle'" in str(error.value) and "'magenta star'" in str(error.value)


def test_make_dataset_refuses_unknown_names_and_impossible_sizes():
    with pytest.raises(DataError, match="unknown data set 'mnist'.*'shapes', 'glyphs'"):
        make_dataset("mnist", 10)
    with pytest.raises(DataError, match="num_samples must be a positive integer"):
        make_dataset("shapes", 0)
    with pytest.raises(DataError, match="image_size"):
        make_dataset("glyphs", 10, image_size=4)
    with pytest.raises(DataError, match="channels=2"):
        make_dataset("glyphs", 10, channels=2)
    with pytest.raises(DataError, match="hexagon.*circle, square"):
        make_dataset("shapes", 10, shapes=["hexagon"])


def test_image_dataset_refuses_inconsistent_tensors():
    with pytest.raises(DataError, match="label count 3 does not match image count 2"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(3, dtype=torch.int64), ["a"])
    with pytest.raises(DataError, match="labels run from 0 to 2"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.tensor([0, 2]), ["a", "b"])
    with pytest.raises(DataError, match="unique"):
        ImageDataset(torch.zeros(1, 1, 4, 4), torch.tensor([0]), ["a", "a"])


# ---------------------------------------------------------------------------------------------
#                                       A folder of images
# ---------------------------------------------------------------------------------------------


def write_png(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def to_bytes(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] back to the uint8 values they were read from."""
    return (to_unit_interval(images) * 255).round().to(torch.uint8).numpy()


def test_image_folder_round_trips_pixels_and_names_classes_after_sub_folders(tmp_path):
    generator = np.random.default_rng(0)
    cats = generator.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    dogs = generator.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    write_png(tmp_path / "dog" / "a.png", dogs[0])
    write_png(tmp_path / "cat" / "b.png", cats[1])
    write_png(tmp_path / "cat" / "a.png", cats[0])
    (tmp_path / "cat" / "notes.txt").write_text("not an image, skipped")

    dataset = load_image_folder(tmp_path, image_size=8)
    assert dataset.class_names == ["cat", "dog"]  # sorted sub-folder names
    assert dataset.labels.tolist() == [0, 0, 1]  # files in sorted order within each class
    assert dataset.images.shape == (3, 3, 8, 8) and dataset.images.dtype == torch.float32
    expected = np.concatenate([cats, dogs]).transpose(0, 3, 1, 2)  # (N, C, H, W)
    np.testing.assert_array_equal(to_bytes(dataset.images), expected)


def test_image_folder_reads_grayscale_and_resizes_non_square_images(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    write_png(tmp_path / "digits" / "gray.png", gray)
    loaded = load_image_folder(tmp_path, image_size=8, channels=1)
    np.testing.assert_array_equal(to_bytes(loaded.images)[0, 0], gray)

    # A wide image is cropped to its centred square, then resized: a plain colour stays that colour.
    write_png(tmp_path / "digits" / "gray.png", np.full((10, 30, 3), (200, 40, 90), dtype=np.uint8))
    resized = load_image_folder(tmp_path, image_size=4)
    assert resized.images.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(to_bytes(resized.images)[0, :, 2, 2], [200, 40, 90])


@pytest.mark.parametrize("layout, message", [
    ("missing", "does not exist: expected one sub-folder per class"),
    ("file", "is a file, not a folder"),
    ("empty", "no class sub-folders in"),
    ("no images", "holds no images: expected files ending in .png"),
    ("broken image", "cannot read image"),
])
def test_image_folder_errors_name_the_path_and_what_was_expected(tmp_path, layout, message):
    folder = tmp_path / "data"
    if layout == "file":
        folder.write_text("not a folder")
    elif layout == "empty":
        folder.mkdir()
    elif layout == "no images":
        (folder / "cat").mkdir(parents=True)
        (folder / "cat" / "readme.txt").write_text("no pictures here")
    elif layout == "broken image":
        (folder / "cat").mkdir(parents=True)
        (folder / "cat" / "broken.png").write_bytes(b"these bytes are not a PNG")
    with pytest.raises(DataError, match=message) as error:
        load_image_folder(folder, image_size=8)
    assert str(folder) in str(error.value)


# ---------------------------------------------------------------------------------------------
#                                      MNIST-format IDX files
# ---------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written by hand from the format's definition: 0x0000, type 0x08, D, D sizes, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def idx_files(tmp_path):
    """Twelve 5x4 images with labels 0..9, written plain and gzip-compressed; returns the paths and arrays."""
    generator = np.random.default_rng(1)
    images = generator.integers(0, 256, (12, 5, 4), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 0], dtype=np.uint8)
    paths = {
        "images": tmp_path / "train-images-idx3-ubyte",
        "labels": tmp_path / "train-labels-idx1-ubyte",
        "images.gz": tmp_path / "train-images-idx3-ubyte.gz",
        "labels.gz": tmp_path / "train-labels-idx1-ubyte.gz",
    }
    paths["images"].write_bytes(idx_bytes(images))
    paths["labels"].write_bytes(idx_bytes(labels))
    paths["images.gz"].write_bytes(gzip.compress(idx_bytes(images)))
    paths["labels.gz"].write_bytes(gzip.compress(idx_bytes(labels)))
    return paths, images, labels


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_round_trips_pixels_and_labels(idx_files, compressed):
    paths, images, labels = idx_files
    suffix = ".gz" if compressed else ""
    dataset = load_idx(paths["images" + suffix], paths["labels" + suffix])
    assert dataset.images.shape == (12, 1, 5, 4) and dataset.images.dtype == torch.float32
    np.testing.assert_array_equal(to_bytes(dataset.images)[:, 0], images)
    assert dataset.labels.dtype == torch.int64 and dataset.labels.tolist() == labels.tolist()
    assert dataset.class_names == [str(label) for label in range(10)]


def test_idx_resizes_on_request_and_accepts_class_names(idx_files):
    paths, _, _ = idx_files
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    dataset = load_idx(paths["images"], paths["labels"], class_names=names, image_size=8)
    assert dataset.images.shape == (12, 1, 8, 8)
    assert dataset.class_names[dataset.labels[0]] == "three"


def test_idx_errors_name_the_file_and_what_was_expected(idx_files, tmp_path):
    paths, images, labels = idx_files
    missing = tmp_path / "nowhere-idx3-ubyte"
    with pytest.raises(DataError, match="does not exist") as error:
        load_idx(missing, paths["labels"])
    assert str(missing) in str(error.value)

    # A label file where images belong: its magic number says 1 dimension, not 3.
    expected = f"bad magic number 0x00000801 in {paths['labels']}: expected 0x00000803 for an IDX image file"
    with pytest.raises(DataError, match=expected.replace(".", r"\.")):
        load_idx(paths["labels"], paths["labels"])

    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(idx_bytes(images)[:-7])
    with pytest.raises(DataError, match="is truncated: its header promises shape \\(12, 5, 4\\)") as error:
        load_idx(truncated, paths["labels"])
    assert str(truncated) in str(error.value)

    header_only = tmp_path / "header-idx3-ubyte"
    header_only.write_bytes(idx_bytes(images)[:9])
    with pytest.raises(DataError, match="truncated inside its header"):
        load_idx(header_only, paths["labels"])

    too_short = tmp_path / "empty-idx1-ubyte"
    too_short.write_bytes(b"")
    with pytest.raises(DataError, match="holds only 0 bytes"):
        load_idx(paths["images"], too_short)

    ten_labels = tmp_path / "ten-labels-idx1-ubyte"
    ten_labels.write_bytes(idx_bytes(labels[:10]))
    with pytest.raises(DataError, match="label count 10 .* does not match image count 12"):
        load_idx(paths["images"], ten_labels)

    broken_gzip = tmp_path / "broken-idx3-ubyte.gz"
    broken_gzip.write_bytes(paths["images.gz"].read_bytes()[:-20])
    with pytest.raises(DataError, match="cannot decompress") as error:
        load_idx(broken_gzip, paths["labels"])
    assert str(broken_gzip) in str(error.value)

    with pytest.raises(DataError, match="holds label 9, but only 3 class names"):
        load_idx(paths["images"], paths["labels"], class_names=["a", "b", "c"])


def test_upright_shapes_change_only_the_angle():
    from imagediff.data import make_shapes
    # A circle has no orientation: with rotate=False every other draw (size, position, colour) is the same.
    circles = make_shapes(64, seed=3, shapes=["circle"])
    # (Equal up to float rounding: the pixel grid is still turned by the angle before the distance.)
    torch.testing.assert_close(make_shapes(64, seed=3, shapes=["circle"], rotate=False).images, circles.images,
                               rtol=0, atol=1e-5)

    def row_spans(images):
        """For each image, the number of fully covered pixels in each row that has any (a list per image)."""
        lit = (images.amax(dim=1) + 1) / 2                                  # (N, H, W) coverage x brightness
        full = lit >= 0.99 * lit.amax(dim=(1, 2), keepdim=True)             # (N, H, W) fully inside
        counts = full.sum(dim=2)                                            # (N, H)
        return [row[row > 0] for row in counts]

    # An axis-aligned square covers the same columns in every row it fully crosses; a rotated one does not.
    upright = make_shapes(64, seed=3, shapes=["square"], rotate=False).images
    rotated = make_shapes(64, seed=3, shapes=["square"]).images
    assert all(int(spans.max() - spans.min()) == 0 for spans in row_spans(upright))
    assert sum(int(spans.max() - spans.min()) >= 2 for spans in row_spans(rotated)) > 48


def test_shapes_record_the_angle_each_image_was_drawn_at():
    # The same seed upright draws the same shape, size, position and colour at angle 0; turning that
    # image by the recorded angle about the shape's centre (turn_images) must give the generated image,
    # and turning it the other way or by another angle must not.
    from imagediff.data.shapes import turn_images
    size, options = 64, {"colours": ["red", "cyan"]}
    rotated = make_dataset("shapes", 42, seed=3, image_size=size, **options)
    upright = make_dataset("shapes", 42, seed=3, image_size=size, rotate=False, **options)
    assert rotated.angles.dtype == torch.float32 and rotated.angles.shape == (42,)
    assert torch.equal(upright.angles, torch.zeros(42))
    right = (turn_images(upright.images, rotated.angles) - rotated.images).abs().mean(dim=(1, 2, 3))  # (N,)
    backwards = (turn_images(upright.images, -rotated.angles) - rotated.images).abs().mean(dim=(1, 2, 3))
    off = (turn_images(upright.images, rotated.angles + 0.4) - rotated.images).abs().mean(dim=(1, 2, 3))
    oriented = ~torch.isin(rotated.labels // 2, torch.tensor([SHAPES.index("circle"), SHAPES.index("ring")]))
    assert (right[oriented] < 0.3 * off[oriented]).all()
    assert right[oriented].mean() < 0.3 * backwards[oriented].mean()  # (-a looks like a near a symmetry's half)
    assert right.max() < 0.02  # circles and rings too: only the resampled edges differ


def test_drawing_centres_find_the_shapes_centre_and_turning_keeps_it():
    from imagediff.data.shapes import drawing_centres, turn_images
    generator = torch.Generator().manual_seed(0)
    n = 2 * len(SHAPES)
    shape_ids = torch.arange(n) % len(SHAPES)
    sizes = torch.empty(n).uniform_(0.4, 0.7, generator=generator)
    centres = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - sizes[:, None])  # (N, 2) x, y up
    angles = torch.rand(n, generator=generator) * 2 * math.pi
    colours = torch.rand(n, 3, generator=generator) * 0.3 + 0.7
    images = render_shapes(shape_ids, centres, sizes, angles, colours, image_size=32) * 2 - 1
    torch.testing.assert_close(drawing_centres(images), centres, rtol=0, atol=0.02)  # 0.02 = a third of a pixel
    torch.testing.assert_close(drawing_centres(turn_images(images, angles)), centres, rtol=0, atol=0.03)
    assert torch.equal(drawing_centres(-torch.ones(1, 3, 8, 8)), torch.zeros(1, 2))  # nothing drawn: the middle
    with pytest.raises(ValueError, match=r"one angle per image \(N,\), got \(2, 3, 8, 8\) and \(3,\)"):
        turn_images(torch.zeros(2, 3, 8, 8), torch.zeros(3))


    with pytest.raises(DataError, match=r"angles must be None or a float32 tensor of shape \(2,\)"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"], angles=torch.zeros(3))


def test_num_angles_keeps_the_draws_and_turns_each_angle_down_to_one_of_n_orientations():
    free = make_dataset("shapes", 200, seed=5)
    four = make_dataset("shapes", 200, seed=5, num_angles=4)
    quarter = math.pi / 2
    assert torch.equal(four.labels, free.labels)
    assert torch.allclose(four.angles, torch.floor(free.angles / quarter) * quarter)
    assert len(set(four.angles.tolist())) == 4 and not torch.equal(four.images, free.images)
    for bad in (-1, 2.5, True):
        with pytest.raises(DataError, match="num_angles is 0 .any angle. or a positive number of orientations"):
            make_dataset("shapes", 4, num_angles=bad)
