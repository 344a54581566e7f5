"""CFConv2d and its kernel-phase strategies."""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cfconv
from helpers import assert_tree_allclose, checker_modes, raises_naming
from strategies import parameterizations, seeds


SPATIAL = (6, 5)
CIN, COUT = 2, 3


def _setup(seed, parameterization="hw_cin_cout", batch=(4,)):
    k_layer, k_state, k_x, k_c, k_bias = jax.random.split(jax.random.key(seed), 5)
    layer = cfconv.CFConv2d(CIN, COUT, parameterization, (8, 8), key=k_layer)
    # A non-zero bias, so that tests see it.
    layer = eqx.tree_at(lambda m: m.bias, layer, jax.random.normal(k_bias, (COUT,)))
    state = layer.init_state(SPATIAL, key=k_state)
    x = jax.random.normal(k_x, batch + (CIN,) + SPATIAL)
    c = jax.random.normal(k_c, batch + (COUT,) + SPATIAL)
    return layer, state, x, c


@eqx.filter_jit
def _call(layer, x, state, strategy, key=None):
    return layer(x, state, strategy=strategy, key=key)


def _linear_loss(layer, state, x, c, strategy, key=None):
    """A loss linear in the layer output, so gradients at different kernels agree."""
    y, new_state = layer(x, state, strategy=strategy, key=key)
    return jnp.sum(y * c), new_state


@eqx.filter_jit
def _generator_grad(layer, state, x, c, strategy, key=None):
    grads, _ = eqx.filter_grad(_linear_loss, has_aux=True)(layer, state, x, c, strategy, key)
    return grads.generator


@hypothesis.given(parameterization=parameterizations, seed=seeds)
def test_dense_strategies_agree(parameterization, seed):
    layer, state, x, c = _setup(seed, parameterization)
    strategies = [
        cfconv.Dense(),
        cfconv.Remat(),
        cfconv.Chunked(chunk_size=7),
        cfconv.Chunked(chunk_size=40, unroll=2),
    ]
    outputs = [_call(layer, x, state, s)[0] for s in strategies]
    grads = [_generator_grad(layer, state, x, c, s) for s in strategies]
    for out, grad in zip(outputs[1:], grads[1:]):
        assert_tree_allclose(out, outputs[0])
        assert_tree_allclose(grad, grads[0], rtol=1e-4, atol=1e-4)
    # The dense kernel is the generator's, independently of the state, and is stored.
    kernel = layer.generator.materialize(SPATIAL)
    expected = jax.vmap(cfconv.spectral_conv, (0, None))(x, kernel)
    assert_tree_allclose(
        outputs[0], expected + layer.bias[None, :, None, None], rtol=1e-4, atol=1e-4
    )
    _, new_state = _call(layer, x, state, "dense")
    assert_tree_allclose(new_state.kernel, kernel)


@hypothesis.given(
    parameterization=parameterizations,
    seed=seeds,
    rate=st.sampled_from([0.1, 0.5, 1.0]),
    evaluation=st.sampled_from([
        dict(remat_chunk_size=None),  # plain autodiff
        dict(remat_chunk_size=7),  # recomputed in chunks that do not divide `num`
        dict(chunk_size=50),  # scan
    ]),
)  # fmt: skip
def test_sparse_with_every_position_is_ema_of_dense(parameterization, seed, rate, evaluation):
    layer, state, x, c = _setup(seed, parameterization)
    size = int(np.prod(state.kernel.shape))
    sparse = cfconv.Sparse(num=size, rate=rate, replace=False, **evaluation)
    key = jax.random.key(seed + 1)
    y, new_state = _call(layer, x, state, sparse, key)

    dense = np.asarray(layer.generator.materialize(SPATIAL), np.complex128)
    blended = np.asarray(state.kernel, np.complex128) * (1 - rate) + rate * dense
    expected = (
        np.fft.irfft2(
            np.einsum("bihw,iohw->bohw", np.fft.rfft2(np.asarray(x, np.float64)), blended),
            s=SPATIAL,
        )
        + np.asarray(layer.bias, np.float64)[:, None, None]
    )
    assert_tree_allclose(y, expected.astype(np.float32), rtol=1e-4, atol=1e-4)
    assert_tree_allclose(new_state.kernel, blended.astype(np.complex64), rtol=1e-5, atol=1e-5)

    # The loss is linear in the kernel, so the sparse gradient is exactly `rate` times the
    # dense one (the EMA weighs the generator's values by `rate`).
    sparse_grad = _generator_grad(layer, state, x, c, sparse, key)
    dense_grad = _generator_grad(layer, state, x, c, cfconv.Dense())
    scaled = jax.tree.map(lambda g: rate * g, dense_grad)
    assert_tree_allclose(sparse_grad, scaled, rtol=1e-4, atol=1e-5)


