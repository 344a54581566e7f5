"""Data for training and evaluating CF-Conv networks.

Images live on the host as a [`cfconv.data.Dataset`][] of `uint8` arrays, channels last;
[`cfconv.data.batches`][] turns them into `float32` batches, channels first, on the device,
and [`cfconv.data.augment`][] randomly augments such a batch under `jax.jit`.

- [`cfconv.data.load_image_folder`][] reads a folder with one subfolder per class, the
  layout of Microsoft's Cats vs Dogs (`PetImages/Cat`, `PetImages/Dog`) that the paper
  trains on at 150x150;
- [`cfconv.data.load_digits`][] loads scikit-learn's bundled 8x8 digits, which need no
  download.
"""

from ._augment import augment as augment
from ._batches import batches as batches, num_batches as num_batches
from ._dataset import Dataset as Dataset, train_val_split as train_val_split
from ._digits import load_digits as load_digits
from ._folder import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS, load_image_folder as load_image_folder


__all__ = [
    "IMAGE_EXTENSIONS",
    "Dataset",
    "augment",
    "batches",
    "load_digits",
    "load_image_folder",
    "num_batches",
    "train_val_split",
]
