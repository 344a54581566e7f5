"""`cfconv.data`: loading, splitting, augmenting and batching images.

Image folders are written into `tmp_path` with Pillow; the digits ship with scikit-learn.
Nothing here touches the network.
"""

import functools
import gc
import threading
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import cfconv.data
import cfconv.data._batches
from cfconv.data import Dataset
from helpers import checker_modes, count_compilations, raises_naming


RED, GREEN, BLUE, YELLOW = (200, 30, 40), (20, 180, 60), (30, 50, 210), (220, 200, 20)
GRAY = 128
ORANGE = (250, 140, 10)
PURPLE = (120, 40, 160)


def _write(path, image, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def _palette_image(size, colour):
    image = Image.new("P", size, 1)
    image.putpalette([0, 0, 0, *colour] + [0, 0, 0] * 254)
    return image


def _half_and_half(width, height):
    """Black on the left half, white on the right half."""
    array = np.zeros((height, width), dtype=np.uint8)
    array[:, width // 2 :] = 255
    return array


@pytest.fixture
def pets(tmp_path):
    """A Cats-vs-Dogs-like folder: good images of every kind plus two broken ones."""
    root = tmp_path / "PetImages"
    cat, dog = root / "Cat", root / "Dog"
    # Cat, in sorted order: a JPEG, a PNG, a grayscale JPEG; then two broken JPEGs.
    _write(cat / "1_red.jpg", Image.new("RGB", (40, 30), RED), quality=95)
    _write(cat / "2_green.png", Image.new("RGB", (20, 20), GREEN))
    _write(cat / "3_gray.JPEG", Image.new("L", (25, 35), GRAY), quality=95)
    (cat / "4_corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    (cat / "5_empty.jpg").write_bytes(b"")
    # Dog: an RGBA PNG, a palette GIF, a palette PNG with transparency, a nested BMP.
    rgba = Image.new("RGBA", (16, 16), (*BLUE, 255))
    _write(dog / "a_rgba.png", rgba)
    _write(dog / "b_palette.gif", _palette_image((18, 12), YELLOW))
    # Per-entry alpha (a tRNS chunk read back as bytes): converting it straight to RGB
    # makes Pillow warn, which would break "exactly one warning".
    transparent = _palette_image((10, 10), ORANGE)
    _write(dog / "c_palette_transparency.png", transparent, transparency=bytes([0, 128]))
    _write(dog / "d_nested" / "e_purple.bmp", Image.new("RGB", (12, 12), PURPLE))
    # Not images, or hidden: all ignored (a broken hidden .jpg would add a warning).
    (dog / "Thumbs.db").write_bytes(b"not an image")
    (dog / "notes.txt").write_text("hello")
    (dog / ".hidden.jpg").write_bytes(b"broken")
    _write(root / ".cache" / "x.png", Image.new("RGB", (8, 8), RED))
    _write(root / "stray.png", Image.new("RGB", (8, 8), RED))
    return root


def _load_with_one_warning(path, **kwargs):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dataset = cfconv.data.load_image_folder(path, **kwargs)
    messages = [str(warning.message) for warning in record]
    assert len(record) == 1, messages
    assert issubclass(record[0].category, UserWarning)
    return dataset, messages[0]


#
# load_image_folder
#


def test_image_folder_loads_good_images_and_warns_once(pets):
    with pytest.warns(UserWarning, match="skipped 2 unreadable image files of 9"):
        cfconv.data.load_image_folder(pets, image_size=8)
    dataset, message = _load_with_one_warning(pets, image_size=(8, 10))
    assert "4_corrupt.jpg" in message and "5_empty.jpg" in message

    assert dataset.class_names == ("Cat", "Dog")
    assert dataset.num_classes == 2
    assert len(dataset) == 7
    assert dataset.images.shape == (7, 8, 10, 3)
    assert dataset.images.dtype == np.uint8
    assert dataset.labels.dtype == np.int32
    assert dataset.image_shape == (8, 10)
    assert dataset.channels == 3
    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 1, 1, 1, 1])

    # Solid colours survive decoding, conversion and resizing (JPEG within a few levels).
    expected = [RED, GREEN, (GRAY,) * 3, BLUE, YELLOW, ORANGE, PURPLE]
    tolerance = [4, 0, 2, 0, 0, 0, 0]
    for image, colour, tol in zip(dataset.images, expected, tolerance):
        difference = np.abs(image.astype(int) - np.asarray(colour)[None, None, :])
        assert difference.max() <= tol, (colour, image[0, 0])


def test_image_folder_grayscale(pets):
    dataset, _ = _load_with_one_warning(pets, image_size=6, channels=1)
    assert dataset.images.shape == (7, 6, 6, 1)
    # ITU-R 601 luma, which Pillow's "L" conversion uses.
    luma = [round(0.299 * r + 0.587 * g + 0.114 * b) for r, g, b in [RED, GREEN]]
    assert abs(int(dataset.images[0, 3, 3, 0]) - luma[0]) <= 4
    assert abs(int(dataset.images[1, 3, 3, 0]) - luma[1]) <= 1
    assert abs(int(dataset.images[2, 3, 3, 0]) - GRAY) <= 2


def test_image_folder_max_per_class(pets):
    dataset, message = _load_with_one_warning(pets, image_size=4, max_per_class=4)
    assert "skipped 1 unreadable image file of 8" in message
    np.testing.assert_array_equal(dataset.labels, [0, 0, 0, 1, 1, 1, 1])
    dataset = cfconv.data.load_image_folder(pets, image_size=4, max_per_class=1)
    np.testing.assert_array_equal(dataset.labels, [0, 1])


def test_image_folder_num_workers_do_not_change_the_result(pets):
    one, _ = _load_with_one_warning(pets, image_size=5, num_workers=1)
    four, _ = _load_with_one_warning(pets, image_size=5, num_workers=4)
    np.testing.assert_array_equal(one.images, four.images)
    np.testing.assert_array_equal(one.labels, four.labels)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("size", [(40, 40), (400, 300)])
def test_resize_keeps_colour_and_layout(tmp_path, suffix, size):
    width, height = size
    solid = Image.new("RGB", (width, height), (17, 130, 240))
    halves = Image.fromarray(_half_and_half(width, height)).convert("RGB")
    _write(tmp_path / "a" / f"solid{suffix}", solid, quality=95)
    _write(tmp_path / "b" / f"halves{suffix}", halves, quality=95)
    tol = 0 if suffix == ".png" else 3  # JPEG is lossy
    for out_height, out_width in [(20, 20), (10, 30), (60, 16)]:
        dataset = cfconv.data.load_image_folder(tmp_path, image_size=(out_height, out_width))
        solid_out, halves_out = dataset.images.astype(int)
        assert np.abs(solid_out - np.array([17, 130, 240])).max() <= tol
        # The left part stays black, the right part white, with a blend in between.
        quarter = out_width // 4
        assert halves_out[:, :quarter].max() <= 2 * tol + 2
        assert halves_out[:, -quarter:].min() >= 255 - 2 * tol - 2
        means = halves_out.mean(axis=(0, 2))
        assert np.all(np.diff(means) >= -tol), means


def test_image_folder_reads_16_bit_png(tmp_path):
    values = np.full((6, 6), 40000, dtype=np.uint16)
    _write(tmp_path / "a" / "deep.png", Image.fromarray(values))
    _write(tmp_path / "b" / "plain.png", Image.new("L", (6, 6), 7))
    dataset = cfconv.data.load_image_folder(tmp_path, image_size=6, channels=1)
    assert abs(int(dataset.images[0, 0, 0, 0]) - round(40000 / 65535 * 255)) <= 1
    assert int(dataset.images[1, 0, 0, 0]) == 7


def test_image_folder_errors_name_path(tmp_path):
    with pytest.raises(ValueError, match="`path` does not exist"):
        cfconv.data.load_image_folder(tmp_path / "missing", image_size=8)

    file = tmp_path / "file.jpg"
    _write(file, Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="`path` must be a folder.*got a file"):
        cfconv.data.load_image_folder(file, image_size=8)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="`path` .* no subfolders"):
        cfconv.data.load_image_folder(empty, image_size=8)

    flat = tmp_path / "flat"  # images but no class folders
    _write(flat / "x.png", Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="`path` .* no subfolders"):
        cfconv.data.load_image_folder(flat, image_size=8)

    single = tmp_path / "single"
    _write(single / "Cat" / "x.png", Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="`path` must hold at least two class subfolders"):
        cfconv.data.load_image_folder(single, image_size=8)

    parent = tmp_path / "parent"  # one level too high: suggest the folder below
    _write(parent / "PetImages" / "Cat" / "x.png", Image.new("RGB", (4, 4)))
    _write(parent / "PetImages" / "Dog" / "x.png", Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match="`path` .*did you mean .*PetImages"):
        cfconv.data.load_image_folder(parent, image_size=8)

    no_images = tmp_path / "no_images"
    _write(no_images / "Cat" / "x.png", Image.new("RGB", (4, 4)))
    (no_images / "Dog").mkdir()
    (no_images / "Dog" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match="`path` has a class subfolder 'Dog' without image"):
        cfconv.data.load_image_folder(no_images, image_size=8)

    corrupt = tmp_path / "corrupt"
    for name in ("Cat", "Dog"):
        (corrupt / name).mkdir(parents=True)
        (corrupt / name / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
        (corrupt / name / "empty.png").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning before the error
        with pytest.raises(ValueError, match="`path` holds no readable images: all 4"):
            cfconv.data.load_image_folder(corrupt, image_size=8)


@checker_modes
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image_size=0), "image_size"),
        (dict(image_size=(8, 0)), "image_size[1]"),
        (dict(image_size=(8, 8, 8)), "image_size"),
        (dict(image_size=8, channels=2), "channels"),
        (dict(image_size=8, max_per_class=0), "max_per_class"),
        (dict(image_size=8, num_workers=0), "num_workers"),
    ],
)
def test_image_folder_argument_errors(pets, kwargs, name, checker):
    with raises_naming(name, ValueError, checker=checker):
        cfconv.data.load_image_folder(pets, **kwargs)


