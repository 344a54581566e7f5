"""An in-memory image classification data set, and a stratified train/validation split."""

import dataclasses
import numbers

import numpy as np
from jaxtyping import Int, Int32, UInt8

from .._errors import check_int


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An image classification data set held in host memory as plain numpy arrays.

    Images stay `uint8` and channels-last on the host, which keeps the 25,000 images of
    Cats vs Dogs at 150x150x3 to about 1.7 GB; [`cfconv.data.batches`][] converts one
    batch at a time to `float32`, channels first, on the device.

    This is deliberately *not* a JAX PyTree: it never goes through `jax.jit`. Instances
    compare and hash by identity, and their `repr` shows shapes rather than pixels.

    **Fields:**

    - `images`: `uint8` array of shape `(N, H, W, C)`.
    - `labels`: `int32` array of shape `(N,)`, each in `[0, len(class_names))`.
    - `class_names`: the name of each class, indexed by label.
    """

    images: UInt8[np.ndarray, "n h w c"]
    labels: Int32[np.ndarray, " n"]
    class_names: tuple[str, ...]

    def __post_init__(self):
        images, labels, class_names = self.images, self.labels, self.class_names
        if not isinstance(images, np.ndarray):
            raise TypeError(f"`images` must be a numpy array, got {type(images).__name__}")
        if images.ndim != 4:
            raise ValueError(f"`images` must have shape (N, H, W, C), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise TypeError(f"`images` must have dtype uint8, got {images.dtype}")
        if not isinstance(labels, np.ndarray):
            raise TypeError(f"`labels` must be a numpy array, got {type(labels).__name__}")
        if labels.ndim != 1:
            raise ValueError(f"`labels` must have shape (N,), got shape {labels.shape}")
        if labels.dtype != np.int32:
            raise TypeError(f"`labels` must have dtype int32, got {labels.dtype}")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"`labels` and `images` must have the same length, got {labels.shape[0]} "
                f"labels and {images.shape[0]} images"
            )
        if not isinstance(class_names, tuple) or not all(
            isinstance(name, str) for name in class_names
        ):
            raise TypeError(f"`class_names` must be a tuple of strings, got {class_names!r}")
        if len(class_names) == 0:
            raise ValueError("`class_names` must name at least one class")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"`class_names` must be distinct, got {class_names!r}")
        if labels.size > 0 and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(
                f"`labels` must lie in [0, {len(class_names)}) (one per class name), got "
                f"values in [{labels.min()}, {labels.max()}]"
            )

    def __repr__(self) -> str:
        return (
            f"Dataset(images=uint8{list(self.images.shape)}, "
            f"labels=int32{list(self.labels.shape)}, class_names={self.class_names!r})"
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """The number of classes, `len(class_names)`."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int]:
        """The spatial size `(H, W)` of every image."""
        _, height, width, _ = self.images.shape
        return height, width

    @property
    def channels(self) -> int:
        """The number of channels `C` of every image."""
        return self.images.shape[3]

    def subset(self, indices: Int[np.ndarray, " m"]) -> "Dataset":
        """The examples at `indices`, in that order (a copy), with the same class names."""
        return Dataset(self.images[indices], self.labels[indices], self.class_names)


def train_val_split(
    dataset: Dataset, *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Split a data set into training and validation sets, stratified by class.

    Each class is shuffled with a generator seeded by `seed` and split on its own, so every
    class keeps its proportion: `round(val_fraction * n)` of a class's `n` examples go to
    the validation set, but at least one and at most `n - 1` when `n >= 2` (a class with a
    single example goes to the training set). Both sets keep the original order of the
    examples they contain.

    **Arguments:**

    - `dataset`: the [`cfconv.data.Dataset`][] to split.
    - `val_fraction`: the fraction of each class for validation, in `(0, 1)`.
    - `seed`: a non-negative integer; the split is a deterministic function of it.

    **Returns:**

    `(train, val)`, two disjoint data sets that together hold every example once.

    !!! example

        ```python
        train, val = cfconv.data.train_val_split(dataset, val_fraction=0.2, seed=0)
        ```
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real):
        raise TypeError(f"`val_fraction` must be a number in (0, 1), got {val_fraction!r}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    val_parts = []
    for label in range(dataset.num_classes):
        members = np.flatnonzero(dataset.labels == label)
        n = members.size
        if n < 2:
            continue
        num_val = min(max(round(float(val_fraction) * n), 1), n - 1)
        val_parts.append(rng.permutation(members)[:num_val])
    in_val = np.zeros(len(dataset), dtype=bool)
    if val_parts:
        in_val[np.concatenate(val_parts)] = True
    if not in_val.any():
        raise ValueError("`dataset` has no class with two or more examples, so it cannot be split")
    train = dataset.subset(np.flatnonzero(~in_val))
    val = dataset.subset(np.flatnonzero(in_val))
    return train, val
