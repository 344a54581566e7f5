"""Stratified sparse sampling: positions spread over the frequencies by weights, with
gradient scales that keep a step's generator gradient unbiased."""

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings

import cfconv
from cfconv._stratified import _allocate
from cfconv.distributed import ShardedSparse, make_mesh
from cfconv.models import make_model
from cfconv.train import (
    TrainConfig,
    make_train_step,
    refresh_frequency_weights,
    uniform_frequency_weights,
)
from helpers import checker_modes, raises_naming


def _ideal_counts(weights, num, capacity):
    """Largest-remainder allocation proportional to `weights` with a cap, in NumPy by
    a different route: water-filling, one stratum at a time."""
    weights = np.asarray(weights, np.float64)
    weights = weights / weights.sum()
    share = np.zeros_like(weights)
    free = np.ones(weights.shape, bool)
    left = float(num)
    while True:  # give every free stratum its share; cap those that overflow and repeat
        share[free] = left * weights[free] / weights[free].sum()
        over = free & (share > capacity)
        if not over.any():
            return share
        share[over] = capacity
        free &= ~over
        left = num - share[~free].sum()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.01, 100.0), min_size=1, max_size=40),
    st.integers(1, 30),
    st.integers(0, 2**31 - 1),
    st.data(),
)
def test_allocation_is_proportional_capped_and_exact(weights, capacity, seed, data):
    num = data.draw(st.integers(1, capacity * len(weights)))
    counts, expected = _allocate(jax.random.key(seed), jnp.asarray(weights), num, capacity)
    counts, expected = np.asarray(counts), np.asarray(expected)
    assert counts.sum() == num
    assert counts.min() >= 0 and counts.max() <= capacity
    # Each count is its expectation rounded down or up; the expectations are the capped
    # shares proportional to the weights (quantised; the rounding slack sits on one).
    assert np.all(counts >= np.floor(expected)) and np.all(counts <= np.ceil(expected))
    ideal = _ideal_counts(weights, num, capacity)
    assert np.sum(np.abs(expected - ideal) > 1e-2) <= 1
    assert expected.sum() == pytest.approx(num)


def test_allocation_counts_have_their_expectations():
    weights = jnp.array([5.0, 0.3, 2.2, 0.0, 1.0])
    allocate = jax.jit(jax.vmap(lambda k: _allocate(k, weights, 7, 4)))
    counts, expected = allocate(jax.random.split(jax.random.key(0), 4000))
    np.testing.assert_allclose(np.asarray(counts).mean(0), np.asarray(expected)[0], atol=0.03)
    assert np.asarray(expected)[0, 3] == 0  # weight 0: none while the others have room
    # More positions than the weighted strata can take: the rest go to the others.
    counts, _ = _allocate(jax.random.key(1), weights, 18, 4)
    assert np.asarray(counts)[3] == 2
    with raises_naming("num", ValueError, checker=False):
        _allocate(jax.random.key(0), jnp.ones(3), 13, 4)


SHAPE = (2, 3, 4, 3)  # cin, cout, h, wf: 6 channel pairs, 12 frequencies, 72 entries
WEIGHTS = jnp.array([[8.0, 4, 2], [1, 1, 0.5], [0.5, 0.25, 0.25], [0, 0.1, 3]])


def test_stratified_positions_follow_the_allocation():
    num = 30
    key = jax.random.key(0)
    positions, scales = cfconv.stratified_positions(key, SHAPE, num, WEIGHTS)
    positions, scales = np.asarray(positions), np.asarray(scales)
    assert positions.shape == scales.shape == (num,)
    assert len(set(positions.tolist())) == num  # distinct
    assert positions.min() >= 0 and positions.max() < 72
    # The counts per frequency are those of the allocation with the same subkey.
    counts, expected = _allocate(jax.random.split(key, 3)[0], WEIGHTS.reshape(-1), num, 6)
    frequency = positions % 12
    np.testing.assert_array_equal(np.bincount(frequency, minlength=12), np.asarray(counts))
    # The scale of a position at frequency f: num / (frequencies * its expected count).
    np.testing.assert_allclose(scales, num / (12 * np.asarray(expected)[frequency]), rtol=1e-6)
    # Equal weights: every scale is 1 when the frequencies share `num` evenly.
    _, even = cfconv.stratified_positions(jax.random.key(1), SHAPE, 24, jnp.ones((4, 3)))
    np.testing.assert_allclose(np.asarray(even), 1.0, rtol=1e-6)