#
# load_digits
#


@pytest.fixture(scope="module")
def digits():
    return cfconv.data.load_digits()


def test_digits(digits):
    from sklearn.datasets import load_digits

    assert len(digits) == 1797
    assert digits.num_classes == 10
    assert digits.class_names == tuple("0123456789")
    assert digits.images.shape == (1797, 8, 8, 1)
    assert digits.images.dtype == np.uint8
    assert digits.images.min() == 0 and digits.images.max() == 255
    raw = load_digits()
    np.testing.assert_array_equal(digits.labels, raw.target)  # pyright: ignore
    # 0..16 maps linearly onto 0..255.
    expected = np.rint(raw.images * 255 / 16)  # pyright: ignore
    np.testing.assert_array_equal(digits.images[..., 0], expected)
    assert np.bincount(digits.labels).min() > 170


def test_digits_resize_and_channels(digits):
    resized = cfconv.data.load_digits(image_size=16, channels=3)
    assert resized.images.shape == (1797, 16, 16, 3)
    np.testing.assert_array_equal(resized.images[..., 0], resized.images[..., 2])
    np.testing.assert_array_equal(resized.labels, digits.labels)
    # Upsampling keeps the overall brightness of each image.
    small = digits.images.mean(axis=(1, 2, 3))
    large = resized.images[..., :1].mean(axis=(1, 2, 3))
    assert np.abs(small - large).max() < 8
    assert cfconv.data.load_digits(channels=3).images.shape == (1797, 8, 8, 3)
    assert cfconv.data.load_digits(image_size=(4, 12)).images.shape == (1797, 4, 12, 1)


