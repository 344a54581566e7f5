"""Tests for `cfconv.KernelState`, `cfconv.init_kernel_state` and `cfconv.ema_update`.

References are computed in numpy complex128 from the contract
`new = old + rate * (values - old)` at `positions`, everything else unchanged. Positions
for the exact tests are drawn with numpy, not with `cfconv.sample_positions`; only the
convergence test uses the library's sampler, as training does. Random properties (the
initial distribution, convergence under random sparse updates) are checked against bounds
that are many standard deviations wide, so they cannot realistically flake.
"""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cfconv
from helpers import assert_tree_allclose, checker_modes, raises_naming
from strategies import grid_shapes, layer_sizes, rates, sample_counts, seeds


def random_kernel(rng, shape):
    return (rng.uniform(-1, 1, shape) + 1j * rng.uniform(-1, 1, shape)).astype(np.complex64)


def random_values(rng, num):
    return (rng.standard_normal(num) + 1j * rng.standard_normal(num)).astype(np.complex64)


def ema_reference(kernel, positions, values, rate):
    """The contract in complex128; a repeated position must carry the same value."""
    old = np.asarray(kernel, np.complex128).ravel()
    new = old.copy()
    for p, v in zip(np.asarray(positions), np.asarray(values, np.complex128)):
        new[p] = old[p] + rate * (v - old[p])
    return new.reshape(np.shape(kernel))


def updated_mask(shape, positions):
    mask = np.zeros(int(np.prod(shape)), bool)
    mask[np.asarray(positions)] = True
    return mask.reshape(shape)


# ---------------------------------------------------------------------------------------
# init_kernel_state


