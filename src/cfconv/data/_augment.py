"""Random training-time augmentation of a batch of images, in JAX."""

import numbers

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def _check_number(name: str, value: object, low: float, high: float, *, open_high: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a Python number, got {value!r}")
    value = float(value)
    bracket = ")" if open_high else "]"
    if not (low <= value < high if open_high else low <= value <= high):
        raise ValueError(f"`{name}` must be in [{low}, {high}{bracket}, got {value}")
    return value


def _shift(image: Float[Array, "c h w"], dy: Array, dx: Array, pad_y: int, pad_x: int):
    """Move `image` down by `dy` and right by `dx` pixels, filling with zeros."""
    channels, height, width = image.shape
    padded = jnp.pad(image, ((0, 0), (pad_y, pad_y), (pad_x, pad_x)))
    zero = jnp.zeros((), dtype=dy.dtype)
    return jax.lax.dynamic_slice(padded, (zero, pad_y - dy, pad_x - dx), (channels, height, width))


def augment(
    key: PRNGKeyArray,
    images: Float[Array, "batch channels height width"],
    *,
    flip: bool = True,
    max_shift: float = 0.1,
    brightness: float = 0.2,
    contrast: float = 0.2,
) -> Float[Array, "batch channels height width"]:
    """Randomly augment a batch of images for training.

    Each image of the batch, independently, in this order:

    1. `flip`: is mirrored left-right with probability 1/2;
    2. `max_shift`: is translated by a whole number of pixels, drawn uniformly from
        `[-s, s]` with `s = floor(max_shift * size)`, separately along the height and the
        width. Pixels moved in from outside the image are **zero** (black);
    3. `brightness`: gets $b$ added to every pixel, $b \\sim U(-\\text{brightness},
        \\text{brightness})$;
    4. `contrast`: has its deviations from its mean (over channels and pixels) scaled by
        $c \\sim U(1 - \\text{contrast}, 1 + \\text{contrast})$;

    and the result is clipped to `[0, 1]`. Setting an option to `False` or `0` switches
    that step off; with all of them off, `images` come back unchanged (not even clipped).
    The options are Python values that fix which steps run; shapes are static, so the
    function can be `jax.jit`-ed with them closed over or marked static.

    **Arguments:**

    - `key`: a JAX PRNG key; the result is a deterministic function of it.
    - `images`: a float batch of shape `(batch, channels, height, width)`, values in
        `[0, 1]`, as [`cfconv.data.batches`][] yields.
    - `flip`: whether to flip horizontally at random.
    - `max_shift`: the largest translation, as a fraction of the image size, in `[0, 1)`.
    - `brightness`: the largest brightness change, in `[0, 1]`.
    - `contrast`: the largest relative contrast change, in `[0, 1]`.

    **Returns:**

    The augmented batch, with the shape and dtype of `images`.

    !!! example

        ```python
        key, subkey = jax.random.split(key)
        x = cfconv.data.augment(subkey, x)  # x from cfconv.data.batches
        ```
    """
    if not isinstance(flip, bool):
        raise TypeError(f"`flip` must be a bool, got {flip!r}")
    max_shift = _check_number("max_shift", max_shift, 0.0, 1.0, open_high=True)
    brightness = _check_number("brightness", brightness, 0.0, 1.0, open_high=False)
    contrast = _check_number("contrast", contrast, 0.0, 1.0, open_high=False)
    if images.ndim != 4:
        raise ValueError(
            f"`images` must have shape (batch, channels, height, width), got shape {images.shape}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"`images` must have a floating dtype, got {images.dtype}")

    batch, _, height, width = images.shape
    dtype = images.dtype
    flip_key, shift_key, brightness_key, contrast_key = jax.random.split(key, 4)
    changed = False

    if flip:
        flipped = jax.random.bernoulli(flip_key, 0.5, (batch,))
        images = jnp.where(flipped[:, None, None, None], images[..., ::-1], images)
        changed = True

    pad_y, pad_x = int(max_shift * height), int(max_shift * width)
    if pad_y > 0 or pad_x > 0:
        y_key, x_key = jax.random.split(shift_key)
        dy = jax.random.randint(y_key, (batch,), -pad_y, pad_y + 1)
        dx = jax.random.randint(x_key, (batch,), -pad_x, pad_x + 1)
        images = jax.vmap(lambda x, y_, x_: _shift(x, y_, x_, pad_y, pad_x))(images, dy, dx)
        changed = True

    if brightness > 0:
        offset = jax.random.uniform(
            brightness_key, (batch,), dtype, minval=-brightness, maxval=brightness
        )
        images = images + offset[:, None, None, None]
        changed = True

    if contrast > 0:
        factor = jax.random.uniform(
            contrast_key, (batch,), dtype, minval=1 - contrast, maxval=1 + contrast
        )
        mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
        images = (images - mean) * factor[:, None, None, None] + mean
        changed = True

    if changed:
        images = jnp.clip(images, 0, 1)
    return images