#
# Dataset and train_val_split
#


def _numbered(counts, *, height=2, width=3):
    """A data set whose image `i` is filled with `i` (so `i < 256`) and whose labels
    follow `counts` examples per class, interleaved."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    labels = np.random.default_rng(1).permutation(labels).astype(np.int32)
    n = labels.size
    images = np.broadcast_to(
        np.arange(n, dtype=np.uint8)[:, None, None, None], (n, height, width, 1)
    )
    names = tuple(f"class{c}" for c in range(len(counts)))
    return Dataset(np.ascontiguousarray(images), labels, names)


def _ids(dataset):
    return dataset.images[:, 0, 0, 0].astype(int)


def test_dataset_properties():
    dataset = Dataset(
        np.zeros((5, 4, 6, 3), np.uint8), np.arange(5, dtype=np.int32) % 2, ("a", "b")
    )
    assert len(dataset) == 5
    assert dataset.num_classes == 2
    assert dataset.image_shape == (4, 6)
    assert dataset.channels == 3
    with pytest.raises(AttributeError):
        dataset.labels = dataset.labels  # pyright: ignore[reportAttributeAccessIssue]
    assert (
        repr(dataset)
        == "Dataset(images=uint8[5, 4, 6, 3], labels=int32[5], class_names=('a', 'b'))"
    )
    assert dataset != Dataset(dataset.images, dataset.labels, dataset.class_names)
    subset = dataset.subset(np.array([4, 0]))
    np.testing.assert_array_equal(subset.labels, [0, 0])


@checker_modes
@pytest.mark.parametrize(
    "images, labels, class_names, name, error",
    [
        (
            np.zeros((3, 4, 4, 1), np.uint8),
            np.zeros(2, np.int32),
            ("a",),
            ("labels", "images"),
            ValueError,
        ),
        (np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.int32), ("a",), "images", ValueError),
        (np.zeros((3, 4, 4, 1), np.float32), np.zeros(3, np.int32), ("a",), "images", TypeError),
        (np.zeros((3, 4, 4, 1), np.uint8), np.zeros(3, np.int64), ("a",), "labels", TypeError),
        (
            np.zeros((3, 4, 4, 1), np.uint8),
            np.array([0, 1, 2], np.int32),
            ("a", "b"),
            "labels",
            ValueError,
        ),
        (
            np.zeros((3, 4, 4, 1), np.uint8),
            np.array([0, -1, 0], np.int32),
            ("a", "b"),
            "labels",
            ValueError,
        ),
        (np.zeros((3, 4, 4, 1), np.uint8), np.zeros(3, np.int32), ["a"], "class_names", TypeError),
        (
            np.zeros((3, 4, 4, 1), np.uint8),
            np.zeros(3, np.int32),
            ("a", "a"),
            "class_names",
            ValueError,
        ),
        (np.zeros((3, 4, 4, 1), np.uint8), np.zeros(3, np.int32), (), "class_names", ValueError),
    ],
)
def test_dataset_validation(images, labels, class_names, name, error, checker):
    with raises_naming(name, error, checker=checker):
        Dataset(images, labels, class_names)


def test_split_is_stratified_disjoint_and_complete():
    counts = [120, 60, 18, 2, 1]
    dataset = _numbered(counts)
    train, val = cfconv.data.train_val_split(dataset, val_fraction=0.2, seed=3)
    ids_train, ids_val = _ids(train), _ids(val)
    assert not set(ids_train) & set(ids_val)
    np.testing.assert_array_equal(np.sort(np.concatenate([ids_train, ids_val])), np.arange(201))
    # Both keep the original order, and each example keeps its label.
    assert np.all(np.diff(ids_train) > 0) and np.all(np.diff(ids_val) > 0)
    np.testing.assert_array_equal(train.labels, dataset.labels[ids_train])
    np.testing.assert_array_equal(val.labels, dataset.labels[ids_val])
    # round(0.2 * n), but at least one on each side for n >= 2; a single example trains.
    np.testing.assert_array_equal(np.bincount(val.labels, minlength=5), [24, 12, 4, 1, 0])
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=5), [96, 48, 14, 1, 1])
    assert train.class_names == val.class_names == dataset.class_names


def test_split_is_deterministic_per_seed():
    dataset = _numbered([100, 100])
    first = cfconv.data.train_val_split(dataset, val_fraction=0.3, seed=0)
    again = cfconv.data.train_val_split(dataset, val_fraction=0.3, seed=0)
    other = cfconv.data.train_val_split(dataset, val_fraction=0.3, seed=1)
    np.testing.assert_array_equal(_ids(first[1]), _ids(again[1]))
    assert len(first[1]) == len(other[1]) == 60
    assert not np.array_equal(_ids(first[1]), _ids(other[1]))


@checker_modes
@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_rejects_bad_fraction(val_fraction, checker):
    with raises_naming("val_fraction", ValueError, checker=checker):
        cfconv.data.train_val_split(_numbered([5, 5]), val_fraction=val_fraction)


def test_split_needs_a_class_with_two_examples():
    with pytest.raises(ValueError, match="`dataset`"):
        cfconv.data.train_val_split(_numbered([1, 1, 1]))


#
# augment
#


def _batch(seed, shape=(8, 3, 12, 16), low=0.0, high=1.0):
    return jax.random.uniform(jax.random.key(seed), shape, minval=low, maxval=high)


OFF: dict[str, Any] = dict(flip=False, max_shift=0.0, brightness=0.0, contrast=0.0)


def _shifted(image, dy, dx):
    """Reference: `image` (c, h, w) moved down `dy`, right `dx`, zero fill (numpy)."""
    out = np.zeros_like(image)
    _, height, width = image.shape
    out[:, max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = image[
        :, max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)
    ]
    return out


def test_augment_identity_when_off():
    x = _batch(0)
    out = cfconv.data.augment(jax.random.key(1), x, **OFF)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(x))


def test_augment_flip():
    x = np.asarray(_batch(0, (16, 3, 5, 7)))
    out = np.asarray(
        cfconv.data.augment(jax.random.key(2), jnp.asarray(x), **{**OFF, "flip": True})
    )
    flipped = [np.array_equal(o, np.flip(xi, axis=-1)) for o, xi in zip(out, x)]
    same = [np.array_equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same))
    assert any(flipped) and any(same)  # holds for this key (each is a fair coin)


def test_augment_shift_moves_content():
    x = np.asarray(_batch(0, (16, 2, 12, 16), low=0.1))  # nonzero, so zero fill shows
    out = np.asarray(
        cfconv.data.augment(jax.random.key(3), jnp.asarray(x), **{**OFF, "max_shift": 0.25})
    )
    assert out.shape == x.shape
    moved = 0
    for o, xi in zip(out, x):
        # Some shift within floor(0.25 * 12) = 3 rows and floor(0.25 * 16) = 4 columns.
        matches = [
            (dy, dx)
            for dy in range(-3, 4)
            for dx in range(-4, 5)
            if np.array_equal(o, _shifted(xi, dy, dx))
        ]
        assert len(matches) == 1, matches
        moved += matches[0] != (0, 0)
    assert moved >= 12


def test_augment_brightness_and_contrast():
    x = _batch(0, low=0.3, high=0.7)  # no clipping for changes up to 0.2 / 20%
    key = jax.random.key(4)
    out = np.asarray(cfconv.data.augment(key, x, **{**OFF, "brightness": 0.2}), np.float64)
    offset = out - np.asarray(x, np.float64)
    per_image = offset.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        offset, np.broadcast_to(per_image[:, None, None, None], offset.shape), atol=1e-6
    )
    assert np.abs(per_image).max() <= 0.2 and np.abs(per_image).min() > 0
    assert np.ptp(per_image) > 0.05

    out = np.asarray(cfconv.data.augment(key, x, **{**OFF, "contrast": 0.2}), np.float64)
    x64 = np.asarray(x, np.float64)
    mean = x64.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3), keepdims=True), mean, atol=1e-5)
    factor = ((out - mean) * (x64 - mean)).sum(axis=(1, 2, 3)) / ((x64 - mean) ** 2).sum(
        axis=(1, 2, 3)
    )
    np.testing.assert_allclose(out, mean + factor[:, None, None, None] * (x64 - mean), atol=1e-5)
    assert np.all((factor >= 0.8 - 1e-5) & (factor <= 1.2 + 1e-5))
    assert np.ptp(factor) > 0.05


def test_augment_range_determinism_and_jit():
    x = _batch(0)
    key = jax.random.key(5)
    out = cfconv.data.augment(key, x, brightness=0.5, contrast=0.5)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_array_equal(
        np.asarray(out), np.asarray(cfconv.data.augment(key, x, brightness=0.5, contrast=0.5))
    )
    other = cfconv.data.augment(jax.random.key(6), x, brightness=0.5, contrast=0.5)
    assert not np.array_equal(np.asarray(out), np.asarray(other))

    jitted = jax.jit(functools.partial(cfconv.data.augment, brightness=0.5, contrast=0.5))
    np.testing.assert_allclose(np.asarray(jitted(key, x)), np.asarray(out), atol=1e-6)
    with count_compilations() as compilations:
        jitted(jax.random.key(7), x).block_until_ready()
    assert compilations[0] == 0


@checker_modes
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(max_shift=1.0), "max_shift"),
        (dict(max_shift=-0.1), "max_shift"),
        (dict(brightness=-0.1), "brightness"),
        (dict(contrast=1.5), "contrast"),
    ],
)
def test_augment_argument_errors(kwargs, name, checker):
    with raises_naming(name, ValueError, checker=checker):
        cfconv.data.augment(jax.random.key(0), _batch(0), **kwargs)


@checker_modes
def test_augment_rejects_unbatched_images(checker):
    with raises_naming("images", ValueError, checker=checker):
        cfconv.data.augment(jax.random.key(0), jnp.zeros((3, 8, 8)))


#
# batches
#


@pytest.fixture(scope="module")
def numbered():
    """50 random RGB images 6x5 whose pixel [0, 0, 0] is the example's index."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(50)
    return Dataset(images, (np.arange(50) % 3).astype(np.int32), ("a", "b", "c"))