@hypothesis.given(parameterization=parameterizations, seed=seeds)
def test_sparse_gradient_only_through_sampled_entries(parameterization, seed):
    layer, state, x, c = _setup(seed, parameterization)
    rate, num = 0.3, 25
    sparse = cfconv.Sparse(num=num, rate=rate, replace=False)
    key = jax.random.key(seed + 1)
    positions = sparse.sample(layer.generator, SPATIAL, key=key)
    mask = np.zeros(state.kernel.size, bool)
    mask[np.asarray(positions)] = True
    mask = jnp.asarray(mask.reshape(state.kernel.shape))

    # Reference: the dense generator's kernel, masked to the sampled entries. The state is
    # a constant, so the gradient is rate * (gradient of the loss at the masked kernel).
    def reference_loss(generator):
        kernel = jnp.where(mask, rate * generator.materialize(SPATIAL), 0)
        y = jax.vmap(cfconv.spectral_conv, (0, None))(x, kernel)
        return jnp.sum(y * c)

    expected = eqx.filter_grad(reference_loss)(layer.generator)
    got = _generator_grad(layer, state, x, c, sparse, key)
    assert_tree_allclose(got, expected, rtol=1e-4, atol=1e-5)

    # No gradient reaches the state, and unsampled entries keep their stored values.
    def state_loss(state):
        return _linear_loss(layer, state, x, c, sparse, key)[0]

    state_grad = jax.jit(jax.grad(state_loss))(state)
    assert np.all(np.asarray(state_grad.kernel) == 0)
    _, new_state = _call(layer, x, state, sparse, key)
    unchanged = ~np.asarray(mask)
    np.testing.assert_array_equal(
        np.asarray(new_state.kernel)[unchanged], np.asarray(state.kernel)[unchanged]
    )
    assert not np.allclose(np.asarray(new_state.kernel)[~unchanged],
                           np.asarray(state.kernel)[~unchanged])  # fmt: skip


@hypothesis.given(seed=seeds, replace=st.booleans())
def test_sparse_scan_equals_vmap(seed, replace):
    layer, state, x, c = _setup(seed)
    key = jax.random.key(seed + 2)
    vmapped = cfconv.Sparse(num=64, replace=replace, remat_chunk_size=None)
    y1, s1 = _call(layer, x, state, vmapped, key)
    g1 = _generator_grad(layer, state, x, c, vmapped, key)
    for other in (
        cfconv.Sparse(num=64, replace=replace, chunk_size=24, unroll=2),
        cfconv.Sparse(num=64, replace=replace, remat_chunk_size=24, unroll=2),
    ):
        y2, s2 = _call(layer, x, state, other, key)
        assert_tree_allclose((y1, s1), (y2, s2))
        g2 = _generator_grad(layer, state, x, c, other, key)
        assert_tree_allclose(g1, g2, rtol=1e-4, atol=1e-5)


@hypothesis.given(
    share=st.floats(1e-4, 1.0),
    size=st.integers(1, 10**7),
    cap=st.none() | st.integers(1, 10**6),
    replace=st.booleans(),
)
def test_sparse_share_counts(share, size, cap, replace):
    # A share of a grid: the nearest count to share * size, at least one, at most `num`.
    count = cfconv.Sparse(cap, share=share, replace=replace).count(size)
    nearest = max(1, min(size, int(np.floor(share * size + 0.5))))
    assert abs(count - min(nearest, cap or size)) <= 1  # rounding at exact halves
    assert 1 <= count <= min(size, cap or size)
    # Without a share: `num` (with replacement, even above `size`), or the whole grid.
    assert cfconv.Sparse(cap, replace=replace).count(size) == (
        size if cap is None else cap if replace else min(cap, size))  # fmt: skip


def test_sparse_share_samples_its_count():
    layer, state, x, c = _setup(3)
    size = state.kernel.size  # 2 x 3 x 6 x 3 = 108
    key = jax.random.key(4)
    by_share = cfconv.Sparse(share=0.25)
    positions = by_share.sample(layer.generator, SPATIAL, key=key)
    assert positions.shape == (27,) and size == 108
    # The same step as 27 positions given as a number.
    by_count = cfconv.Sparse(num=27)
    assert_tree_allclose(_call(layer, x, state, by_share, key),
                         _call(layer, x, state, by_count, key))  # fmt: skip


def test_stored_inference_uses_the_state_only():
    layer, state, x, _ = _setup(0)
    y, new_state = layer(x, state, strategy="stored")
    assert new_state is state
    # Reference in numpy: the stored kernel applied in the Fourier domain, plus the bias.
    kernel = np.asarray(state.kernel, np.complex128)
    x_hat = np.fft.rfft2(np.asarray(x, np.float64))
    expected = np.fft.irfft2(np.einsum("bihw,iohw->bohw", x_hat, kernel), s=SPATIAL)
    expected = expected + np.asarray(layer.bias, np.float64)[:, None, None]
    assert_tree_allclose(y, expected.astype(np.float32), rtol=1e-4, atol=1e-4)
    # The generator is not used: breaking it changes nothing.
    broken = eqx.tree_at(lambda m: m.generator.real.layers[0].weight, layer,
                         replace_fn=lambda w: w * jnp.nan)  # fmt: skip
    assert_tree_allclose(broken(x, state, strategy=cfconv.Stored())[0], y)