@hypothesis.given(shape=layer_sizes, seed=seeds, scale=st.sampled_from([0.5, 1.0, 3.0]))
def test_init_kernel_state_shape_dtype_range(shape, seed, scale):
    cin, cout, h, w = shape
    state = cfconv.init_kernel_state(cin, cout, h, w, key=jax.random.key(seed), scale=scale)
    assert isinstance(state, cfconv.KernelState)
    assert state.kernel.shape == (cin, cout, h, w // 2 + 1)
    assert state.kernel.dtype == jnp.complex64
    kernel = np.asarray(state.kernel)
    assert np.all(np.abs(kernel.real) <= scale)
    assert np.all(np.abs(kernel.imag) <= scale)


@hypothesis.given(seed=seeds, scale=st.sampled_from([0.5, 1.0, 3.0]))
def test_init_kernel_state_is_uniform(seed, scale):
    # N = 17408 entries, real and imaginary parts each uniform on [-s, s]: mean 0 with
    # standard error s / sqrt(3 N); variance s^2 / 3, and the sample mean of X^2 has
    # standard error s^2 sqrt(4 / (45 N)) (Var X^2 = s^4 / 5 - s^4 / 9); the correlation of
    # independent real and imaginary parts has standard error 1 / sqrt(N). All are checked
    # at 7 standard errors (false alarm ~1e-11 each). A normal, a [0, s] or a [-s/2, s/2]
    # initialisation, or imaginary parts drawn with the real parts' key, fail.
    state = cfconv.init_kernel_state(4, 8, 32, 32, key=jax.random.key(seed), scale=scale)
    kernel = np.asarray(state.kernel, np.complex128)
    n = kernel.size
    for part in (kernel.real, kernel.imag):
        part = part.ravel()
        assert abs(part.mean()) < 7 * scale / np.sqrt(3 * n)
        assert abs(np.mean(part**2) - scale**2 / 3) < 7 * scale**2 * np.sqrt(4 / (45 * n))
        # The whole range is used: P(max < 0.99 s) = 0.995^N ~ 1e-38.
        assert part.max() > 0.99 * scale and part.min() < -0.99 * scale
    assert abs(np.corrcoef(kernel.real.ravel(), kernel.imag.ravel())[0, 1]) < 7 / np.sqrt(n)


def test_init_kernel_state_deterministic_per_key():
    key = jax.random.key(3)
    first = cfconv.init_kernel_state(2, 3, 5, 6, key=key)
    again = cfconv.init_kernel_state(2, 3, 5, 6, key=key)
    other = cfconv.init_kernel_state(2, 3, 5, 6, key=jax.random.key(4))
    np.testing.assert_array_equal(first.kernel, again.kernel)
    assert not np.any(np.asarray(first.kernel) == np.asarray(other.kernel))


@checker_modes
@pytest.mark.parametrize(
    "kwargs, name, exception",
    [
        (dict(scale=0.0), "scale", ValueError),
        (dict(scale=-1.0), "scale", ValueError),
        (dict(dtype=jnp.float32), "dtype", TypeError),
    ],
    ids=["scale-zero", "scale-negative", "dtype-real"],
)
def test_init_kernel_state_bad_input(kwargs, name, exception, checker):
    with raises_naming(name, exception, checker=checker):
        cfconv.init_kernel_state(2, 3, 5, 6, key=jax.random.key(0), **kwargs)


@checker_modes
def test_init_kernel_state_bad_channels(checker):
    with raises_naming("in_channels", ValueError, checker=checker):
        cfconv.init_kernel_state(0, 3, 5, 6, key=jax.random.key(0))


# ---------------------------------------------------------------------------------------
# KernelState


@checker_modes
@pytest.mark.parametrize(
    "kernel, exception",
    [
        (jnp.ones((1, 2, 3, 2), jnp.float32), TypeError),
        (jnp.ones((2, 3, 2), jnp.complex64), ValueError),
        (jnp.ones((1, 1, 2, 3, 2), jnp.complex64), ValueError),
    ],
    ids=["real", "rank-3", "rank-5"],
)
def test_kernel_state_bad_kernel(kernel, exception, checker):
    with raises_naming("kernel", exception, checker=checker):
        cfconv.KernelState(kernel)


# ---------------------------------------------------------------------------------------
# ema_update: values


@hypothesis.given(shape=grid_shapes, num=sample_counts, rate=rates, seed=seeds)
def test_ema_update_matches_reference(shape, num, rate, seed):
    rng = np.random.default_rng(seed)
    kernel = random_kernel(rng, shape)
    positions = rng.choice(kernel.size, num, replace=False).astype(np.int32)
    values = random_values(rng, num)
    new = cfconv.ema_update(
        cfconv.KernelState(jnp.asarray(kernel)),
        jnp.asarray(positions),
        jnp.asarray(values),
        rate=rate,
    )
    assert isinstance(new, cfconv.KernelState)
    assert new.kernel.shape == shape and new.kernel.dtype == jnp.complex64
    got = np.asarray(new.kernel)
    assert_tree_allclose(got, ema_reference(kernel, positions, values, rate))
    # Every other entry is untouched, bit for bit.
    untouched = ~updated_mask(shape, positions)
    np.testing.assert_array_equal(got[untouched], kernel[untouched])


@hypothesis.given(shape=grid_shapes, seed=seeds)
def test_rate_one_overwrites(shape, seed):
    rng = np.random.default_rng(seed)
    kernel = random_kernel(rng, shape)
    positions = rng.choice(kernel.size, 6, replace=False).astype(np.int32)
    values = random_values(rng, 6)
    new = cfconv.ema_update(
        cfconv.KernelState(jnp.asarray(kernel)), jnp.asarray(positions), jnp.asarray(values), rate=1
    )
    got = np.asarray(new.kernel).ravel()
    # Up to float32 rounding of old + (v - old).
    np.testing.assert_allclose(got[positions], values, rtol=1e-6, atol=1e-6)


@hypothesis.given(shape=grid_shapes, rate=rates, seed=seeds)
def test_duplicate_positions_updated_once(shape, rate, seed):
    # Sampling with replacement repeats positions; each entry must move by one EMA step,
    # not one per occurrence (that would be old + (1 - (1 - rate)^k) (v - old)).
    rng = np.random.default_rng(seed)
    kernel = random_kernel(rng, shape)
    distinct = rng.choice(kernel.size, 3, replace=False)
    positions = distinct[[0, 1, 0, 2, 0, 1]].astype(np.int32)
    values = random_values(rng, 3)[[0, 1, 0, 2, 0, 1]]
    new = cfconv.ema_update(
        cfconv.KernelState(jnp.asarray(kernel)),
        jnp.asarray(positions),
        jnp.asarray(values),
        rate=rate,
    )
    assert_tree_allclose(new.kernel, ema_reference(kernel, positions, values, rate))


@hypothesis.given(rate=rates, seed=seeds)
def test_duplicate_positions_with_different_values_use_one(rate, seed):
    # Documented: a repeated position is updated once, from the value of one occurrence.
    rng = np.random.default_rng(seed)
    kernel = random_kernel(rng, (2, 3, 5, 4))
    positions = np.array([7, 7, 7, 11], np.int32)
    values = random_values(rng, 4)
    new = cfconv.ema_update(
        cfconv.KernelState(jnp.asarray(kernel)),
        jnp.asarray(positions),
        jnp.asarray(values),
        rate=rate,
    )
    got = np.asarray(new.kernel).ravel()[7]
    old = complex(kernel.ravel()[7])
    candidates = old + rate * (values[:3].astype(np.complex128) - old)
    assert np.min(np.abs(candidates - got)) < 1e-5


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_full_updates_converge_geometrically(rate):
    # Updating every entry toward a fixed target multiplies the error by (1 - rate) each
    # time: after n updates it is exactly (1 - rate)^n times the initial error (as complex
    # numbers, so direction is kept too).
    rng = np.random.default_rng(0)
    shape = (2, 3, 5, 4)
    kernel = random_kernel(rng, shape)
    target = random_kernel(rng, shape)
    positions = jnp.arange(kernel.size, dtype=jnp.int32)
    values = jnp.asarray(target.ravel())
    update = jax.jit(lambda s, p, v: cfconv.ema_update(s, p, v, rate=rate))
    state = cfconv.KernelState(jnp.asarray(kernel))
    error0 = kernel.astype(np.complex128) - target
    for n in range(1, 11):
        state = update(state, positions, values)
        if n in (1, 2, 5, 10):
            error = np.asarray(state.kernel, np.complex128) - target
            np.testing.assert_allclose(error, (1 - rate) ** n * error0, rtol=1e-4, atol=1e-6)


@hypothesis.given(seed=seeds)
@hypothesis.settings(max_examples=3)
def test_sparse_random_updates_converge_in_expectation(seed):
    # Derivation. Let S be the number of entries, num the i.i.d. positions drawn per step
    # (with replacement), r the rate, e = K - T an entry's error to the dense target T.
    # In one step an entry is hit (drawn at least once) with probability
    #     p = 1 - (1 - 1/S)^num,
    # and a hit updates it once, e <- (1 - r) e (duplicates count once). Steps use
    # independent keys, so after n steps the number of hits is k ~ Binomial(n, p) and
    # e_n = (1 - r)^k e_0. By the binomial theorem,
    #     E|e_n|^2 = |e_0|^2 sum_k C(n, k) p^k (1 - p)^(n - k) (1 - r)^(2k)
    #              = |e_0|^2 (1 - p (1 - (1 - r)^2))^n =: |e_0|^2 q^n,
    # and by linearity of expectation (entries of one step are dependent, which does not
    # matter for the mean) E[mse_n] = q^n mse_0.
    # Spread: per entry Var[(1-r)^(2k)] / E^2 = (q2 / q^2)^n - 1 with
    # q2 = 1 - p (1 - (1 - r)^4); here that is about 4, so the mean over S = 4096 entries
    # has a relative standard deviation of about 3% (simulation agrees). The check
    # mse_n / E[mse_n] in [1/2, 2] is thus more than 15 standard deviations wide, yet
    # catches an EMA that moves too slowly or too fast (e.g. weighing the old value by
    # `rate`, which here means 0.8 instead of 0.2).
    shape = (4, 4, 16, 16)
    size, num, rate, steps = 4096, 1024, 0.2, 60
    p = 1 - (1 - 1 / size) ** num
    q = 1 - p * (1 - (1 - rate) ** 2)
    assert q**steps < 0.01  # the test asks for a 100-fold reduction of the error

    rng = np.random.default_rng(seed)
    target = random_kernel(rng, shape)
    state = cfconv.KernelState(jnp.asarray(random_kernel(rng, shape)))
    mse0 = np.mean(np.abs(np.asarray(state.kernel, np.complex128) - target) ** 2)

    @jax.jit
    def train(state, key):
        flat_target = jnp.asarray(target).ravel()

        def step(t, state):
            positions = cfconv.sample_positions(jax.random.fold_in(key, t), shape, num)
            return cfconv.ema_update(state, positions, flat_target[positions], rate=rate)

        return jax.lax.fori_loop(0, steps, step, state)

    state = train(state, jax.random.key(seed))
    mse = np.mean(np.abs(np.asarray(state.kernel, np.complex128) - target) ** 2)
    expected = q**steps * mse0
    assert expected / 2 < mse < 2 * expected + 1e-10


# ---------------------------------------------------------------------------------------
# ema_update: gradients

# Gradients are taken with respect to real and imaginary parts as separate real arrays,
# so that the expected values do not depend on JAX's convention for complex gradients;
# `test_grad_complex_values` then checks that convention explicitly. The functional is
# L(K) = sum(a * Re K + b * Im K) with random real a, b.


def linear_functional(a, b):
    def functional(kernel):
        return jnp.sum(a * jnp.real(kernel) + b * jnp.imag(kernel))

    return functional


@hypothesis.given(shape=grid_shapes, num=sample_counts, rate=rates, seed=seeds)
def test_grad_wrt_values_is_rate_times_coefficients(shape, num, rate, seed):
    rng = np.random.default_rng(seed)
    kernel = jnp.asarray(random_kernel(rng, shape))
    positions = rng.choice(int(np.prod(shape)), num, replace=False).astype(np.int32)
    values = random_values(rng, num)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    functional = linear_functional(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))

    def loss(vr, vi):
        new = cfconv.ema_update(
            cfconv.KernelState(kernel), jnp.asarray(positions), jax.lax.complex(vr, vi), rate=rate
        )
        return functional(new.kernel)

    gr, gi = jax.grad(loss, argnums=(0, 1))(jnp.asarray(values.real), jnp.asarray(values.imag))
    assert_tree_allclose((gr, gi), (rate * a.ravel()[positions], rate * b.ravel()[positions]))


