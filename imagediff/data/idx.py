"""MNIST-format files: the IDX format of LeCun's MNIST page, read with numpy alone.

An IDX file is a header followed by raw data, all big-endian:

    bytes 0-1   0x0000
    byte  2     the type of each value: 0x08 = unsigned byte (the only type MNIST-like data uses)
    byte  3     the number of dimensions, D
    then        D sizes, each a 4-byte big-endian unsigned integer
    then        the values, the last dimension varying fastest

So the four "magic" bytes read as one big-endian integer are 0x00000803 for images (unsigned bytes,
3 dimensions: count, rows, columns) and 0x00000801 for labels (unsigned bytes, 1 dimension: count).
MNIST, Fashion-MNIST, KMNIST and EMNIST all ship as such files, often gzip-compressed (.gz).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imagediff.data.dataset import DataError, ImageDataset, to_model_range

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
GZIP_SIGNATURE = b"\x1f\x8b"  # the first two bytes of every gzip stream


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed if it is gzip (recognised by its content, not its name)."""
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist: expected an MNIST-format file (optionally .gz)")
    data = path.read_bytes()
    if data[:2] == GZIP_SIGNATURE:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"cannot decompress {path}: {error}; expected a complete gzip file") from error
    return data


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """The unsigned-byte array stored in an IDX file, with the shape its header gives.

    ``expected_magic`` is IMAGE_MAGIC (returns (N, rows, columns)) or LABEL_MAGIC (returns (N,)).
    Raises DataError naming the file if the magic number differs or the size disagrees with the header.
    """
    path = Path(path)
    data = read_file_bytes(path)
    kind = {IMAGE_MAGIC: "an IDX image file", LABEL_MAGIC: "an IDX label file"}[expected_magic]
    if len(data) < 4:
        raise DataError(f"{path} holds only {len(data)} bytes: expected at least the 4-byte header of {kind}")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"bad magic number 0x{magic:08x} in {path}: expected 0x{expected_magic:08x} for {kind}"
        )

    num_dimensions = data[3]
    header_size = 4 + 4 * num_dimensions
    if len(data) < header_size:
        raise DataError(
            f"{path} is truncated inside its header: expected {header_size} header bytes, found {len(data)}"
        )
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=num_dimensions, offset=4))
    expected_size = header_size + int(np.prod(shape))
    if len(data) != expected_size:
        problem = "is truncated" if len(data) < expected_size else "has extra bytes after the data"
        raise DataError(
            f"{path} {problem}: its header promises shape {shape}, {expected_size} bytes in all, "
            f"but the file holds {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def load_idx(
    images_path: str | Path,
    labels_path: str | Path,
    class_names: list[str] | None = None,
    image_size: int | None = None,
) -> ImageDataset:
    """MNIST-format images and labels as (N, 1, rows, columns) in [-1, 1] and (N,) int64.

    ``class_names`` defaults to the labels written as text, "0", "1", ... up to the largest label
    (the names make_glyphs gives its digits). ``image_size`` resizes the images to
    (N, 1, image_size, image_size), e.g. MNIST's 28x28 to 32x32 so that they halve evenly in the
    autoencoder; None keeps the stored pixels exactly. Raises DataError, naming the file, if a file is
    missing, malformed or truncated, if the counts differ, or if a label has no class name.
    """
    pixels = read_idx(images_path, IMAGE_MAGIC)  # (N, rows, columns) uint8
    labels = read_idx(labels_path, LABEL_MAGIC)  # (N,) uint8
    if len(labels) != len(pixels):
        raise DataError(
            f"label count {len(labels)} in {labels_path} does not match image count {len(pixels)} "
            f"in {images_path}: expected one label per image"
        )
    if len(pixels) == 0:
        raise DataError(f"{images_path} holds no images: expected at least one")
    largest_label = int(labels.max())
    if class_names is None:
        class_names = [str(label) for label in range(largest_label + 1)]
    if largest_label >= len(class_names):
        raise DataError(
            f"{labels_path} holds label {largest_label}, but only {len(class_names)} class names were "
            f"given: expected a name for every label from 0 to {largest_label}"
        )
    images = torch.from_numpy(pixels.astype(np.float32) / 255)[:, None]  # (N, 1, rows, columns) in [0, 1]
    if image_size is not None and images.shape[-2:] != (image_size, image_size):
        # antialias=True averages over the source pixels when shrinking instead of skipping some.
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True)
    return ImageDataset(to_model_range(images), torch.from_numpy(labels.astype(np.int64)), list(class_names))
