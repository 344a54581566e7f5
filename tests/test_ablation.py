"""`cfconv sparse-ablation`: the diagnostic strategies, `fit(strategy=...)` and the command."""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cfconv
from cfconv.cli import main
from cfconv.data import Dataset, train_val_split
from cfconv.distributed import ShardedSparse, make_mesh
from cfconv.experiments import (
    VARIANTS,
    FractionSparse,
    SampledGradient,
    StaleKernel,
    ablation_strategy,
    format_ablation,
    run_sparse_ablation,
)
from cfconv.train import TrainConfig, fit
from helpers import raises_naming


SHAPE = (6, 6)  # grid (2, 3, 6, 4): 144 entries


def _generator_and_state():
    kg, ks = jax.random.split(jax.random.key(0))
    generator = cfconv.KernelGenerator(2, 3, hidden=(8, 8), key=kg)
    state = cfconv.init_kernel_state(2, 3, *SHAPE, key=ks)
    return generator, state


def _cotangent(shape):
    kr, ki = jax.random.split(jax.random.key(5))
    return jax.lax.complex(jax.random.normal(kr, shape), jax.random.normal(ki, shape))


def _grad(generator, kernel_of):
    """The generator gradient of the real inner product of a fixed cotangent with the
    kernel `kernel_of(generator)` returns."""

    def loss(g):
        kernel = kernel_of(g)
        return jnp.sum(jnp.real(jnp.conj(_cotangent(kernel.shape)) * kernel))

    grads = eqx.filter_grad(loss)(generator)
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(grads)])


def _sampled(key, num):
    """The positions every strategy here draws for `key`, and a boolean mask of them
    built in NumPy."""
    positions = np.asarray(cfconv.sample_positions(key, (2, 3, 6, 4), num))
    mask = np.zeros(2 * 3 * 6 * 4, bool)
    mask[positions] = True
    return positions, mask.reshape(2, 3, 6, 4)


def test_sampled_gradient_is_the_fresh_kernel_with_a_masked_gradient():
    generator, state = _generator_and_state()
    key = jax.random.key(3)
    strategy = SampledGradient(0.25)
    kernel, new_state = strategy(generator, state, SHAPE, key=key)
    full = generator.materialize(SHAPE)
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(full), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(new_state.kernel), np.asarray(full), rtol=1e-6,
                               atol=1e-6)  # fmt: skip
    _, mask = _sampled(key, 36)
    assert 0 < mask.sum() < mask.size
    got = _grad(generator, lambda g: strategy(g, state, SHAPE, key=key)[0])
    # Reference: the gradient of the generated kernel with the cotangent zeroed off the mask.
    masked = jnp.asarray(mask)
    expected = _grad(generator, lambda g: jnp.where(masked, g.materialize(SHAPE), 0))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    full_grad = _grad(generator, lambda g: g.materialize(SHAPE))
    assert np.linalg.norm(got) < 0.99 * np.linalg.norm(full_grad)


@pytest.mark.parametrize("rate", [0.1, 1.0])
def test_stale_kernel_is_the_blended_state_with_the_full_gradient(rate):
    generator, state = _generator_and_state()
    key = jax.random.key(4)
    strategy = StaleKernel(0.25, rate)
    kernel, new_state = strategy(generator, state, SHAPE, key=key)
    # Reference blend in NumPy: sampled entries move `rate` of the way to the generator.
    _, mask = _sampled(key, 36)
    old = np.asarray(state.kernel, np.complex128)
    fresh = np.asarray(generator.materialize(SHAPE), np.complex128)
    expected = np.where(mask, (1 - rate) * old + rate * fresh, old)
    np.testing.assert_allclose(np.asarray(kernel), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(new_state.kernel), expected, rtol=1e-5, atol=1e-5)
    # The gradient is that of the generated kernel at every position.
    got = _grad(generator, lambda g: strategy(g, state, SHAPE, key=key)[0])
    expected_grad = _grad(generator, lambda g: g.materialize(SHAPE))
    np.testing.assert_allclose(got, expected_grad, rtol=1e-4, atol=1e-5)