def test_batch_axes():
    layer, state, x, _ = _setup(0, batch=(2, 3))
    y, _ = layer(x, state, strategy="stored")
    assert y.shape == (2, 3, COUT) + SPATIAL
    single, _ = layer(x[1, 2], state, strategy="stored")
    assert single.shape == (COUT,) + SPATIAL
    assert_tree_allclose(y[1, 2], single)


def test_training_step_compiles_once():
    layer, state, x, c = _setup(0)
    strategy = cfconv.Sparse(num=32)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(layer, state, key):
        (loss, new_state), grads = eqx.filter_value_and_grad(_linear_loss, has_aux=True)(
            layer, state, x, c, strategy, key
        )
        return loss, new_state, grads

    for i in range(3):
        _, state, _ = step(layer, state, jax.random.key(i))


@pytest.mark.parametrize("strategy", [cfconv.Sparse(num=48, rate=0.5), cfconv.Chunked(30)])
def test_training_fits_a_dense_reference(strategy):
    """Sparse and dense training both learn a target reachable by the generator."""
    k_target, k_layer, k_state, k_x = jax.random.split(jax.random.key(42), 4)
    target = cfconv.KernelGenerator(CIN, COUT, "hw_cin_cout", (8, 8), key=k_target)
    target_kernel = target.materialize(SPATIAL)
    layer = cfconv.CFConv2d(CIN, COUT, "hw_cin_cout", (8, 8), key=k_layer)
    # Start the stored kernel from the generator, as after dense warm-up.
    state = cfconv.KernelState(layer.generator.materialize(SPATIAL))
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(eqx.filter(layer, eqx.is_inexact_array))

    def loss_fn(layer, state, x, key):
        y, new_state = layer(x, state, strategy=strategy, key=key)
        y_target = jax.vmap(cfconv.spectral_conv, (0, None))(x, target_kernel)
        return jnp.mean((y - y_target) ** 2), new_state

    @eqx.filter_jit
    def step(layer, state, opt_state, key):
        k_x, k_s = jax.random.split(key)
        x = jax.random.normal(k_x, (8, CIN) + SPATIAL)
        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(
            layer, state, x, k_s
        )
        updates, opt_state = optimizer.update(grads, opt_state)
        return eqx.apply_updates(layer, updates), state, opt_state, loss

    losses = []
    for key in jax.random.split(k_x, 400):
        layer, state, opt_state, loss = step(layer, state, opt_state, key)
        losses.append(float(loss))
    assert np.mean(losses[-20:]) < 0.05 * np.mean(losses[:5])
    # After training, inference from the stored kernel agrees with the generator's.
    x = jax.random.normal(k_state, (2, CIN) + SPATIAL)
    y_stored, _ = layer(x, state, strategy="stored")
    y_dense, _ = layer(x, state, strategy="dense")
    assert float(jnp.mean((y_stored - y_dense) ** 2)) < 0.1 * np.mean(losses[:5])


def _bad_calls():
    layer, state, x, _ = _setup(0)
    wrong_state = layer.init_state((6, 6), key=jax.random.key(0))
    return [
        ("unknown-strategy", lambda: layer(x, state, strategy="sparse-ish"), "strategy",
         ValueError),
        ("missing-key", lambda: layer(x, state, strategy="sparse"), "key", ValueError),
        ("state-shape", lambda: layer(x, wrong_state, strategy="stored"), "state", ValueError),
        ("not-a-state", lambda: layer(x, state.kernel, strategy="stored"), "state", TypeError),
        ("x-channels", lambda: layer(x[:, :1], state, strategy="stored"), "x", ValueError),
        ("x-rank", lambda: layer(x[0, 0], state, strategy="stored"), "x", ValueError),
        ("rate-zero", lambda: cfconv.Sparse(rate=0.0), "rate", ValueError),
        ("num-zero", lambda: cfconv.Sparse(num=0), "num", ValueError),
        ("share-zero", lambda: cfconv.Sparse(share=0.0), "share", ValueError),
        ("share-above-one", lambda: cfconv.Sparse(share=1.5), "share", ValueError),
        ("share-str", lambda: cfconv.Sparse(share="20%"), "share", TypeError),
        ("count-size", lambda: cfconv.Sparse(share=0.5).count(0), "size", ValueError),
        ("chunk-zero", lambda: cfconv.Chunked(chunk_size=0), "chunk_size", ValueError),
        ("remat-chunk-zero", lambda: cfconv.Sparse(remat_chunk_size=0), "remat_chunk_size",
         ValueError),
    ]  # fmt: skip


_BAD_CALLS = _bad_calls()


@checker_modes
@pytest.mark.parametrize(
    "call, name, exception", [c[1:] for c in _BAD_CALLS], ids=[c[0] for c in _BAD_CALLS]
)
def test_bad_arguments(call, name, exception, checker):
    with raises_naming(name, exception, checker=checker):
        call()
