"""Loading a folder of images, one subfolder per class (Microsoft's Cats vs Dogs layout)."""

import concurrent.futures
import os
import pathlib
import warnings

import numpy as np
from PIL import Image

from .._errors import check_int
from ._dataset import Dataset
from ._images import check_channels, check_image_size, convert, resize, to_array


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
"""File extensions (compared in lower case) that `load_image_folder` reads."""

_MAX_WORKERS = 8
_NUM_EXAMPLES = 3


def _is_hidden(relative: pathlib.Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The image files under `folder` (recursively, hidden ones left out), sorted."""
    files = [
        file
        for file in folder.rglob("*")
        if file.suffix.lower() in IMAGE_EXTENSIONS
        and not _is_hidden(file.relative_to(folder))
        and file.is_file()
    ]
    return sorted(files, key=lambda file: file.relative_to(folder).as_posix())


def _decode(file: pathlib.Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode, convert and resize one image to a `uint8` array `(H, W, channels)`."""
    height, width = size
    with Image.open(file) as image:
        if image.format == "JPEG":
            # Let the JPEG decoder downscale by 1/2, 1/4 or 1/8 in the DCT domain when
            # the result stays at least `size`: several times faster for large photos.
            image.draft("L" if channels == 1 else "RGB", (width, height))
        image.load()
        return to_array(resize(convert(image, channels), size), channels)


def load_image_folder(
    path: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int],
    channels: int = 3,
    max_per_class: int | None = None,
    num_workers: int | None = None,
) -> Dataset:
    """Load a folder of images with one subfolder per class.

    This is the layout of Microsoft's Cats vs Dogs download, `PetImages/Cat/*.jpg` and
    `PetImages/Dog/*.jpg`: pass the `PetImages` folder. Classes are the subfolders sorted
    by name (hidden ones left out), so their labels are `0, 1, ...` in that order. A
    class's images are the files under its subfolder, searched recursively, whose
    extension is one of `.jpg .jpeg .png .bmp .gif .webp` (in any case), sorted by path;
    hidden files and folders are left out.

    Every image is decoded with Pillow, converted to RGB (`channels=3`; grayscale, RGBA
    and palette images all convert, and transparency is dropped) or to grayscale
    (`channels=1`), and resized to `image_size` with Pillow's bilinear filter, which
    antialiases when shrinking. Large JPEGs are first decoded at the smallest of 1/1, 1/2,
    1/4 or 1/8 scale that is still at least `image_size` (Pillow's `draft`), which is
    much faster and barely changes the result. Decoding runs on a few threads: Pillow
    releases the GIL while it decodes and resizes.

    Files that cannot be read (Cats vs Dogs has a few corrupt and empty JPEGs) are
    skipped and reported in a single warning that says how many there were and names a
    few.

    **Arguments:**

    - `path`: the folder that holds one subfolder per class.
    - `image_size`: the output size, `size` for square images or `(height, width)`.
    - `channels`: 3 for RGB or 1 for grayscale.
    - `max_per_class`: if given, read only the first `max_per_class` files of each
        class (in sorted order; fewer images remain if some of them are unreadable).
    - `num_workers`: the number of decoding threads; by default the number of CPUs, at
        most 8.

    **Returns:**

    A [`cfconv.data.Dataset`][] of `uint8` images of shape `(N, height, width, channels)`
    whose `class_names` are the subfolder names.

    !!! example

        ```python
        dataset = cfconv.data.load_image_folder("PetImages", image_size=150)
        dataset.class_names  # ("Cat", "Dog")
        ```
    """
    size = check_image_size(image_size)
    channels = check_channels(channels)
    if max_per_class is not None:
        max_per_class = check_int("max_per_class", max_per_class)
    if num_workers is None:
        num_workers = min(_MAX_WORKERS, os.cpu_count() or 1)
    num_workers = check_int("num_workers", num_workers)

    root = pathlib.Path(path)
    if not root.exists():
        raise ValueError(f"`path` does not exist: {str(root)!r}")
    if not root.is_dir():
        raise ValueError(
            f"`path` must be a folder with one subfolder per class, got a file: {str(root)!r}"
        )
    class_dirs = sorted(
        (child for child in root.iterdir() if child.is_dir() and not _is_hidden(child)),
        key=lambda child: child.name,
    )
    if not class_dirs:
        raise ValueError(
            f"`path` must hold one subfolder per class, but has no subfolders: {str(root)!r}"
        )
    if len(class_dirs) == 1:
        hint = ""
        if any(child.is_dir() for child in class_dirs[0].iterdir()):
            hint = f"; did you mean {str(class_dirs[0])!r}?"
        raise ValueError(
            f"`path` must hold at least two class subfolders, but has only "
            f"{class_dirs[0].name!r}: {str(root)!r}{hint}"
        )

    files: list[pathlib.Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        class_files = _image_files(class_dir)
        if not class_files:
            raise ValueError(
                f"`path` has a class subfolder {class_dir.name!r} without image files "
                f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))}): {str(root)!r}"
            )
        if max_per_class is not None:
            class_files = class_files[:max_per_class]
        files.extend(class_files)
        labels.extend([label] * len(class_files))

    height, width = size
    images = np.empty((len(files), height, width, channels), dtype=np.uint8)

    def load(index: int) -> str | None:
        try:
            images[index] = _decode(files[index], size, channels)
        except Exception as error:  # a corrupt file must never stop a 25k-image load
            return f"{files[index]} ({type(error).__name__}: {error})"
        return None

    with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as executor:
        failures = list(executor.map(load, range(len(files))))

    good = [index for index, failure in enumerate(failures) if failure is None]
    bad = [failure for failure in failures if failure is not None]
    examples = "; ".join(bad[:_NUM_EXAMPLES]) + ("; ..." if len(bad) > _NUM_EXAMPLES else "")
    if not good:
        raise ValueError(
            f"`path` holds no readable images: all {len(files)} image files failed to "
            f"decode, e.g. {examples}"
        )
    if bad:
        warnings.warn(
            f"skipped {len(bad)} unreadable image file{'s' if len(bad) != 1 else ''} of "
            f"{len(files)} under {str(root)!r}: {examples}",
            stacklevel=2,
        )
        # Compact in place rather than copy: `images` may be gigabytes.
        for new, old in enumerate(good):
            if new != old:
                images[new] = images[old]
        images = images[: len(good)]
    label_array = np.asarray(labels, dtype=np.int32)[good]
    return Dataset(images, label_array, tuple(child.name for child in class_dirs))
