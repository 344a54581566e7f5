"""Tests for sampling kernel positions and mapping them to generator coordinates.

`sample_positions` is random, so its distribution is tested statistically: always with
FIXED keys (the tests are deterministic) and against bounds whose false-alarm probability
for a correct sampler is below 1e-9 (so a change of JAX's PRNG cannot make them flaky).
Coordinates are compared with numpy's `fftfreq`/`rfftfreq` and `unravel_index`.
"""

import math

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import cfconv
from helpers import checker_modes, count_compilations, raises_naming
from strategies import grid_shapes, sample_counts, seeds


# Chi-square critical values are taken at this false-alarm probability.
FALSE_ALARM = 1e-9

# 3.4e10 entries: a (cin, cout, h, wf) grid for 64 -> 64 channels at 4096 x 4096.
HUGE_GRID = (64, 64, 4096, 2049)


# Most tests sample through this jitted wrapper: eager calls with `replace=False` compile
# afresh every time (see `test_eager_calls_do_not_recompile`), which would make the suite
# slow. `test_jit_and_vmap_match_eager` checks that this changes nothing.
sample = jax.jit(cfconv.sample_positions, static_argnums=(1, 2), static_argnames=("replace",))


def chi_square(counts, expected):
    counts = np.asarray(counts, np.float64)
    return np.sum((counts - expected) ** 2 / expected)


def chi_square_bound(cells):
    return scipy.stats.chi2.isf(FALSE_ALARM, cells - 1)


def assert_distinct(positions):
    positions = np.asarray(positions)
    assert np.unique(positions).size == positions.size


# ---------------------------------------------------------------------------------------
# sample_positions: basic contract


@hypothesis.given(
    shape=grid_shapes, num=sample_counts, seed=seeds, replace=hypothesis.strategies.booleans()
)
def test_sample_positions_range_shape_dtype(shape, num, seed, replace):
    positions = sample(jax.random.key(seed), shape, num, replace=replace)
    assert positions.shape == (num,)
    assert positions.dtype == jnp.int32
    positions = np.asarray(positions)
    assert positions.min() >= 0
    assert positions.max() < math.prod(shape)
    if not replace:
        assert_distinct(positions)


@pytest.mark.parametrize("replace", [True, False])
@hypothesis.given(seed=seeds)
def test_sample_positions_deterministic_per_key(replace, seed):
    shape, num = (2, 3, 5, 4), 50  # 120 entries
    key = jax.random.key(seed)
    first = sample(key, shape, num, replace=replace)
    again = sample(key, shape, num, replace=replace)
    np.testing.assert_array_equal(first, again)
    # Another key gives another draw (the same sequence has probability below 71^-50).
    other = sample(jax.random.fold_in(key, 1), shape, num, replace=replace)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize(
    "num",
    # 1: tiny; 60: exactly size / 2 (the largest count drawn by rejection, with many
    # collisions); 61: just above size / 2; 120: all of the grid.
    [1, 60, 61, 120],
)
@hypothesis.given(seed=seeds)
def test_sample_positions_distinct_without_replacement(num, seed):
    positions = sample(jax.random.key(seed), (2, 3, 5, 4), num, replace=False)
    assert positions.shape == (num,)
    assert_distinct(positions)
    assert 0 <= int(positions.min()) and int(positions.max()) < 120
    if num == 120:
        np.testing.assert_array_equal(np.sort(positions), np.arange(120))


@pytest.mark.parametrize("replace", [True, False])
def test_jit_and_vmap_match_eager(replace):
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(
        jax.vmap(lambda key: cfconv.sample_positions(key, (2, 3, 5, 4), 40, replace=replace))
    )(keys)
    for key, positions in zip(keys, batched):
        np.testing.assert_array_equal(positions, sample(key, (2, 3, 5, 4), 40, replace=replace))
    # One eager call only: each costs a compilation with replace=False.
    eager = cfconv.sample_positions(keys[0], (2, 3, 5, 4), 40, replace=replace)
    np.testing.assert_array_equal(batched[0], eager)


@pytest.mark.parametrize("replace", [True, False])
def test_eager_calls_do_not_recompile(replace):
    # The kernel phase samples positions once per step; outside `jit`, a repeated call
    # with the same shape and count should reuse the compiled code, not compile again
    # (each compilation costs about half a second on CPU).
    shape, num = (2, 3, 5, 4), 50
    cfconv.sample_positions(jax.random.key(0), shape, num, replace=replace)  # warm up
    with count_compilations() as count:
        for seed in (1, 2):
            cfconv.sample_positions(jax.random.key(seed), shape, num, replace=replace)
    assert count[0] == 0, f"{count[0]} compilations in 2 repeated calls"


