"""Sampling kernel positions, and mapping them to generator coordinates."""

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, Shaped

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


def _shares(weights: Float[Array, " strata"], num: int, capacity: int) -> Float[Array, " strata"]:
    r"""Real shares $\min(\text{capacity}, \lambda w_f)$ of `num` in proportion to
    `weights`, with $\lambda$ such that they sum to `num` (to float rounding). Strata of
    weight 0 get nothing, unless the others cannot take `num` between them: then they are
    all full and the weight-0 strata share the rest evenly."""
    strata = weights.shape[0]
    weights = jnp.asarray(weights, jnp.float32)
    total = weights.sum()
    # Equal weights where all are zero (or not finite), rather than no allocation at all.
    usable = jnp.isfinite(total) & (total > 0)
    weights = jnp.where(usable, weights / jnp.where(usable, total, 1.0), 1.0 / strata)
    positive = weights > 0
    room = capacity * positive.sum()

    def halve(_, bounds):
        low, high = bounds
        mid = (low + high) / 2
        short = jnp.minimum(capacity, mid * weights).sum() < num
        return jnp.where(short, mid, low), jnp.where(short, high, mid)

    high = jnp.asarray(num, jnp.float32) / jnp.min(jnp.where(positive, weights, 1.0))
    _, high = jax.lax.fori_loop(0, 60, halve, (jnp.zeros((), jnp.float32), high))
    filled = jnp.minimum(capacity, high * weights)
    spill = jnp.where(positive, capacity, (num - room) / jnp.maximum(strata - positive.sum(), 1))
    return jnp.where(room >= num, filled, spill)


def _spread(quanta: Int[Array, " strata"], off, limit) -> Int[Array, " strata"]:
    """`quanta` with `off` (of either sign) added, largest strata first, none going below
    0 or above `limit`."""
    order = jnp.argsort(-quanta, stable=True)
    sorted_quanta = quanta[order]
    # How much each stratum can take (off > 0) or give (off < 0), in that order.
    slack = jnp.where(off > 0, limit - sorted_quanta, sorted_quanta)
    before = jnp.cumsum(slack) - slack
    moved = jnp.clip(jnp.abs(off) - before, 0, slack)
    return quanta.at[order].add(jnp.sign(off) * moved)


def _allocate(
    key: PRNGKeyArray, weights: Float[Array, " strata"], num: int, capacity: int
) -> tuple[Int[Array, " strata"], Float[Array, " strata"]]:
    r"""Random whole counts $n_f \le$ `capacity` summing to `num`, whose expectations are
    the shares of `_shares` (quantised to $1/R$ of a position): systematic rounding of the
    cumulative shares with one uniform offset, in integers. Returns the counts and the
    expectations."""
    strata = weights.shape[0]
    if not 0 < num <= capacity * strata:
        raise ValueError(
            f"`num` must be in [1, {capacity * strata}] ({strata} strata of {capacity}), got {num}"
        )
    # R quanta per position, with num * R <= 2^30 so that int32 sums cannot overflow (no
    # stratum can take more than `num` positions anyway).
    resolution = 2 ** max(0, min(16, 30 - math.ceil(math.log2(num + 1))))
    capacity = min(capacity, num)
    limit = capacity * resolution
    quanta = jnp.minimum(jnp.floor(_shares(weights, num, capacity) * resolution), limit).astype(
        jnp.int32
    )
    # Float rounding leaves the total a little off: settle it on the largest shares.
    quanta = _spread(quanta, num * resolution - quanta.sum(), limit)
    ends = jnp.cumsum(quanta)
    offset = jax.random.randint(key, (), 0, resolution, dtype=jnp.int32)
    counts = (ends + offset) // resolution - (ends - quanta + offset) // resolution
    return counts, quanta.astype(jnp.float32) / resolution


def _coprime_steps(n: int) -> np.ndarray:
    steps = [s for s in range(1, n) if math.gcd(s, n) == 1]
    return np.asarray(steps or [1], dtype=np.int32)