def test_every_channel_pair_is_equally_likely():
    # Every entry at frequency f is drawn with probability x_f / C.
    num, draws = 30, 4000
    sample = jax.jit(jax.vmap(lambda k: cfconv.stratified_positions(k, SHAPE, num, WEIGHTS)[0]))
    positions = np.asarray(sample(jax.random.split(jax.random.key(0), draws)))
    hits = np.bincount(positions.reshape(-1), minlength=72).reshape(6, 12) / draws
    _, expected = _allocate(jax.random.key(0), WEIGHTS.reshape(-1), num, 6)
    # Binomial standard error at most sqrt(0.25 / 4000) = 0.008: allow 5 of them.
    np.testing.assert_allclose(hits, np.broadcast_to(np.asarray(expected) / 6, (6, 12)),
                               atol=0.04)  # fmt: skip


def test_scaled_sum_is_unbiased():
    # E[sum_p scale_p c_p] = (num / size) sum_p c_p for any per-position terms c, summed
    # over the frequencies of positive weight (the one of weight 0 is never drawn).
    num, draws = 20, 4000
    c = jax.random.normal(jax.random.key(5), (72,))
    drawn = np.asarray(WEIGHTS).reshape(-1)[np.arange(72) % 12] > 0

    def estimate(key):
        positions, scales = cfconv.stratified_positions(key, SHAPE, num, WEIGHTS)
        return jnp.sum(scales * c[positions])

    estimates = np.asarray(jax.jit(jax.vmap(estimate))(jax.random.split(jax.random.key(0), draws)))
    want = num / 72 * float(np.asarray(c)[drawn].sum())
    error = estimates.std() / np.sqrt(draws)
    assert abs(estimates.mean() - want) < 5 * error + 1e-6


def test_zero_weights_large_grids_and_single_pairs():
    # A frequency of weight 0 is never drawn while the others have room ...
    weights = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    positions, scales = cfconv.stratified_positions(jax.random.key(0), (2, 3, 2, 3), 10, weights)
    assert set((np.asarray(positions) % 6).tolist()) == {0, 5}
    assert np.asarray(scales).max() < 1  # no huge scale from a tiny share
    # ... and shares what the others cannot take when they are full.
    positions, _ = cfconv.stratified_positions(jax.random.key(0), (2, 3, 2, 3), 14, weights)
    assert set((np.asarray(positions) % 6).tolist()) - {0, 5}
    assert len(set(np.asarray(positions).tolist())) == 14
    # One channel pair per frequency: never two positions in one frequency.
    counts, _ = _allocate(jax.random.key(0), jnp.ones(1000), 999, 1)
    assert int(counts.max()) == 1 and int(counts.sum()) == 999
    # Channel pairs whose count squared overflows int32: still distinct positions.
    positions, _ = cfconv.stratified_positions(jax.random.key(0), (384, 384, 2, 2), 2**16,
                                               jnp.ones((2, 2)))  # fmt: skip
    assert len(np.unique(np.asarray(positions))) == 2**16


@checker_modes
def test_stratified_positions_reject_bad_input(checker):
    key = jax.random.key(0)
    with raises_naming("frequency_weights", ValueError, checker=checker):
        cfconv.stratified_positions(key, SHAPE, 10, jnp.ones((4, 4)))
    with raises_naming("frequency_weights", ValueError, checker=checker):
        cfconv.stratified_positions(key, SHAPE, 10, jnp.ones((12,)))
    with raises_naming("num", ValueError, checker=checker):
        cfconv.stratified_positions(key, SHAPE, 73, WEIGHTS)
    with raises_naming("frequency_weights", ValueError, checker=checker):
        cfconv.stratified_positions(key, SHAPE, 10, WEIGHTS.at[0, 0].set(-1.0))


def test_frequency_weights():
    gradient = jnp.zeros(SHAPE, jnp.complex64).at[:, :, 0, 0].set(3j).at[0, 1, 2, 1].set(4.0)
    weights = np.asarray(cfconv.frequency_weights(gradient, floor=0.0))
    expected = np.zeros((4, 3))
    expected[0, 0], expected[2, 1] = 18.0, 4.0  # |3j| summed over 6 pairs; |4|
    np.testing.assert_allclose(weights, expected / 22.0, rtol=1e-6)
    floored = np.asarray(cfconv.frequency_weights(gradient, floor=0.2))
    np.testing.assert_allclose(floored, 0.8 * expected / 22.0 + 0.2 / 12, rtol=1e-6)
    assert floored.sum() == pytest.approx(1.0)
    # No gradient at all: every frequency alike.
    np.testing.assert_allclose(np.asarray(cfconv.frequency_weights(jnp.zeros(SHAPE))), 1 / 12)
    with raises_naming("floor", ValueError, checker=False):
        cfconv.frequency_weights(gradient, floor=1.5)
    with raises_naming("kernel_gradient", ValueError, checker=False):
        cfconv.frequency_weights(jnp.zeros((4, 3)))