def test_fraction_sparse_samples_a_share_of_each_grid():
    generator, state = _generator_and_state()
    key = jax.random.key(6)
    kernel, _ = FractionSparse(0.25, rate=0.5)(generator, state, SHAPE, key=key)
    assert isinstance(kernel, cfconv.SparseKernel)
    assert kernel.positions.shape == (36,)  # a quarter of 144
    reference, _ = cfconv.Sparse(36, 0.5)(generator, state, SHAPE, key=key)
    np.testing.assert_array_equal(np.asarray(kernel.positions), np.asarray(reference.positions))
    tiny, _ = FractionSparse(1e-6)(generator, state, SHAPE, key=key)
    assert tiny.positions.shape == (1,)  # at least one position


def _weighted_state():
    """The state of `_generator_and_state` with uneven frequency weights."""
    generator, state = _generator_and_state()
    weights = jax.random.uniform(jax.random.key(7), SHAPE[:1] + (4,), minval=0.1, maxval=2.0)
    return generator, cfconv.KernelState(state.kernel, weights)


def _stratified(key, state, num):
    """The stratified positions and scales for `key`, and the scales as a dense NumPy
    array over the grid (0 off the sample)."""
    positions, scales = cfconv.stratified_positions(key, (2, 3, 6, 4), num,
                                                    state.frequency_weights)  # fmt: skip
    positions, scales = np.asarray(positions), np.asarray(scales)
    assert len(set(positions.tolist())) == num  # distinct
    dense = np.zeros(2 * 3 * 6 * 4, np.float32)
    dense[positions] = scales
    return positions, dense.reshape(2, 3, 6, 4)


def test_stratified_sampled_gradient_scales_each_sampled_position():
    generator, state = _weighted_state()
    key = jax.random.key(8)
    strategy = SampledGradient(0.25, sampling="stratified")
    assert strategy.needs_frequency_weights
    kernel, new_state = strategy(generator, state, SHAPE, key=key)
    full = generator.materialize(SHAPE)
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(full), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(new_state.frequency_weights),
                                  np.asarray(state.frequency_weights))  # fmt: skip
    _, scales = _stratified(key, state, 36)
    assert len(np.unique(scales[scales > 0])) > 1  # uneven weights, uneven scales
    got = _grad(generator, lambda g: strategy(g, state, SHAPE, key=key)[0])
    weight = jnp.asarray(scales)
    expected = _grad(generator, lambda g: weight * g.materialize(SHAPE))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampling", ["uniform", "stratified"])
def test_sampled_gradient_is_the_sparse_steps_gradient_over_its_rate(sampling):
    """Fresh kernel or stale, the generator gets the sparse step's gradient, whose
    sampled entries the EMA scales by `rate`."""
    generator, state = _weighted_state()
    key, rate = jax.random.key(10), 0.3
    sampled = SampledGradient(0.25, sampling=sampling)
    sparse = cfconv.Sparse(36, rate, sampling=sampling)
    got = _grad(generator, lambda g: sampled(g, state, SHAPE, key=key)[0])
    expected = _grad(generator, lambda g: sparse(g, state, SHAPE, key=key)[0].dense())
    np.testing.assert_allclose(rate * got, expected, rtol=1e-4, atol=1e-5)


def test_stratified_stale_kernel_and_fraction_sparse_blend_at_stratified_positions():
    generator, state = _weighted_state()
    key = jax.random.key(9)
    positions, _ = _stratified(key, state, 36)
    mask = np.zeros(2 * 3 * 6 * 4, bool)
    mask[positions] = True
    mask = mask.reshape(2, 3, 6, 4)
    kernel, new_state = StaleKernel(0.25, 0.5, sampling="stratified")(generator, state, SHAPE,
                                                                      key=key)  # fmt: skip
    old = np.asarray(state.kernel, np.complex128)
    fresh = np.asarray(generator.materialize(SHAPE), np.complex128)
    expected = np.where(mask, 0.5 * old + 0.5 * fresh, old)
    np.testing.assert_allclose(np.asarray(kernel), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(new_state.frequency_weights),
                                  np.asarray(state.frequency_weights))  # fmt: skip
    sparse, _ = FractionSparse(0.25, 0.5, sampling="stratified")(generator, state, SHAPE, key=key)
    np.testing.assert_array_equal(np.sort(np.asarray(sparse.positions)), np.sort(positions))
    np.testing.assert_allclose(np.asarray(sparse.kernel), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [FractionSparse, SampledGradient, StaleKernel])