@hypothesis.given(shape=grid_shapes, num=sample_counts, rate=rates, seed=seeds)
def test_grad_wrt_state_is_one_minus_rate_at_positions(shape, num, rate, seed):
    rng = np.random.default_rng(seed)
    kernel = random_kernel(rng, shape)
    positions = rng.choice(kernel.size, num, replace=False).astype(np.int32)
    values = jnp.asarray(random_values(rng, num))
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    functional = linear_functional(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))

    def loss(kr, ki):
        state = cfconv.KernelState(jax.lax.complex(kr, ki))
        return functional(
            cfconv.ema_update(state, jnp.asarray(positions), values, rate=rate).kernel
        )

    gr, gi = jax.grad(loss, argnums=(0, 1))(jnp.asarray(kernel.real), jnp.asarray(kernel.imag))
    factor = np.where(updated_mask(shape, positions), 1 - rate, 1.0)
    assert_tree_allclose((gr, gi), (factor * a, factor * b))


def test_grad_complex_values():
    # JAX's gradient of a real function of a complex array is dL/dRe - i dL/dIm.
    rng = np.random.default_rng(0)
    shape, rate = (2, 3, 5, 4), 0.3
    kernel = jnp.asarray(random_kernel(rng, shape))
    positions = np.array([3, 17, 42, 99], np.int32)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    functional = linear_functional(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))

    def loss(values):
        state = cfconv.KernelState(kernel)
        return functional(
            cfconv.ema_update(state, jnp.asarray(positions), values, rate=rate).kernel
        )

    grad = jax.grad(loss)(jnp.asarray(random_values(rng, 4)))
    expected = rate * (a.ravel()[positions] - 1j * b.ravel()[positions])
    assert_tree_allclose(grad, expected)