@checker_modes
def test_kernel_state_frequency_weights(checker):
    kernel = jnp.zeros(SHAPE, jnp.complex64)
    state = cfconv.KernelState(kernel, WEIGHTS)
    replaced = state.replace_kernel(kernel + 1)
    assert replaced.frequency_weights is state.frequency_weights
    assert cfconv.KernelState(kernel).frequency_weights is None
    with raises_naming("frequency_weights", ValueError, checker=checker):
        cfconv.KernelState(kernel, jnp.ones((3, 4)))
    # EMA updates keep the weights.
    values = jnp.ones(4, jnp.complex64)
    updated = cfconv.ema_update(state, jnp.arange(4), values)
    assert updated.frequency_weights is state.frequency_weights


def _layer_and_state(weights=True):
    layer = cfconv.CFConv2d(2, 3, hidden=(8, 8), key=jax.random.key(0))
    state = layer.init_state((8, 6), key=jax.random.key(1))  # grid (2, 3, 8, 4)
    if weights:
        w = jnp.arange(1.0, 33.0).reshape(8, 4) ** 2
        state = cfconv.KernelState(state.kernel, w)
    return layer, state


def test_sparse_stratified_step_kernel_and_state():
    layer, state = _layer_and_state()
    strategy = cfconv.Sparse(num=40, rate=0.5, sampling="stratified")
    key = jax.random.key(2)
    kernel, new_state = strategy(layer.generator, state, (8, 6), key=key)
    positions, _ = strategy.sample_stratified(layer.generator, state, (8, 6), key=key)
    np.testing.assert_array_equal(np.asarray(kernel.positions), np.asarray(positions))
    # The kernel's values are the generator's (the scales change gradients only).
    np.testing.assert_allclose(
        np.asarray(kernel.values), np.asarray(layer.generator(positions, (8, 6))), rtol=1e-6
    )
    expected = np.asarray(state.kernel).reshape(-1).copy()
    fresh = np.asarray(layer.generator(positions, (8, 6)))
    expected[np.asarray(positions)] = 0.5 * expected[np.asarray(positions)] + 0.5 * fresh
    np.testing.assert_allclose(np.asarray(new_state.kernel).reshape(-1), expected, rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    assert new_state.frequency_weights is state.frequency_weights
    # A grid smaller than `num` is sampled whole.
    whole = cfconv.Sparse(num=1000, sampling="stratified")
    kernel, _ = whole(layer.generator, state, (8, 6), key=key)
    assert sorted(np.asarray(kernel.positions).tolist()) == list(range(2 * 3 * 8 * 4))


def test_sparse_stratified_gradient_is_unbiased():
    # A loss linear in the kernel: the mean over keys of the step's generator gradient is
    # rate * (num / size) times the exact gradient of the same loss of the generated kernel.
    layer, state = _layer_and_state()
    num, rate, size = 48, 0.5, 2 * 3 * 8 * 4
    direction = jax.random.normal(jax.random.key(3), state.kernel.shape, jnp.complex64)

    def linear(kernel):
        return jnp.real(jnp.vdot(direction, kernel))

    strategy = cfconv.Sparse(num=num, rate=rate, sampling="stratified")

    @jax.jit
    def sparse_grad(params, key):
        def loss(params):
            generator = eqx.combine(params, static)
            kernel, _ = strategy(generator, state, (8, 6), key=key)
            return linear(kernel.dense())

        return jax.grad(loss)(params)

    params, static = eqx.partition(layer.generator, eqx.is_inexact_array)
    keys = jax.random.split(jax.random.key(4), 3000)
    grads = jax.lax.map(lambda k: sparse_grad(params, k), keys)
    mean = jnp.concatenate([g.mean(0).ravel() for g in jax.tree.leaves(grads)])
    spread = jnp.concatenate([g.std(0).ravel() for g in jax.tree.leaves(grads)])
    exact = jax.grad(lambda p: linear(eqx.combine(p, static).materialize((8, 6))))(params)
    want = rate * num / size * jnp.concatenate([g.ravel() for g in jax.tree.leaves(exact)])
    error = spread / np.sqrt(keys.shape[0])
    assert np.all(np.abs(np.asarray(mean - want)) < 5 * np.asarray(error) + 1e-5)


@checker_modes
def test_sparse_stratified_rejects_bad_input(checker):
    layer, state = _layer_and_state(weights=False)
    strategy = cfconv.Sparse(num=10, sampling="stratified")
    with raises_naming("frequency_weights", ValueError, checker=checker):
        strategy(layer.generator, state, (8, 6), key=jax.random.key(0))
    with raises_naming("sampling", ValueError, checker=checker):
        cfconv.Sparse(num=10, sampling="importance")


def test_sharded_stratified_equals_stratified_on_one_device():
    layer, state = _layer_and_state()
    sparse = cfconv.Sparse(num=40, rate=0.3, sampling="stratified", write_back=True)
    sharded = ShardedSparse(sparse, make_mesh(1, 1))
    key = jax.random.key(2)

    def loss(generator, strategy):
        kernel, new = strategy(generator, state, (8, 6), key=key)
        return (abs(kernel.dense()) ** 2).sum(), (kernel, new)

    grad = eqx.filter_value_and_grad(loss, has_aux=True)
    (want, (want_kernel, want_state)), want_grad = grad(layer.generator, sparse)
    (got, (got_kernel, got_state)), got_grad = grad(layer.generator, sharded)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_state.kernel, want_state.kernel, rtol=1e-6, atol=1e-7)
    assert got_state.frequency_weights is not None
    for a, b in zip(jax.tree.leaves(eqx.filter(got_grad, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(want_grad, eqx.is_array))):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    after = sharded.after_update(layer.generator, got_kernel, got_state, (8, 6))
    assert after.frequency_weights is got_state.frequency_weights


def test_refresh_frequency_weights_follows_the_kernel_gradient():
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=3, depth=2,
                       key=jax.random.key(0))  # fmt: skip
    states = model.init_states((8, 8), key=jax.random.key(1))
    images = jax.random.normal(jax.random.key(2), (4, 1, 8, 8))
    labels = jnp.array([0, 1, 2, 1])
    refreshed = refresh_frequency_weights(model, states, images, labels, (8, 8), floor=0.1)

    # Reference: the gradient with respect to the stored kernels, by plain autodiff.
    def loss(kernels):
        logits = jax.vmap(model, in_axes=(0, None))(images, kernels)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    gradients = jax.grad(loss)(tuple(s.kernel for s in states))
    for state, new, gradient in zip(states, refreshed, gradients):
        magnitude = np.abs(np.asarray(gradient)).sum(axis=(0, 1))
        want = 0.9 * magnitude / magnitude.sum() + 0.1 / magnitude.size
        np.testing.assert_allclose(np.asarray(new.frequency_weights), want, rtol=1e-4)
        assert new.kernel is state.kernel
    uniform = uniform_frequency_weights(states)
    np.testing.assert_allclose(np.asarray(uniform[0].frequency_weights), 1 / (8 * 5))


