"""Sampling kernel positions, and mapping them to generator coordinates."""

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ._custom_types import Coordinates, Positions
from ._errors import check_array, check_int, check_shape


CoordinateKind = Literal["frequency", "index"]
COORDINATE_KINDS: tuple[str, ...] = ("frequency", "index")


def _index_dtype(size: int) -> jnp.dtype:
    if size <= jnp.iinfo(jnp.int32).max:
        return jnp.dtype(jnp.int32)
    if jax.config.read("jax_enable_x64"):
        return jnp.dtype(jnp.int64)
    raise ValueError(
        f"`shape` has {size} entries, more than 32-bit indices can address; enable 64-bit "
        "indices with `jax.config.update('jax_enable_x64', True)`"
    )


def sample_positions(
    key: PRNGKeyArray, shape: tuple[int, ...], num: int, *, replace: bool = True
) -> Positions:
    """Sample `num` uniformly random flat (C-order) indices into a grid of `shape`.

    With `replace=True` (the default, as in the paper) the positions are i.i.d. uniform; a
    position may occur more than once, which [`cfconv.ema_update`][] handles (it updates
    the entry once).

    With `replace=False` the positions are distinct, and every set of `num` distinct
    positions is equally likely. This takes $O(\\text{num})$ memory and
    $O(\\text{num} \\log \\text{num})$ time for any grid size: i.i.d. draws are repeated,
    only where they collide, until all are distinct (expected rounds grow like
    $\\log \\text{num}$ since collisions are rare while `num <= size / 2`). The grid is
    never enumerated, permuted or sorted, except when `num > size / 2`, where a
    permutation of the grid costs $O(\\text{size}) = O(\\text{num})$ anyway.

    **Arguments:**

    - `key`: a PRNG key. The same key always gives the same positions.
    - `shape`: the grid shape, e.g. a kernel's `(cin, cout, h, w // 2 + 1)`.
    - `num`: how many positions to draw (static: it fixes the output shape).
    - `replace`: sample with replacement (`True`, default) or without (`False`).

    **Returns:**

    An integer array of shape `(num,)` with values in `[0, prod(shape))`; `int32`, or
    `int64` for grids of more than $2^{31} - 1$ entries (which need `jax_enable_x64`).

    !!! example

        ```python
        positions = cfconv.sample_positions(jax.random.key(0), (32, 32, 150, 76), 2**18)
        ```
    """
    dims = check_shape("shape", shape)
    num = check_int("num", num)
    if not isinstance(replace, bool):
        raise TypeError(f"`replace` must be a bool, got {replace!r}")
    size = math.prod(dims)
    dtype = _index_dtype(size)
    if replace:
        return jax.random.randint(key, (num,), 0, size, dtype=dtype)
    if num > size:
        raise ValueError(
            f"`num` must be at most the grid size {size} when `replace=False`, got {num}"
        )
    if 2 * num > size:
        return jax.random.permutation(key, jnp.arange(size, dtype=dtype))[:num]
    return _distinct_positions(key, size, num, dtype)


def _duplicates(positions: Int[Array, " num"]) -> Bool[Array, " num"]:
    """Mark every occurrence of a value except its first (in array order)."""
    iota = jnp.arange(positions.shape[0], dtype=jnp.int32)
    # Sorting by (value, array index) keeps the first occurrence in front of its repeats.
    sorted_values, order = jax.lax.sort((positions, iota), num_keys=2)
    repeat = jnp.concatenate([jnp.zeros((1,), bool), sorted_values[1:] == sorted_values[:-1]])
    return jnp.zeros(positions.shape, bool).at[order].set(repeat)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _distinct_positions(key: PRNGKeyArray, size: int, num: int, dtype: jnp.dtype) -> Positions:
    # Every step of this process treats all grid labels alike, so the law of the final set is
    # invariant under relabelling the grid: every `num`-subset is equally likely.
    key, first = jax.random.split(key)
    positions = jax.random.randint(first, (num,), 0, size, dtype=dtype)

    def cond(carry):
        return carry[2].any()

    def body(carry):
        key, positions, repeat = carry
        key, fresh_key = jax.random.split(key)
        fresh = jax.random.randint(fresh_key, (num,), 0, size, dtype=dtype)
        positions = jnp.where(repeat, fresh, positions)
        return key, positions, _duplicates(positions)

    _, positions, _ = jax.lax.while_loop(cond, body, (key, positions, _duplicates(positions)))
    return positions