def test_grad_with_duplicates_reaches_the_used_occurrence():
    # Documented: only the occurrence whose value was used receives a gradient; the state
    # entry still gets (1 - rate), not (1 - rate)^k or k (1 - rate).
    rng = np.random.default_rng(1)
    shape, rate = (1, 1, 2, 3), 0.5
    kernel = random_kernel(rng, shape)
    positions = jnp.asarray([1, 4, 1, 1, 5], jnp.int32)
    values = random_values(rng, 5)
    a = rng.standard_normal(shape)
    functional = linear_functional(jnp.asarray(a, jnp.float32), jnp.zeros(shape, jnp.float32))

    def loss(kr, vr):
        state = cfconv.KernelState(jax.lax.complex(kr, jnp.asarray(kernel.imag)))
        new_values = jax.lax.complex(vr, jnp.asarray(values.imag))
        return functional(cfconv.ema_update(state, positions, new_values, rate=rate).kernel)

    args = (jnp.asarray(kernel.real), jnp.asarray(values.real))
    g_kernel, g_values = jax.grad(loss, argnums=(0, 1))(*args)
    new = cfconv.ema_update(
        cfconv.KernelState(jnp.asarray(kernel)), positions, jnp.asarray(values), rate=rate
    )
    old = complex(kernel.ravel()[1])
    candidates = old + rate * (values[[0, 2, 3]].astype(np.complex128) - old)
    used = [0, 2, 3][int(np.argmin(np.abs(candidates - complex(new.kernel.ravel()[1]))))]
    expected_values = np.zeros(5)
    expected_values[[used, 1, 4]] = rate * a.ravel()[[1, 4, 5]]
    assert_tree_allclose(g_values, expected_values)
    factor = np.where(updated_mask(shape, [1, 4, 5]), 1 - rate, 1.0)
    assert_tree_allclose(g_kernel, factor * a)


