"""scikit-learn's bundled 8x8 handwritten digits: a small real data set that needs no download."""

import numpy as np
from PIL import Image

from ._dataset import Dataset
from ._images import check_channels, check_image_size, resize


def load_digits(*, image_size: int | tuple[int, int] | None = None, channels: int = 1) -> Dataset:
    """Load scikit-learn's handwritten digits: 1797 grayscale 8x8 images of 0 to 9.

    The data ship inside scikit-learn (`sklearn.datasets.load_digits`), so this works
    offline; it is the quick stand-in for Cats vs Dogs in tests and smoke runs. Pixel
    values `0..16` are scaled to `0..255`.

    **Arguments:**

    - `image_size`: if given, resize every image to this size (`size` or
        `(height, width)`) with Pillow's bilinear filter; otherwise keep 8x8.
    - `channels`: 1 for grayscale, or 3 to repeat the gray channel as RGB.

    **Returns:**

    A [`cfconv.data.Dataset`][] of 1797 `uint8` images with `class_names`
    `("0", ..., "9")`.

    !!! example

        ```python
        dataset = cfconv.data.load_digits(image_size=32, channels=3)
        dataset.images.shape  # (1797, 32, 32, 3)
        ```
    """
    size = None if image_size is None else check_image_size(image_size)
    channels = check_channels(channels)
    from sklearn.datasets import load_digits as sklearn_load_digits  # slow import

    bunch = sklearn_load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)  # pyright: ignore[reportAttributeAccessIssue]
    images = np.rint(values * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    if size is not None and size != images.shape[1:3]:
        images = np.stack([np.asarray(resize(Image.fromarray(image), size)) for image in images])
    images = np.repeat(images[..., None], channels, axis=3)
    labels = np.asarray(bunch.target, dtype=np.int32)  # pyright: ignore[reportAttributeAccessIssue]
    return Dataset(images, labels, tuple(str(digit) for digit in range(10)))