def unravel_positions(
    positions: Positions, shape: tuple[int, int, int, int]
) -> tuple[Int[Array, " num"], Int[Array, " num"], Int[Array, " num"], Int[Array, " num"]]:
    """Split flat indices into a `(cin, cout, h, wf)` grid into their four indices.

    Computed with integer division and remainder, so no grid is ever stored.

    **Arguments:**

    - `positions`: flat (C-order) indices, shape `(num,)`.
    - `shape`: the grid shape `(cin, cout, h, wf)`.

    **Returns:**

    The tuple `(c_in, c_out, row, column)` of integer arrays of shape `(num,)`.
    """
    cin, cout, h, wf = check_shape("shape", shape, rank=4)
    check_array("positions", positions, ndim=1, kind="int")
    column = positions % wf
    rest = positions // wf
    row = rest % h
    rest = rest // h
    return rest // cout, rest % cout, row, column


def axis_coordinate(index: Int[Array, "*n"], size: int) -> Float[Array, "*n"]:
    """Map indices `0 .. size - 1` linearly onto `[-1, 1]` (to `0` when `size == 1`)."""
    if size == 1:
        return jnp.zeros(index.shape, jnp.float32)
    return index.astype(jnp.float32) * (2.0 / (size - 1)) - 1.0


def frequency_coordinates(
    row: Int[Array, "*n"],
    column: Int[Array, "*n"],
    height: int,
    width: int,
    kind: CoordinateKind = "frequency",
) -> tuple[Float[Array, "*n"], Float[Array, "*n"]]:
    """Coordinates of rfft2 grid entries for a `height x width` image.

    With `kind="frequency"` (the default) an entry's coordinates are its physical
    frequencies in cycles per pixel, times two: `f_y = 2 * fftfreq(height)[row]` in
    `[-1, 1)` and `f_x = 2 * rfftfreq(width)[column]` in `[0, 1]`, so that `±1` is the
    Nyquist frequency on both axes. Low frequencies stay together across the FFT's
    wrap-around, both axes share one scale, and a generator can be sampled at another
    resolution (the same coordinate means the same frequency).

    With `kind="index"` (the paper's style) rows and columns of the stored grid are spread
    linearly over `[-1, 1]`: `-1 + 2 * row / (height - 1)` and
    `-1 + 2 * column / (width // 2)`. Neighbouring coordinates are then neighbouring
    storage locations, so the highest positive and negative frequencies sit at opposite
    ends, and the meaning of a coordinate changes with the resolution.

    **Arguments:**

    - `row`, `column`: integer indices into the `(height, width // 2 + 1)` grid.
    - `height`, `width`: the image size.
    - `kind`: `"frequency"` or `"index"`.

    **Returns:**

    The pair `(f_y, f_x)` of float32 arrays shaped like `row`.
    """
    if kind == "frequency":
        half = (height + 1) // 2
        signed_row = jnp.where(row >= half, row - height, row)
        fy = signed_row.astype(jnp.float32) * (2.0 / height)
        fx = column.astype(jnp.float32) * (2.0 / width)
        return fy, fx
    if kind == "index":
        return axis_coordinate(row, height), axis_coordinate(column, width // 2 + 1)
    raise ValueError(f"`kind` must be one of {COORDINATE_KINDS}, got {kind!r}")


def position_coordinates(
    positions: Positions,
    shape: tuple[int, int, int, int],
    *,
    width: int,
    kind: CoordinateKind = "frequency",
) -> Coordinates:
    """Coordinates `(c_in, c_out, f_y, f_x)` of flat positions in a kernel grid.

    Channel coordinates spread the channel indices linearly over `[-1, 1]`; the spatial
    frequency coordinates are described in [`cfconv.frequency_coordinates`][]
    (physical frequencies by default, the paper's index coordinates with
    `kind="index"`).

    **Arguments:**

    - `positions`: flat (C-order) indices of shape `(num,)` into a grid of `shape`.
    - `shape`: the kernel grid shape `(cin, cout, h, w // 2 + 1)`.
    - `width`: the image width `w` (the grid alone cannot tell an even `w` from `w + 1`).
    - `kind`: `"frequency"` (default) or `"index"`.

    **Returns:**

    A float32 array of shape `(num, 4)`.
    """
    cin, cout, height, wf = check_shape("shape", shape, rank=4)
    width = check_int("width", width)
    if width // 2 + 1 != wf:
        raise ValueError(
            f"`width` {width} does not match the grid width {wf} of `shape` {shape} "
            f"(expected width // 2 + 1 == {wf})"
        )
    i, o, row, column = unravel_positions(positions, (cin, cout, height, wf))
    fy, fx = frequency_coordinates(row, column, height, width, kind)
    return jnp.stack([axis_coordinate(i, cin), axis_coordinate(o, cout), fy, fx], axis=-1)