def test_stratified_needs_frequency_weights_and_a_known_sampling(cls):
    generator, state = _generator_and_state()  # no frequency weights
    with pytest.raises(ValueError, match=f"`frequency_weights`, which {cls.__name__}"):
        cls(0.25, sampling="stratified")(generator, state, SHAPE, key=jax.random.key(0))
    with raises_naming("sampling", ValueError, checker=False):
        cls(0.25, sampling="importance")  # pyright: ignore[reportArgumentType]
    assert not cls(0.25).needs_frequency_weights


def test_which_strategies_use_frequency_weights():
    assert cfconv.Sparse(8, sampling="stratified").needs_frequency_weights
    assert not cfconv.Sparse(8).needs_frequency_weights
    for strategy in (cfconv.Dense(), cfconv.Chunked(), cfconv.Stored(), cfconv.Remat()):
        assert not strategy.needs_frequency_weights
    assert not ablation_strategy("exact", 0.1, 0.1, "stratified").needs_frequency_weights
    for variant in ("sampled-gradient", "stale-kernel", "sparse", "write-back"):
        assert ablation_strategy(variant, 0.1, 0.1, "stratified").needs_frequency_weights
        assert not ablation_strategy(variant, 0.1, 0.1).needs_frequency_weights
    with pytest.raises(ValueError, match="`sampling`"):
        ablation_strategy("sparse", 0.1, 0.1, "importance")
    mesh = make_mesh(1, 1)
    assert ShardedSparse(cfconv.Sparse(8, sampling="stratified"), mesh).needs_frequency_weights
    assert not ShardedSparse(cfconv.Sparse(8), mesh).needs_frequency_weights


def test_which_strategies_generate_their_state():
    assert cfconv.Dense.generates_state and cfconv.Remat.generates_state
    assert cfconv.Chunked.generates_state and SampledGradient.generates_state
    assert not cfconv.Sparse.generates_state and not cfconv.Stored.generates_state
    assert not StaleKernel.generates_state and not FractionSparse.generates_state


@pytest.mark.parametrize("cls", [FractionSparse, SampledGradient, StaleKernel])
@pytest.mark.parametrize("fraction", [0.0, 1.5, -1.0])
def test_bad_fractions_are_named(cls, fraction):
    with pytest.raises(ValueError, match="`fraction`"):
        cls(fraction)


def test_ablation_strategy_maps_every_variant():
    assert isinstance(ablation_strategy("exact", 0.1, 0.1), cfconv.Chunked)
    assert isinstance(ablation_strategy("sampled-gradient", 0.1, 0.1), SampledGradient)
    assert isinstance(ablation_strategy("stale-kernel", 0.1, 0.1), StaleKernel)
    assert not ablation_strategy("sparse", 0.1, 0.1).write_back  # pyright: ignore
    assert ablation_strategy("write-back", 0.1, 0.1).write_back  # pyright: ignore
    with pytest.raises(ValueError, match="`variant`"):
        ablation_strategy("dense", 0.1, 0.1)


def _toy_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 48).astype(np.int32)
    images = rng.integers(0, 256, (48, 8, 8, 1)).astype(np.uint8)
    images[labels == 1, :4] //= 4  # class 1: a darker top half
    return train_val_split(Dataset(images, labels, ("a", "b")), val_fraction=0.25, seed=0)


SMALL: dict[str, Any] = dict(width=3, depth=1, batch_size=12, epochs=1, augment=False)


