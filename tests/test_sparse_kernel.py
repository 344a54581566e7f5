"""`cfconv.SparseKernel` and `cfconv.sparse_update`: a sparse step's kernel whose
convolution computes the kernel gradient at the sampled positions only.

Two kinds of reference, neither calling the code under test:

- numpy in float64/complex128: the EMA contract, and the convolution
  `irfft2(sum_i rfft2(x_i) K_io)`. The loss is linear in the fresh values, so the
  gradient is checked exactly through directional differences of the numpy loss.
- the path it replaces: the plain array `ema_update(stop_gradient(state), positions,
  values)` fed to `spectral_conv` (other code: `ema_update`'s scatter and JAX's autodiff
  of the einsum), for outputs and gradients with respect to the input, the generator
  and the bias, with repeated positions, under `vmap` and `jit`.
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
from strategies import parameterizations, rates, seeds


CIN, COUT, H, W = 2, 3, 5, 6
GRID = (CIN, COUT, H, W // 2 + 1)
SIZE = int(np.prod(GRID))
BATCH = 4


def _inputs(seed, num, *, repeat=True):
    """State, positions (with repeats: `num` draws from the first `SIZE // 2` entries),
    values, a batch of images and a cotangent, all from numpy."""
    rng = np.random.default_rng(seed)
    state = (rng.uniform(-1, 1, GRID) + 1j * rng.uniform(-1, 1, GRID)).astype(np.complex64)
    if repeat:
        positions = rng.integers(0, SIZE // 2, num)
    else:
        positions = rng.choice(SIZE, num, replace=False)
    values = (rng.standard_normal(num) + 1j * rng.standard_normal(num)).astype(np.complex64)
    x = rng.standard_normal((BATCH, CIN, H, W)).astype(np.float32)
    c = rng.standard_normal((BATCH, COUT, H, W)).astype(np.float32)
    return state, positions.astype(np.int32), values, x, c


def _numpy_loss(kernel, x, c):
    """sum(c * y) for y = irfft2(sum_i rfft2(x_i) K_io), in float64."""
    x_hat = np.fft.rfft2(np.asarray(x, np.float64))
    y = np.fft.irfft2(np.einsum("bihw,iohw->bohw", x_hat, kernel), s=(H, W))
    return float(np.sum(np.asarray(c, np.float64) * y))


def _conv_loss(kernel, x, c):
    return jnp.sum(jax.vmap(cfconv.spectral_conv, (0, None))(x, kernel) * c)


@hypothesis.given(seed=seeds, rate=rates)
def test_sparse_update_is_the_ema_with_gradient_at_the_kept_occurrences(seed, rate):
    state, positions, values, x, c = _inputs(seed, 40)
    step = jax.jit(cfconv.sparse_update)(
        cfconv.KernelState(jnp.asarray(state)), jnp.asarray(positions), jnp.asarray(values),
        rate=rate,
    )  # fmt: skip
    weights = np.asarray(step.weights)
    # Each sampled entry has exactly one kept occurrence, with weight `rate`.
    kept = weights != 0
    np.testing.assert_allclose(weights[kept], rate, rtol=1e-7)
    assert sorted(positions[kept]) == sorted(set(positions.tolist()))
    # The kernel: the EMA from the kept occurrences' values, everything else unchanged.
    expected = np.asarray(state, np.complex128).ravel()
    for p, v in zip(positions[kept], values[kept].astype(np.complex128)):
        expected[p] += rate * (v - expected[p])
    assert_tree_allclose(step.kernel, expected.reshape(GRID).astype(np.complex64))
    np.testing.assert_array_equal(np.asarray(step.positions), positions)
    np.testing.assert_array_equal(np.asarray(step.values), values)

    # The loss is linear in the values, so its gradient g satisfies, for every direction
    # d, L(v + d) - L(v) = Re(sum g d) exactly; only the kept occurrences move the kernel.
    grad = jax.jit(jax.grad(lambda v: _conv_loss(
        cfconv.sparse_update(cfconv.KernelState(jnp.asarray(state)), jnp.asarray(positions), v,
                             rate=rate), x, c)))(jnp.asarray(values))  # fmt: skip
    assert np.all(np.asarray(grad)[~kept] == 0)
    base = _numpy_loss(expected.reshape(GRID), x, c)
    rng = np.random.default_rng(seed + 1)
    for _ in range(2):
        d = rng.standard_normal(len(values)) + 1j * rng.standard_normal(len(values))
        moved = expected.copy()
        for p, dn in zip(positions[kept], d[kept]):
            moved[p] += rate * dn
        change = _numpy_loss(moved.reshape(GRID), x, c) - base
        np.testing.assert_allclose(np.real(np.sum(np.asarray(grad) * d)), change,
                                   rtol=1e-4, atol=1e-4)  # fmt: skip


# The convolution keeps `x_hat` at the sampled entries for the backward pass when there
# are fewer of them (24) than entries of one example's `x_hat` (CIN * H * (W // 2 + 1) =
# 40), and the whole `x_hat` otherwise (60).
@pytest.mark.parametrize("num", [24, 60], ids=["gathered-x-hat", "whole-x-hat"])
@hypothesis.given(seed=seeds, rate=rates, repeat=st.booleans())
def test_convolution_equals_the_plain_ema_kernel(num, seed, rate, repeat):
    """Output and gradients (input, values, per example under vmap, and the batch sum)
    equal those of the plain array `ema_update(stop_gradient(state), ...)`."""
    assert (num < CIN * H * (W // 2 + 1)) == (num == 24)
    state, positions, values, x, c = _inputs(seed, num, repeat=repeat)
    state = cfconv.KernelState(jnp.asarray(state))
    # Repeated positions carry equal values, as a generator's do; the occurrence that
    # gets the gradient may then differ between the two paths, the sum over it not.
    first = {p: n for n, p in reversed(list(enumerate(positions.tolist())))}
    values = jnp.asarray(values[[first[p] for p in positions.tolist()]])
    positions = jnp.asarray(positions)
    x, c = jnp.asarray(x), jnp.asarray(c)

    def sparse(x, v):
        return cfconv.sparse_update(state, positions, v, rate=rate)

    def plain(x, v):
        return cfconv.ema_update(jax.lax.stop_gradient(state), positions, v, rate=rate).kernel

    def per_position(g):  # the values' gradient summed over each position's occurrences
        return jnp.zeros(SIZE, g.dtype).at[positions].add(g)

    results = []
    for make in (sparse, plain):

        def loss(x, v, make=make):
            return jnp.sum(jnp.sin(jax.vmap(cfconv.spectral_conv, (0, None))(x, make(x, v))) * c)

        def one(xi, ci, v, make=make):
            return jnp.sum(jnp.sin(cfconv.spectral_conv(xi, make(xi, v))) * ci)

        value, (gx, gv) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, values)
        # Per-example gradients: the custom VJP under vmap without the batch sum.
        per_example = jax.jit(jax.vmap(jax.grad(one, argnums=2), in_axes=(0, 0, None)))(
            x, c, values
        )
        results.append((value, gx, per_position(gv), jax.vmap(per_position)(per_example)))
    assert_tree_allclose(results[0], results[1], rtol=1e-4, atol=1e-4)
    # The batch sum of the per-example gradients is the batch's gradient.
    assert_tree_allclose(jnp.sum(results[0][3], axis=0), results[0][2], rtol=1e-4, atol=1e-4)


@eqx.filter_jit
def _both_paths(layer, state, x, c, key, sparse):
    """(loss, kernel) and gradients for the layer's sparse step, and for the same step
    with the kernel as the plain array `ema_update(stop_gradient(state), ...)`."""

    def new(layer, x):
        y, new_state = layer(x, state, strategy=sparse, key=key)
        return jnp.sum(jnp.tanh(y) * c), new_state.kernel

    def old(layer, x):
        positions = sparse.sample(layer.generator, (H, W), key=key)
        values = sparse.evaluate(layer.generator, positions, (H, W))
        frozen = jax.lax.stop_gradient(state)
        kernel = cfconv.ema_update(frozen, positions, values, rate=sparse.rate).kernel
        y = jax.vmap(layer.apply, in_axes=(0, None))(x, kernel)
        return jnp.sum(jnp.tanh(y) * c), kernel

    return [eqx.filter_value_and_grad(f, has_aux=True)(layer, x) for f in (new, old)]


@hypothesis.given(parameterization=parameterizations, seed=seeds)
def test_layer_step_equals_the_plain_ema_path(parameterization, seed):
    """`CFConv2d` with `Sparse` against the same step with the kernel as a plain array:
    the output and the gradients with respect to the input, the generator and the bias.
    Half the grid's size drawn with replacement: many positions repeat."""
    k_layer, k_bias, k_state, k_x, k_c, k_key = jax.random.split(jax.random.key(seed), 6)
    layer = cfconv.CFConv2d(CIN, COUT, parameterization, (8,), key=k_layer)
    layer = eqx.tree_at(lambda m: m.bias, layer, jax.random.normal(k_bias, (COUT,)))
    state = layer.init_state((H, W), key=k_state)
    x = jax.random.normal(k_x, (BATCH, CIN, H, W))
    c = jax.random.normal(k_c, (BATCH, COUT, H, W))
    sparse = cfconv.Sparse(num=SIZE // 2, rate=0.3)
    results = _both_paths(layer, state, x, c, k_key, sparse)
    (loss_new, kernel_new), grads_new = results[0]
    (loss_old, kernel_old), grads_old = results[1]
    assert_tree_allclose((loss_new, kernel_new), (loss_old, kernel_old), rtol=1e-5, atol=1e-5)
    assert_tree_allclose(grads_new, grads_old, rtol=1e-4, atol=1e-5)
    assert np.any(np.asarray(grads_new.generator.real.layers[0].weight) != 0)
    assert np.any(np.asarray(grads_new.bias) != 0)


def test_kernel_field_gradient_and_fourier_mix():
    """A perturbed `kernel` field gets the full einsum gradient (symbolic zeros skip it in
    training only); `fourier_mix` and `dense()` agree with the plain array."""
    state, positions, values, x, c = _inputs(3, 16)
    step = cfconv.sparse_update(
        cfconv.KernelState(jnp.asarray(state)), jnp.asarray(positions), jnp.asarray(values)
    )
    x, c = jnp.asarray(x), jnp.asarray(c)

    def loss(kernel, values, x, as_module):
        k = eqx.tree_at(lambda s: (s.kernel, s.values), step, (kernel, values))
        return _conv_loss(k if as_module else k.dense(), x, c)

    args = (step.kernel, step.values, x)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
    assert_tree_allclose(grad(*args, True), grad(*args, False), rtol=1e-4, atol=1e-4)
    # Only the input perturbed (inference-like use of a step kernel).
    gx = jax.jit(jax.grad(lambda x: _conv_loss(step, x, c)))(x)
    assert_tree_allclose(gx, grad(*args, False)[2], rtol=1e-4, atol=1e-4)
    x_hat = jnp.fft.rfft2(x[0])
    assert_tree_allclose(cfconv.fourier_mix(x_hat, step), cfconv.fourier_mix(x_hat, step.kernel))
    assert_tree_allclose(step.dense(), step.kernel)
    assert step.shape == GRID and step.dtype == jnp.complex64


def test_step_compiles_once():
    state, positions, values, x, c = _inputs(0, 16)
    state = cfconv.KernelState(jnp.asarray(state))

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def grads(positions, values, x, rate):
        def loss(values, x):
            return _conv_loss(cfconv.sparse_update(state, positions, values, rate=rate), x, c)

        return jax.grad(loss, argnums=(0, 1))(values, x)

    for seed in range(3):
        _, positions, values, x, _ = _inputs(seed, 16)
        grads(jnp.asarray(positions), jnp.asarray(values), jnp.asarray(x), jnp.float32(0.1))


_STEP = cfconv.sparse_update(
    cfconv.KernelState(jnp.ones(GRID, jnp.complex64)),
    jnp.arange(4, dtype=jnp.int32),
    jnp.ones(4, jnp.complex64),
)


@checker_modes
@pytest.mark.parametrize(
    "call, names, exception",
    [
        (lambda: cfconv.SparseKernel(_STEP.kernel, _STEP.positions, _STEP.values[:3],
                                     _STEP.weights), ("positions", "values"), ValueError),
        (lambda: cfconv.SparseKernel(_STEP.kernel[0], _STEP.positions, _STEP.values,
                                     _STEP.weights), "kernel", ValueError),
        (lambda: cfconv.SparseKernel(_STEP.kernel, _STEP.positions.astype(jnp.float32),
                                     _STEP.values, _STEP.weights), "positions", TypeError),
        (lambda: cfconv.spectral_conv(jnp.ones((1, H, W)), _STEP), ("x", "kernel"), ValueError),
        (lambda: cfconv.sparse_update(cfconv.KernelState(_STEP.kernel), _STEP.positions,
                                      _STEP.values, rate=0.0), "rate", ValueError),
        (lambda: cfconv.sparse_update(cfconv.KernelState(_STEP.kernel), _STEP.positions + SIZE,
                                      _STEP.values), "positions", ValueError),
    ],
    ids=["num-mismatch", "kernel-rank", "float-positions", "channels", "rate", "out-of-range"],
)  # fmt: skip
def test_bad_arguments(call, names, exception, checker):
    with raises_naming(names, exception, checker=checker):
        call()