def _batch_ids(iterator):
    return [np.rint(np.asarray(x)[:, 0, 0, 0] * 255).astype(int) for x, _ in iterator]


def _wait_for_threads(count, timeout=1.0):
    deadline = time.monotonic() + timeout
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_shapes_and_values(numbered, prefetch):
    seen = 0
    for x, y in cfconv.data.batches(numbered, 8, shuffle=True, seed=1, prefetch=prefetch):
        assert isinstance(x, jax.Array) and isinstance(y, jax.Array)
        assert x.shape == (8, 3, 6, 5) and x.dtype == jnp.float32
        assert y.shape == (8,) and y.dtype == jnp.int32
        ids = np.rint(np.asarray(x)[:, 0, 0, 0] * 255).astype(int)
        expected = numbered.images[ids].transpose(0, 3, 1, 2).astype(np.float64) / 255
        np.testing.assert_allclose(np.asarray(x), expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(np.asarray(y), numbered.labels[ids])
        seen += 1
    assert seen == cfconv.data.num_batches(numbered, 8) == 6


def test_batches_order(numbered):
    def ids(**kwargs):
        return _batch_ids(cfconv.data.batches(numbered, 8, **{"shuffle": True, **kwargs}))

    first = ids(seed=0, epoch=0)
    np.testing.assert_array_equal(first, ids(seed=0, epoch=0))
    # A resumed run at epoch k sees the documented permutation for (seed, k).
    order = np.random.default_rng((0, 3)).permutation(50)[:48].reshape(6, 8)
    np.testing.assert_array_equal(ids(seed=0, epoch=3), order)
    assert not np.array_equal(first, ids(seed=0, epoch=1))
    assert not np.array_equal(first, ids(seed=1, epoch=0))
    np.testing.assert_array_equal(ids(shuffle=False), np.arange(48).reshape(6, 8))


@pytest.mark.parametrize("batch_size", [1, 7, 50, 64])
def test_batches_cover_every_example_once(numbered, batch_size):
    iterator = cfconv.data.batches(numbered, batch_size, shuffle=True, drop_remainder=False)
    ids = _batch_ids(iterator)
    assert len(ids) == cfconv.data.num_batches(numbered, batch_size, drop_remainder=False)
    assert len(ids) == -(-50 // batch_size)
    assert all(len(batch) == batch_size for batch in ids[:-1])
    np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(50))


def test_prefetch_does_not_change_batches(numbered):
    runs = [
        list(
            cfconv.data.batches(
                numbered, 7, shuffle=True, epoch=2, drop_remainder=False, prefetch=p
            )
        )
        for p in (0, 1, 3)
    ]
    for run in runs[1:]:
        assert len(run) == len(runs[0])
        for (x, y), (x0, y0) in zip(run, runs[0]):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(x0))
            np.testing.assert_array_equal(np.asarray(y), np.asarray(y0))