def test_train_step_with_stratified_sampling_keeps_the_weights():
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=3, depth=2,
                       key=jax.random.key(0))  # fmt: skip
    states = uniform_frequency_weights(model.init_states((8, 8), key=jax.random.key(1)))
    weights = [np.asarray(s.frequency_weights) for s in states]
    optimizer = optax.adam(1e-2)
    step = make_train_step(
        optimizer, cfconv.Sparse(num=30, sampling="stratified", write_back=True), (8, 8)
    )
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    images = jax.random.normal(jax.random.key(2), (4, 1, 8, 8))
    labels = jnp.array([0, 1, 2, 1])
    model, states, opt_state, metrics = step(model, states, opt_state, images, labels,
                                             jax.random.key(3))  # fmt: skip
    assert np.isfinite(float(metrics["loss"]))
    for old, new in zip(weights, states):
        np.testing.assert_array_equal(np.asarray(new.frequency_weights), old)


def test_train_config_sampling():
    config = TrainConfig(sampling="stratified", sampling_floor=0.1, positions=4096)
    strategy = config.kernel_strategy()
    assert isinstance(strategy, cfconv.Sparse) and strategy.sampling == "stratified"
    assert TrainConfig.from_json(config.to_json()) == config
    old = config.to_json()
    del old["sampling"], old["sampling_floor"]
    assert TrainConfig.from_json(old).sampling == "uniform"
    with raises_naming("sampling", ValueError, checker=False):
        TrainConfig(sampling="importance")
    with raises_naming("sampling_floor", ValueError, checker=False):
        TrainConfig(sampling_floor=2.0)