# ---------------------------------------------------------------------------------------
# sample_positions: uniformity

# A small grid of 60 cells, so that every cell gets many hits.
SMALL_GRID = (2, 3, 2, 5)
SMALL_SIZE = 60


def test_uniform_with_replacement():
    # 60000 i.i.d. draws: the counts are multinomial and Pearson's statistic is
    # asymptotically chi-square with 59 degrees of freedom (500 expected per cell makes
    # the approximation excellent). Never sampling one cell (an off-by-one in the range)
    # alone contributes 500 against a bound of ~149.
    draws = 60_000
    positions = cfconv.sample_positions(jax.random.key(1234), SMALL_GRID, draws)
    counts = np.bincount(np.asarray(positions), minlength=SMALL_SIZE)
    assert counts.size == SMALL_SIZE
    assert chi_square(counts, draws / SMALL_SIZE) < chi_square_bound(SMALL_SIZE)


@pytest.mark.parametrize("num", [1, 5, 30, 31, 60])
def test_uniform_without_replacement(num):
    # Many independent draws (keys split from a fixed seed), each checked for distinct
    # positions. num = 30 (= S / 2) takes the rejection path, 31 and 60 the permutation.
    keys = jax.random.split(jax.random.key(4321), 4000)
    draw = jax.jit(
        jax.vmap(lambda key: cfconv.sample_positions(key, SMALL_GRID, num, replace=False))
    )
    positions = np.asarray(draw(keys))
    assert positions.shape == (len(keys), num)
    member = np.zeros((len(keys), SMALL_SIZE), bool)
    np.put_along_axis(member, positions, True, axis=1)
    assert np.all(member.sum(axis=1) == num), "repeated positions"

    # Marginals: Pearson's statistic on the aggregated counts. Each draw's indicator
    # vector has covariance p (1 - p) S / (S - 1) (I - 1 / S) with p = num / S, which is
    # (S - num) / (S - 1) <= 1 times the multinomial covariance of `num` i.i.d. draws;
    # so the statistic is at most (in distribution) the multinomial's chi-square(S - 1),
    # and the multinomial bound is conservative.
    counts = member.sum(axis=0)
    assert chi_square(counts, positions.size / SMALL_SIZE) < chi_square_bound(SMALL_SIZE)

    # Pairs: uniform marginals are not enough. Resolving a collision by probing a
    # neighbour keeps every marginal uniform (by symmetry) but makes neighbours co-occur
    # too often. Under the uniform law on num-subsets each pair is in the set with
    # probability num (num - 1) / (S (S - 1)), so the expected number of cyclically
    # adjacent pairs {c, c + 1 mod S} is num (num - 1) / (S - 1). Compare the mean over
    # the draws at 8 standard errors, estimated from the draws themselves.
    adjacent = np.sum(member & np.roll(member, -1, axis=1), axis=1)
    expected = num * (num - 1) / (SMALL_SIZE - 1)
    standard_error = adjacent.std() / np.sqrt(len(keys))
    assert abs(adjacent.mean() - expected) <= 8 * standard_error + 1e-9


# ---------------------------------------------------------------------------------------
# sample_positions: grids too large to enumerate


def test_huge_grid_needs_64_bit_indices():
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="`shape`.*64-bit"):
            cfconv.sample_positions(jax.random.key(0), HUGE_GRID, 10)
        with pytest.raises(ValueError, match="`shape`"):
            cfconv.sample_positions(jax.random.key(0), (2**31,), 10, replace=False)