# ---------------------------------------------------------------------------------------
# ema_update: transformations


def test_jit_does_not_retrace():
    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def update(state, positions, values, rate):
        return cfconv.ema_update(state, positions, values, rate=rate)

    shape = (2, 3, 5, 4)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        kernel = random_kernel(rng, shape)
        positions = rng.choice(kernel.size, 6, replace=False).astype(np.int32)
        values = random_values(rng, 6)
        rate = [0.1, 0.5, 1.0][seed]
        new = update(
            cfconv.KernelState(jnp.asarray(kernel)),
            jnp.asarray(positions),
            jnp.asarray(values),
            jnp.float32(rate),
        )
        assert_tree_allclose(new.kernel, ema_reference(kernel, positions, values, rate))


def test_jit_with_constant_positions():
    # Positions fixed outside the jitted function (closed over, so concrete, not traced)
    # are a natural way to write a fixed update; the eager range check must not turn
    # them into a tracer and call int() on it.
    rng = np.random.default_rng(0)
    kernel = random_kernel(rng, (2, 3, 5, 4))
    positions = jnp.asarray([3, 17, 42], jnp.int32)
    values = random_values(rng, 3)
    update = jax.jit(lambda state: cfconv.ema_update(state, positions, jnp.asarray(values)))
    new = update(cfconv.KernelState(jnp.asarray(kernel)))
    assert_tree_allclose(new.kernel, ema_reference(kernel, positions, values, 0.1))


def test_grad_under_jit_does_not_retrace():
    shape, rate = (2, 3, 5, 4), 0.1
    a = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def grad(kernel, positions, values):
        def loss(values):
            state = cfconv.KernelState(kernel)
            return jnp.sum(
                a * jnp.real(cfconv.ema_update(state, positions, values, rate=rate).kernel)
            )

        return jax.grad(loss)(values)

    for seed in range(3):
        rng = np.random.default_rng(seed)
        kernel = random_kernel(rng, shape)
        positions = rng.choice(kernel.size, 6, replace=False).astype(np.int32)
        g = grad(jnp.asarray(kernel), jnp.asarray(positions), jnp.asarray(random_values(rng, 6)))
        assert_tree_allclose(g, rate * np.asarray(a).ravel()[positions])


