"""`cfconv.fast_sin` against NumPy's float64 sine and cosine (an independent reference)."""

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given

import cfconv
from helpers import checker_modes, raises_naming


def _reference(x):
    return np.sin(np.asarray(x, np.float64))


def test_matches_float64_sine_on_a_dense_grid():
    # Every float32 point of a fine grid over [-1e4, 1e4], plus the points where the
    # reduction and the folding switch branches.
    grid = np.linspace(-1e4, 1e4, 4_000_001, dtype=np.float32)
    k = np.arange(-40, 41, dtype=np.float64)
    edges = np.concatenate([k * np.pi / 2 + d for d in (-1e-6, 0.0, 1e-6)]).astype(np.float32)
    x = np.concatenate([grid, edges, np.float32([0.0, -0.0, 1e-30, -1e-30])])
    got = np.asarray(jax.jit(cfconv.fast_sin)(x), np.float64)
    assert np.max(np.abs(got - _reference(x))) < 1e-6


@given(st.floats(-1e4, 1e4, width=32))
def test_matches_float64_sine_anywhere_in_range(x):
    got = float(cfconv.fast_sin(jnp.float32(x)))
    assert abs(got - float(_reference(np.float32(x)))) < 1e-6


def test_derivatives_are_cosine_and_minus_sine():
    x = np.linspace(-300.0, 300.0, 100_001, dtype=np.float32)
    first = jax.jit(jax.vmap(jax.grad(cfconv.fast_sin)))(x)
    second = jax.jit(jax.vmap(jax.grad(jax.grad(cfconv.fast_sin))))(x)
    x64 = x.astype(np.float64)
    assert np.max(np.abs(np.asarray(first, np.float64) - np.cos(x64))) < 1e-6
    assert np.max(np.abs(np.asarray(second, np.float64) + np.sin(x64))) < 1e-6


def test_gradient_of_an_mlp_matches_jnp_sin():
    mlp = cfconv.MLP(4, (32, 16), activation=cfconv.fast_sin, key=jax.random.key(0))
    reference = cfconv.MLP(4, (32, 16), activation=jnp.sin, key=jax.random.key(0))
    x = 3.0 * jax.random.normal(jax.random.key(1), (256, 4))

    def loss(model):
        return jnp.sum(jax.vmap(model)(x) ** 2)

    grads = eqx.filter_grad(loss)(mlp)
    expected = eqx.filter_grad(loss)(reference)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_keeps_the_dtype(dtype):
    x = jnp.linspace(-10.0, 10.0, 101).astype(dtype)
    y = cfconv.fast_sin(x)
    assert y.dtype == dtype and y.shape == x.shape
    tolerance = 1e-6 if dtype == jnp.float32 else 1e-2
    assert np.max(np.abs(np.asarray(y, np.float64) - _reference(x.astype(jnp.float32)))) < tolerance


def test_float64_uses_the_exact_sine():
    with jax.enable_x64(True):
        x = jnp.linspace(-1e6, 1e6, 1001, dtype=jnp.float64)
        y = cfconv.fast_sin(x)
        assert y.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(y), np.sin(np.asarray(x)), atol=1e-12)


@checker_modes
def test_rejects_integer_input(checker):
    with raises_naming("x", TypeError, checker=checker):
        cfconv.fast_sin(jnp.arange(3))


def test_is_the_default_generator_activation():
    generator = cfconv.KernelGenerator(2, 2, key=jax.random.key(0))
    assert generator.real.activation is cfconv.fast_sin