def test_fit_trains_with_the_given_strategy():
    train, val = _toy_data()
    config = TrainConfig(model="hw_cin_cout", strategy="scan", **SMALL)
    by_name = fit(config, train, val, log=None)
    # The same optimizer (a sparse config would otherwise drop the generator's momentum).
    sparse_config = TrainConfig(model="hw_cin_cout", strategy="sparse-vmap",
                                generator_momentum=config.momentum, **SMALL)  # fmt: skip
    # The config says sparse, the strategy is the exact step: the strategy wins, and the
    # stored kernels are regenerated before evaluation as for `--strategy scan`.
    by_strategy = fit(sparse_config, train, val, log=None, strategy=cfconv.Chunked())
    assert by_strategy["val_acc"] == pytest.approx(by_name["val_acc"])
    for a, b in zip(by_name["epochs"], by_strategy["epochs"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert "kernel_lag" not in by_strategy["epochs"][-1]
    stale = fit(config, train, val, log=None, strategy=StaleKernel(0.5))
    assert len(stale["epochs"][-1]["kernel_lag"]) == 1
    with raises_naming("strategy", TypeError, checker=False):
        fit(config, train, val, log=None, strategy="sparse")  # pyright: ignore[reportArgumentType]


def test_run_sparse_ablation_and_its_table():
    train, val = _toy_data()
    results = run_sparse_ablation(("exact", "sparse", "write-back"), fraction=0.5, rate=1.0,
                                  train_data=train, val_data=val, log=None,
                                  generator_momentum=0.0, **SMALL)  # fmt: skip
    assert list(results) == ["exact", "sparse", "write-back"]
    assert results["sparse"]["config"]["generator_momentum"] == 0.0
    assert not results["sparse"]["config"]["write_back"]
    assert results["write-back"]["config"]["write_back"]
    assert results["write-back"]["strategy"].startswith("FractionSparse(")
    for metrics in results.values():
        assert 0 <= metrics["val_acc"] <= 1 and metrics["seconds"] > 0
        assert metrics["config"]["rate"] == 1.0
    table = format_ablation(results)
    assert table.count("\n") == 4
    assert f"| sparse | {VARIANTS['sparse']} | {results['sparse']['val_acc']:.4f} |" in table
    with pytest.raises(ValueError, match="`variants`"):
        run_sparse_ablation(("dense",), train_data=train, val_data=val, log=None)
    with pytest.raises(ValueError, match="`train_data`"):
        run_sparse_ablation(("exact",), train_data=train, log=None)
    with pytest.raises(ValueError, match="ignored"):
        run_sparse_ablation(("exact",), train_data=train, val_data=val, log=None, positions=9)
    with pytest.raises(ValueError, match="`model`"):
        run_sparse_ablation(("exact",), train_data=train, val_data=val, log=None, model="spatial")
    with pytest.raises(ValueError, match="`sampling`"):
        run_sparse_ablation(("exact",), train_data=train, val_data=val, log=None, sampling="x")
    with pytest.raises(ValueError, match="sampling_floor"):  # only used when stratified
        run_sparse_ablation(("exact",), train_data=train, val_data=val, log=None,
                            sampling_floor=0.2)  # fmt: skip


def test_run_sparse_ablation_stratified():
    """With `sampling="stratified"` the sampling variants train on frequency weights
    that `fit` keeps (a strategy that samples by them fails on states without them)."""
    train, val = _toy_data()
    results = run_sparse_ablation(("sampled-gradient", "write-back"), fraction=0.5,
                                  train_data=train, val_data=val, log=None,
                                  sampling="stratified", state_init="generator",
                                  generator_momentum=0.0, **SMALL)  # fmt: skip
    for variant, metrics in results.items():
        assert metrics["config"]["sampling"] == "stratified"
        assert metrics["config"]["state_init"] == "generator"
        assert "sampling='stratified'" in metrics["strategy"], variant
        assert np.isfinite(metrics["epochs"][-1]["train_loss"])


def test_cli(capfd):
    argv = ["sparse-ablation", "--variants", "sampled-gradient", "--width", "2", "--depth", "1",
            "--epochs", "1", "--fraction", "0.5", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert "| sampled-gradient | fresh kernel, sampled gradient |" in out
    assert '"sampled-gradient": {"val_acc"' in out
    argv += ["--sampling", "stratified", "--state-init", "generator"]
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert "stratified, rate 0.1" in out and "stored kernels from generator" in out
    for bad, name in ((["--variants", "dense"], "unknown variants"),
                      (["--sampling", "importance"], "--sampling"),
                      (["--state-init", "zeros"], "--state-init"),
                      (["--fraction", "0"], "--fraction"), (["--lr", "-1"], "--lr"),
                      (["--rate", "2"], "--rate"),
                      (["--generator-momentum", "1"], "--generator-momentum")):  # fmt: skip
        with pytest.raises(SystemExit):
            main(["sparse-ablation", *bad])
        assert name in capfd.readouterr().err