@pytest.mark.parametrize("replace", [True, False])
def test_huge_grid_with_x64(replace):
    size = math.prod(HUGE_GRID)
    num = 4096
    with jax.enable_x64(True):
        draw = jax.jit(lambda key: cfconv.sample_positions(key, HUGE_GRID, num, replace=replace))
        compiled = draw.lower(jax.random.key(0)).compile()
        # Enumerating the grid would need 275 GB; the sampler must need O(num) memory.
        memory = compiled.memory_analysis()
        if memory is not None:
            assert memory.temp_size_in_bytes < 2**26
        positions = draw(jax.random.key(0))
    assert positions.dtype == jnp.int64
    assert positions.shape == (num,)
    positions = np.asarray(positions)
    assert positions.min() >= 0 and positions.max() < size
    if not replace:
        assert_distinct(positions)
    # The whole range is used (indices truncated to 32 bits would all fall in the first
    # eighth of it): 16 equal bins, chi-square with 15 degrees of freedom.
    counts = np.bincount(positions * 16 // size, minlength=16)
    assert counts.size == 16
    assert chi_square(counts, num / 16) < chi_square_bound(16)


@pytest.mark.parametrize(
    "shape",
    # 2^31 - 1 is prime, hence the flat grid; the other is (2^31 - 2^16) entries.
    [(2**31 - 1,), (2, 2, 2**14, 2**15 - 1)],
)
@pytest.mark.parametrize("replace", [True, False])
def test_int32_grid_just_below_2_31(shape, replace):
    size = math.prod(shape)
    assert size <= 2**31 - 1
    num = 4096
    positions = sample(jax.random.key(7), shape, num, replace=replace)
    assert positions.dtype == jnp.int32
    positions = np.asarray(positions, np.int64)
    assert positions.min() >= 0 and positions.max() < size
    if not replace:
        assert_distinct(positions)
    counts = np.bincount(positions * 16 // size, minlength=16)
    assert chi_square(counts, num / 16) < chi_square_bound(16)


def test_int64_grid_just_above_2_31():
    with jax.enable_x64(True):
        positions = sample(jax.random.key(0), (2**31,), 64, replace=False)
        assert positions.dtype == jnp.int64
        positions = np.asarray(positions)
    assert_distinct(positions)
    assert 0 <= int(positions.min()) and int(positions.max()) < 2**31


# ---------------------------------------------------------------------------------------
# sample_positions: bad input


@checker_modes
@pytest.mark.parametrize(
    "shape, num, replace, names, exception",
    [
        ((3, 4), 13, False, "num", ValueError),  # more than the grid without replacement
        ((3, 4), -1, True, "num", ValueError),
        ((3, 4), 2.5, True, "num", TypeError),
        ((3, 4), True, True, "num", TypeError),
        ((3, 4), 2, "no", "replace", TypeError),
        ((), 2, True, "shape", ValueError),
        ((3, 0), 2, True, ("shape", "shape[1]"), ValueError),
        ((-3, 4), 2, True, ("shape", "shape[0]"), ValueError),
        ((3.0, 4), 2, True, ("shape", "shape[0]"), TypeError),
        (None, 2, True, "shape", TypeError),
    ],
    ids=[
        "num-above-size",
        "num-negative",
        "num-float",
        "num-bool",
        "replace-str",
        "shape-empty",
        "shape-zero",
        "shape-negative",
        "shape-float",
        "shape-none",
    ],
)
def test_sample_positions_bad_input(shape, num, replace, names, exception, checker):
    with raises_naming(names, exception, checker=checker):
        cfconv.sample_positions(jax.random.key(0), shape, num, replace=replace)


@checker_modes
def test_sample_positions_huge_grid_error_names_shape(checker):
    with jax.enable_x64(False), raises_naming("shape", ValueError, checker=checker):
        cfconv.sample_positions(jax.random.key(0), HUGE_GRID, 10)


# ---------------------------------------------------------------------------------------
# unravel_positions


@hypothesis.given(shape=grid_shapes)
def test_unravel_positions_matches_numpy(shape):
    positions = np.arange(math.prod(shape), dtype=np.int32)
    got = cfconv.unravel_positions(jnp.asarray(positions), shape)
    expected = np.unravel_index(positions, shape)
    assert len(got) == 4
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_unravel_positions_huge_grid():
    rng = np.random.default_rng(0)
    positions = rng.integers(0, math.prod(HUGE_GRID), 1000, dtype=np.int64)
    positions[:2] = [0, math.prod(HUGE_GRID) - 1]
    with jax.enable_x64(True):
        got = cfconv.unravel_positions(jnp.asarray(positions), HUGE_GRID)
    for g, e in zip(got, np.unravel_index(positions, HUGE_GRID)):
        np.testing.assert_array_equal(g, e)


# ---------------------------------------------------------------------------------------
# Coordinates

# (h, w): odd and even, non-square, and the degenerate 1 and 2.
IMAGE_SIZES = [(4, 4), (5, 6), (6, 5), (7, 7), (8, 3), (1, 1), (1, 2), (3, 1)]


def grid_indices(h, w):
    """All (row, column) pairs of the (h, w // 2 + 1) rfft2 grid."""
    rows, columns = np.meshgrid(np.arange(h), np.arange(w // 2 + 1), indexing="ij")
    return rows.ravel(), columns.ravel()


def expected_spatial(rows, columns, h, w, kind):
    if kind == "frequency":
        # Physical frequencies (cycles per pixel) times two: +-1 is the Nyquist frequency.
        return 2 * np.fft.fftfreq(h)[rows], 2 * np.fft.rfftfreq(w)[columns]
    # Index coordinates: the stored rows/columns spread linearly over [-1, 1]; a single
    # row or column sits at the centre, 0.
    wf = w // 2 + 1
    fy = -1 + 2 * rows / (h - 1) if h > 1 else np.zeros(rows.shape)
    fx = -1 + 2 * columns / (wf - 1) if wf > 1 else np.zeros(columns.shape)
    return fy, fx


def channel_coordinate(c, size):
    return -1 + 2 * c / (size - 1) if size > 1 else np.zeros(np.shape(c))


@pytest.mark.parametrize("kind", ["frequency", "index"])
@pytest.mark.parametrize("h, w", IMAGE_SIZES)
def test_frequency_coordinates(h, w, kind):
    rows, columns = grid_indices(h, w)
    fy, fx = cfconv.frequency_coordinates(jnp.asarray(rows), jnp.asarray(columns), h, w, kind)
    assert fy.dtype == fx.dtype == jnp.float32
    assert fy.shape == fx.shape == rows.shape
    efy, efx = expected_spatial(rows, columns, h, w, kind)
    np.testing.assert_allclose(fy, efy, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fx, efx, rtol=1e-6, atol=1e-6)
    for f in (fy, fx):
        assert np.all(np.isfinite(f)) and np.all(np.abs(f) <= 1)


def test_frequency_coordinates_keep_low_frequencies_together():
    # The point of kind="frequency": rows 1 and h - 1 (frequencies +-1/h) are neighbours
    # around 0, while in index coordinates they sit at opposite ends.
    h, w = 8, 8
    rows, columns = jnp.asarray([1, h - 1]), jnp.asarray([0, 0])
    fy, _ = cfconv.frequency_coordinates(rows, columns, h, w, "frequency")
    np.testing.assert_allclose(fy, [2 / h, -2 / h], rtol=1e-6)
    fy, _ = cfconv.frequency_coordinates(rows, columns, h, w, "index")
    np.testing.assert_allclose(fy, [-1 + 2 / (h - 1), 1], rtol=1e-6)


@pytest.mark.parametrize("kind", ["frequency", "index"])
@pytest.mark.parametrize(
    "cin, cout, h, w", [(1, 1, 4, 4), (2, 3, 5, 6), (3, 2, 6, 5), (4, 1, 7, 7), (1, 3, 8, 3)]
)
def test_position_coordinates(cin, cout, h, w, kind):
    shape = (cin, cout, h, w // 2 + 1)
    positions = np.arange(math.prod(shape), dtype=np.int32)
    coords = cfconv.position_coordinates(jnp.asarray(positions), shape, width=w, kind=kind)
    assert coords.shape == (positions.size, 4)
    assert coords.dtype == jnp.float32
    i, o, rows, columns = np.unravel_index(positions, shape)
    fy, fx = expected_spatial(rows, columns, h, w, kind)
    expected = np.stack([channel_coordinate(i, cin), channel_coordinate(o, cout), fy, fx], axis=-1)
    np.testing.assert_allclose(coords, expected, rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(np.asarray(coords)) <= 1)


def test_position_coordinates_width_parity():
    # The grid alone cannot tell w = 6 from w = 7 (both have 4 columns); `width` does, and
    # the column frequencies differ: column c is at 2 c / w.
    shape = (1, 1, 1, 4)
    positions = jnp.arange(4, dtype=jnp.int32)
    even = cfconv.position_coordinates(positions, shape, width=6)
    odd = cfconv.position_coordinates(positions, shape, width=7)
    np.testing.assert_allclose(even[:, 3], 2 * np.arange(4) / 6, rtol=1e-6)
    np.testing.assert_allclose(odd[:, 3], 2 * np.arange(4) / 7, rtol=1e-6)


@checker_modes
@pytest.mark.parametrize(
    "shape, width, kind, name, exception",
    [
        ((2, 3, 5, 4), 5, "frequency", "width", ValueError),  # 5 // 2 + 1 == 3 != 4
        ((2, 3, 5, 4), 8, "frequency", "width", ValueError),  # 8 // 2 + 1 == 5 != 4
        ((2, 3, 5), 6, "frequency", "shape", ValueError),
        ((2, 3, 5, 4), 6, "fourier", "kind", ValueError),
    ],
    ids=["width-small", "width-large", "shape-rank", "kind"],
)
def test_position_coordinates_bad_input(shape, width, kind, name, exception, checker):
    positions = jnp.arange(3, dtype=jnp.int32)
    with raises_naming(name, exception, checker=checker):
        cfconv.position_coordinates(positions, shape, width=width, kind=kind)


@checker_modes
def test_frequency_coordinates_bad_kind(checker):
    index = jnp.arange(3, dtype=jnp.int32)
    with raises_naming("kind", ValueError, checker=checker):
        cfconv.frequency_coordinates(index, index, 4, 4, "fourier")