def test_closing_early_ends_the_thread(numbered):
    before = threading.active_count()
    iterator = cfconv.data.batches(numbered, 2, shuffle=True, prefetch=2)
    assert threading.active_count() == before  # nothing starts before iterating
    next(iterator)
    assert threading.active_count() == before + 1  # 25 batches: it cannot have finished
    iterator.close()  # pyright: ignore[reportAttributeAccessIssue]
    assert _wait_for_threads(before) == before

    iterator = cfconv.data.batches(numbered, 2, shuffle=True, prefetch=2)
    next(iterator)
    del iterator
    gc.collect()
    assert _wait_for_threads(before) == before

    for _ in cfconv.data.batches(numbered, 2, shuffle=False, prefetch=2):
        break
    gc.collect()
    assert _wait_for_threads(before) == before


@pytest.mark.parametrize("prefetch", [0, 2])
def test_errors_while_loading_propagate(numbered, monkeypatch, prefetch):
    calls = []
    original = cfconv.data._batches._to_float

    def failing(images):
        calls.append(None)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return original(images)

    monkeypatch.setattr(cfconv.data._batches, "_to_float", failing)
    before = threading.active_count()
    received = 0
    with pytest.raises(RuntimeError, match="disk on fire"):
        for _ in cfconv.data.batches(numbered, 8, shuffle=True, prefetch=prefetch):
            received += 1
    assert received == 2
    assert _wait_for_threads(before) == before


@checker_modes
@pytest.mark.parametrize(
    "batch_size, kwargs, name",
    [
        (0, {}, "batch_size"),
        (51, {}, "batch_size"),
        (8, dict(prefetch=-1), "prefetch"),
        (8, dict(seed=-1), "seed"),
        (8, dict(epoch=-2), "epoch"),
    ],
)
def test_batches_argument_errors(numbered, batch_size, kwargs, name, checker):
    with raises_naming(name, ValueError, checker=checker):
        cfconv.data.batches(numbered, batch_size, shuffle=True, **kwargs)


def test_num_batches(numbered):
    assert cfconv.data.num_batches(numbered, 8) == 6
    assert cfconv.data.num_batches(numbered, 8, drop_remainder=False) == 7
    assert cfconv.data.num_batches(numbered, 50) == 1
    assert cfconv.data.num_batches(numbered, 51, drop_remainder=False) == 1
    with pytest.raises(ValueError, match="`batch_size`"):
        cfconv.data.num_batches(numbered, 51)