def stratified_positions(
    key: PRNGKeyArray,
    shape: tuple[int, int, int, int],
    num: int,
    frequency_weights: Float[Array, "h wf"],
) -> tuple[Positions, Float[Array, " num"]]:
    r"""Sample `num` distinct positions of a kernel grid, spread over its frequencies in
    proportion to `frequency_weights`, with the gradient scales that keep a sum unbiased.

    Each frequency `(row, column)` of a `(cin, cout, h, wf)` grid is a stratum of
    $C = \text{cin} \cdot \text{cout}$ entries, one per channel pair. Frequency $f$ is
    given a share $x_f = \min(C, \lambda w_f)$ of the `num` positions (with $\lambda$
    such that the shares sum to `num`), and draws $n_f$ of them, $\lfloor x_f \rfloor$
    or $\lceil x_f \rceil$ at random with expectation $x_f$ (systematic rounding, so that
    the counts sum to `num` exactly); within it, $n_f$ distinct channel pairs from a
    random start with a random step coprime with $C$. So every entry at frequency $f$ is
    drawn with probability $x_f / C$. Frequencies where the gradient is large can then be
    sampled densely and the others sparsely: with weights that follow the size of the
    kernel gradient over the frequencies ([`cfconv.frequency_weights`][]), a step's
    sampled gradient has far less variance than with uniform positions (measured in
    `docs/cli.md`, "Accuracy").

    The scale of a position at frequency $f$ is $\text{num} / (F x_f)$, with
    $F = h \cdot wf$ frequencies: the inverse of its probability of being drawn, times
    `num / size`. A sum of per-position terms $c_p$ over the sample, each times its scale,
    then has the expectation $(\text{num} / \text{size}) \sum_p c_p$ over the whole grid,
    as the plain sum over uniformly drawn positions has, except for the frequencies that
    are never drawn: those of weight 0 (drawn only when the others cannot take all
    `num` positions between them) and those whose share is below the fixed-point
    resolution of the shares ($2^{-11}$ of a position at `num` $= 2^{18}$; $2^{30} /
    \text{num}$ parts of a position, at most $2^{16}$). With equal weights (and `num` a
    multiple of $F$) every scale is 1; a small share gives a large scale, which
    [`cfconv.frequency_weights`][]'s `floor` bounds (by $1 / \text{floor}$).

    **Arguments:**

    - `key`: a PRNG key.
    - `shape`: the grid shape `(cin, cout, h, wf)`.
    - `num`: how many positions (static), at most the grid size.
    - `frequency_weights`: non-negative array of shape `(h, wf)`, any scale.

    **Returns:**

    `(positions, scales)`: flat (C-order) indices of shape `(num,)`, distinct, grouped by
    frequency; and float32 scales of shape `(num,)`.
    """
    cin, cout, h, wf = check_shape("shape", shape, rank=4)
    num = check_int("num", num)
    check_array("frequency_weights", frequency_weights, ndim=2, kind="real")
    if frequency_weights.shape != (h, wf):
        raise ValueError(
            f"`frequency_weights` must have shape {(h, wf)} (the grid's frequencies), got "
            f"{frequency_weights.shape}"
        )
    if not isinstance(frequency_weights, jax.core.Tracer):
        values = np.asarray(frequency_weights)  # NumPy: not staged even under a trace
        if not np.all(np.isfinite(values) & (values >= 0)):
            raise ValueError("`frequency_weights` must be finite and non-negative")
    pairs, frequencies = cin * cout, h * wf
    if num > pairs * frequencies:
        raise ValueError(f"`num` must be at most the grid size {pairs * frequencies}, got {num}")
    dtype = _index_dtype(pairs * frequencies)
    key_counts, key_start, key_step = jax.random.split(key, 3)
    counts, expected = _allocate(key_counts, frequency_weights.reshape(-1), num, pairs)
    ends = jnp.cumsum(counts)
    slot = jnp.arange(num, dtype=jnp.int32)
    frequency = jnp.searchsorted(ends, slot, side="right").astype(jnp.int32)
    rank = slot - (ends - counts)[frequency]
    # A random step coprime with the number of pairs spreads a frequency's pairs out;
    # where rank * step could overflow the index dtype, a random start alone (step 1)
    # keeps every pair equally likely.
    overflow = (pairs - 1) ** 2 > jnp.iinfo(dtype).max
    steps = jnp.asarray(_coprime_steps(pairs) if not overflow else np.ones(1, np.int32))
    start = jax.random.randint(key_start, (frequencies,), 0, pairs, dtype=jnp.int32)
    step = steps[jax.random.randint(key_step, (frequencies,), 0, steps.shape[0])]
    # (start + rank * step) mod pairs, without overflowing int32 for large grids.
    offset = (rank.astype(dtype) * step[frequency].astype(dtype)) % pairs
    pair = (start[frequency].astype(dtype) + offset) % pairs
    positions = pair * frequencies + frequency.astype(dtype)
    scales = num / (frequencies * expected[frequency])
    return positions, scales


def frequency_weights(
    kernel_gradient: Shaped[Array, "cin cout h wf"], *, floor: float = 0.05
) -> Float[Array, "h wf"]:
    r"""Sampling weights over a kernel's frequencies from the size of its gradient.

    The weight of frequency $f$ is $(1 - \text{floor})\, m_f / \sum_g m_g +
    \text{floor} / (h \cdot wf)$, where $m_f = \sum_{i,o} |G_{i o f}|$ is the gradient's
    magnitude summed over the channel pairs. Given to
    [`cfconv.stratified_positions`][] (or a [`cfconv.Sparse`][] strategy with
    `sampling="stratified"`), this spreads a step's positions over the frequencies about
    as the optimal (Neyman) allocation of stratified sampling would, if the gradient
    terms within a frequency are of similar size; `floor` keeps a share for every
    frequency, so that none is left out for long.

    **Arguments:**

    - `kernel_gradient`: the gradient of a loss with respect to a kernel, shape
      `(cin, cout, h, wf)` (complex or real).
    - `floor`: the share of the weight spread evenly, in `[0, 1]`. Default `0.05`.

    **Returns:**

    A float32 array of shape `(h, wf)` that sums to 1.
    """
    complex_ = hasattr(kernel_gradient, "dtype") and jnp.iscomplexobj(kernel_gradient)
    check_array("kernel_gradient", kernel_gradient, ndim=4, kind="complex" if complex_ else "real")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
        raise ValueError(f"`floor` must be a number in [0, 1], got {floor!r}")
    magnitude = jnp.abs(kernel_gradient).astype(jnp.float32).sum(axis=(0, 1))
    total = magnitude.sum()
    share = jnp.where(total > 0, magnitude / jnp.where(total > 0, total, 1.0), 1.0 / magnitude.size)
    return (1 - floor) * share + floor / magnitude.size
