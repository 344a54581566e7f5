"""Pillow helpers shared by the loaders: argument checks, mode conversion and resizing."""

import numpy as np
from PIL import Image

from .._errors import check_int


def check_image_size(image_size: object) -> tuple[int, int]:
    """`image_size` (an int, or a `(height, width)` pair) as `(height, width)`."""
    if isinstance(image_size, tuple | list):
        if len(image_size) != 2:
            raise ValueError(
                f"`image_size` must be an int or a (height, width) pair, got {image_size!r}"
            )
        height = check_int("image_size[0]", image_size[0])
        width = check_int("image_size[1]", image_size[1])
        return height, width
    size = check_int("image_size", image_size)
    return size, size


def check_channels(channels: object) -> int:
    """`channels` as an int, 1 (grayscale) or 3 (RGB)."""
    channels = check_int("channels", channels)
    if channels not in (1, 3):
        raise ValueError(f"`channels` must be 1 (grayscale) or 3 (RGB), got {channels}")
    return channels


def convert(image: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to `"L"` (`channels=1`) or `"RGB"` (`channels=3`).

    Transparent pixels keep whatever colour they store: the alpha channel is dropped, as
    torchvision's default loader does.
    """
    mode = "L" if channels == 1 else "RGB"
    if image.mode == mode:
        return image
    if image.mode == "P" and "transparency" in image.info:
        # Pillow warns when a palette image with transparency converts straight to RGB.
        image = image.convert("RGBA")
    elif image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit grayscale (e.g. PNG): Pillow clips it to 8 bits; rescale it instead.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        values = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        image = Image.fromarray(values, mode="L")
    return image.convert(mode)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to `size = (height, width)`, bilinear with antialiasing when shrinking."""
    height, width = size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)


def to_array(image: Image.Image, channels: int) -> np.ndarray:
    """A `uint8` array of shape `(H, W, channels)` from an `"L"` or `"RGB"` image."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] != channels:  # pragma: no cover - `convert` guarantees this
        raise AssertionError(array.shape)
    return array
