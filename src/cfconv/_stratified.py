"""Stratified positions: a step's samples spread over a kernel's frequencies by weight,
with the gradient scales that keep a sparse step's gradient unbiased."""

import math

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, Shaped

from ._custom_types import KernelValues, Positions
from ._errors import check_array, check_int, check_shape
from ._positions import _index_dtype


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
    `docs/accuracy.md`).

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


def scale_gradient(values: KernelValues, scales: Float[Array, " num"]) -> KernelValues:
    """`values` unchanged, with each entry's gradient multiplied by its scale."""
    fixed = jax.lax.stop_gradient(values)
    return fixed + scales.astype(values.real.dtype) * (values - fixed)
