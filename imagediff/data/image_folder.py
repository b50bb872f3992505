"""Your own images: a folder with one sub-folder per class, each holding that class's images.

    flowers/
        daisy/  0001.png  0002.jpg ...
        rose/   0001.png ...

gives classes ["daisy", "rose"] (sub-folder names, sorted), with every image read by Pillow, cut to
its largest centred square, resized to image_size x image_size and scaled to [-1, 1]. Files whose
extension is not an image's (README.txt, .DS_Store) are skipped; an image file Pillow cannot read is
an error, not silently dropped, so a data set never shrinks without the user knowing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imagediff.data.dataset import DataError, ImageDataset, to_model_range

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FOLDER_LAYOUT = "expected one sub-folder per class containing images"


def read_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image file as uint8 (image_size, image_size, channels): centre-cropped square, resized.

    Cropping before resizing keeps the proportions of non-square images instead of squashing them.
    An image already of the requested size is not resampled, so its pixels are kept exactly.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if channels == 3 else "L")
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"cannot read image {path}: {error}; expected a file Pillow can open") from error
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != image_size:
        # Pillow's bilinear filter widens its support when shrinking, so downscaling is anti-aliased.
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, channels)


def load_image_folder(path: str | Path, image_size: int = 32, channels: int = 3) -> ImageDataset:
    """Every image under ``path``/<class name>/, as (N, channels, image_size, image_size) in [-1, 1].

    Class names are the sub-folder names in sorted order; labels (N,) follow that order, and images
    within a class are in sorted file-name order (shuffling is the training loop's job). ``channels``
    is 3 (RGB) or 1 (grayscale). Raises DataError if the folder is missing, has no class sub-folders,
    or a class sub-folder holds no images.
    """
    folder = Path(path)
    if channels not in (1, 3):
        raise DataError(f"images have 1 (grayscale) or 3 (RGB) channels, got channels={channels}")
    if not folder.exists():
        raise DataError(f"image folder {folder} does not exist: {FOLDER_LAYOUT}")
    if not folder.is_dir():
        raise DataError(f"{folder} is a file, not a folder: {FOLDER_LAYOUT}")
    # Hidden folders (.git, .ipynb_checkpoints) are not classes.
    class_folders = sorted(
        child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")
    )
    if not class_folders:
        raise DataError(f"no class sub-folders in {folder}: {FOLDER_LAYOUT}")

    pixels, labels = [], []
    for label, class_folder in enumerate(class_folders):
        files = sorted(
            child for child in class_folder.iterdir()
            if child.is_file() and child.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(
                f"class folder {class_folder} holds no images: expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}"
            )
        pixels += [read_image(file, image_size, channels) for file in files]
        labels += [label] * len(files)

    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255  # (N, C, H, W) in [0, 1]
    class_names = [class_folder.name for class_folder in class_folders]
    return ImageDataset(to_model_range(images), torch.tensor(labels, dtype=torch.int64), class_names)