def test_vmap_equals_loop():
    # A batch of independent states (e.g. an ensemble), each with its own positions.
    rng = np.random.default_rng(0)
    shape, batch, num, rate = (2, 3, 5, 4), 4, 6, 0.3
    kernels = np.stack([random_kernel(rng, shape) for _ in range(batch)])
    positions = np.stack([rng.choice(120, num, replace=False) for _ in range(batch)]).astype(
        np.int32
    )
    values = np.stack([random_values(rng, num) for _ in range(batch)])
    # A KernelState holds one (rank-4) kernel, so the batched states are built per
    # example inside the vmap.
    new = jax.vmap(lambda k, p, v: cfconv.ema_update(cfconv.KernelState(k), p, v, rate=rate))(
        jnp.asarray(kernels), jnp.asarray(positions), jnp.asarray(values)
    )
    expected = np.stack(
        [ema_reference(k, p, v, rate) for k, p, v in zip(kernels, positions, values)]
    )
    assert_tree_allclose(new.kernel, expected)


# ---------------------------------------------------------------------------------------
# ema_update: bad input

STATE = cfconv.KernelState(jnp.ones((2, 3, 5, 4), jnp.complex64))
POSITIONS = jnp.asarray([0, 5, 119], jnp.int32)
VALUES = jnp.ones((3,), jnp.complex64)


@checker_modes
@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5, float("nan")])
def test_rate_outside_unit_interval(rate, checker):
    with raises_naming("rate", ValueError, checker=checker):
        cfconv.ema_update(STATE, POSITIONS, VALUES, rate=rate)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_traced_rate_outside_unit_interval(rate):
    # Under jit the rate is only known at run time: `eqx.error_if` raises then, an
    # `EquinoxRuntimeError` under `eqx.filter_jit` and a `JaxRuntimeError` carrying the
    # same message under `jax.jit`.
    update = jax.jit(lambda s, p, v, r: cfconv.ema_update(s, p, v, rate=r))
    with pytest.raises(jax.errors.JaxRuntimeError, match="`rate` must be in"):
        jax.block_until_ready(update(STATE, POSITIONS, VALUES, rate))
    filter_update = eqx.filter_jit(lambda s, p, v, r: cfconv.ema_update(s, p, v, rate=r))
    with pytest.raises(eqx.EquinoxRuntimeError, match="`rate` must be in"):
        jax.block_until_ready(filter_update(STATE, POSITIONS, VALUES, jnp.float32(rate)))
    # ...and a valid traced rate works.
    assert_tree_allclose(
        update(STATE, POSITIONS, VALUES, 0.25).kernel,
        ema_reference(np.asarray(STATE.kernel), POSITIONS, VALUES, 0.25),
    )


@checker_modes
@pytest.mark.parametrize(
    "positions, values, names, exception",
    [
        (POSITIONS, VALUES[:2], ("values", "positions"), ValueError),  # length mismatch
        (POSITIONS.astype(jnp.float32), VALUES, "positions", TypeError),  # not integers
        (POSITIONS[None], VALUES[None], ("positions", "values"), ValueError),  # rank 2
        (jnp.asarray([0, 5, 120], jnp.int32), VALUES, "positions", ValueError),  # == size
        (jnp.asarray([0, -1, 7], jnp.int32), VALUES, "positions", ValueError),  # negative
        (POSITIONS, jnp.ones((3,), jnp.float32), "values", TypeError),  # real values
    ],
    ids=["length", "float-positions", "rank-2", "too-large", "negative", "real-values"],
)
def test_ema_update_bad_positions_or_values(positions, values, names, exception, checker):
    with raises_naming(names, exception, checker=checker):
        cfconv.ema_update(STATE, positions, values)


@checker_modes
def test_ema_update_bad_state(checker):
    with raises_naming("state", TypeError, checker=checker):
        cfconv.ema_update(STATE.kernel, POSITIONS, VALUES)
