"""Sparse write-back: the updated generator's values at the sampled positions, and the
optimizer's generator momentum."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cfconv
from cfconv.distributed import ShardedSparse, make_mesh
from cfconv.models import make_model
from cfconv.train import TrainConfig, generator_labels, make_optimizer, make_train_step
from helpers import raises_naming


SHAPE = (6, 6)


def _layer_and_state():
    layer = cfconv.CFConv2d(2, 3, hidden=(8, 8), key=jax.random.key(0))
    state = layer.init_state(SHAPE, key=jax.random.key(1))
    return layer, state


def _numpy_blend(state, positions, values, rate):
    """The EMA at `positions`, in NumPy (positions may repeat; their values agree)."""
    flat = np.asarray(state.kernel, np.complex128).reshape(-1).copy()
    values = np.asarray(values, np.complex128)
    for p, v in zip(np.asarray(positions), values):
        flat[p] = (1 - rate) * np.asarray(state.kernel).reshape(-1)[p] + rate * v
    return flat.reshape(state.kernel.shape)


@pytest.mark.parametrize("chunk_size", [None, 16])
def test_after_update_blends_the_updated_generator(chunk_size):
    layer, state = _layer_and_state()
    strategy = cfconv.Sparse(num=40, rate=0.3, chunk_size=chunk_size, write_back=True)
    kernel, new_state = strategy(layer.generator, state, SHAPE, key=jax.random.key(2))
    # An "updated" generator: every parameter moved.
    updated = jax.tree.map(lambda x: x * 1.1 if eqx.is_inexact_array(x) else x, layer.generator)
    got = strategy.after_update(updated, kernel, new_state, SHAPE)
    values = updated(kernel.positions, SHAPE)
    expected = _numpy_blend(state, kernel.positions, values, 0.3)
    np.testing.assert_allclose(np.asarray(got.kernel), expected, rtol=1e-5, atol=1e-6)
    # The pre-update values differ: write-back changed the state.
    assert not np.allclose(np.asarray(new_state.kernel), expected, rtol=1e-3, atol=1e-4)
    # Without write-back the state is the one the step made.
    plain = cfconv.Sparse(num=40, rate=0.3)
    assert plain.after_update(updated, kernel, new_state, SHAPE) is new_state
    with pytest.raises(TypeError, match="`kernel`"):
        strategy.after_update(updated, kernel.dense(), new_state, SHAPE)


def test_other_strategies_keep_their_new_state():
    layer, state = _layer_and_state()
    for strategy in (cfconv.Dense(), cfconv.Chunked(), cfconv.Stored()):
        kernel, new_state = strategy(layer.generator, state, SHAPE)
        assert strategy.after_update(layer.generator, kernel, new_state, SHAPE) is new_state


def test_sharded_write_back_equals_write_back_on_one_device():
    layer, state = _layer_and_state()
    sparse = cfconv.Sparse(num=50, rate=0.5, write_back=True)
    sharded = ShardedSparse(sparse, make_mesh(1, 1))
    key = jax.random.key(3)
    updated = jax.tree.map(lambda x: x * 0.9 if eqx.is_inexact_array(x) else x, layer.generator)
    want = sparse.after_update(updated, *sparse(layer.generator, state, SHAPE, key=key),
                               SHAPE)  # fmt: skip
    got = sharded.after_update(updated, *sharded(layer.generator, state, SHAPE, key=key),
                               SHAPE)  # fmt: skip
    np.testing.assert_allclose(np.asarray(got.kernel), np.asarray(want.kernel), rtol=1e-6,
                               atol=1e-7)  # fmt: skip
    plain = ShardedSparse(cfconv.Sparse(num=50, rate=0.5), make_mesh(1, 1))
    kernel, new_state = plain(layer.generator, state, SHAPE, key=key)
    assert plain.after_update(updated, kernel, new_state, SHAPE) is new_state


def test_train_step_writes_back_the_updated_generators_values():
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=3, depth=2,
                       key=jax.random.key(0))  # fmt: skip
    states = model.init_states((8, 8), key=jax.random.key(1))
    images = jax.random.normal(jax.random.key(2), (4, 1, 8, 8))
    labels = jnp.array([0, 1, 2, 1])
    key = jax.random.key(3)
    optimizer = optax.adam(1e-2)
    strategy = cfconv.Sparse(num=30, rate=0.5, write_back=True)
    # The positions the step will sample (the step splits its key as documented).
    key_kernels, _ = jax.random.split(key)
    layer_keys = jax.random.split(key_kernels, len(model.layers))
    positions = [strategy.sample(layer.generator, (8, 8), key=k)
                 for layer, k in zip(model.layers, layer_keys)]  # fmt: skip
    old_states = jax.tree.map(np.asarray, states)
    step = make_train_step(optimizer, strategy, (8, 8))
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    new_model, new_states, _, _ = step(model, states, opt_state, images, labels, key)
    for layer, old, new, p in zip(new_model.layers, old_states, new_states, positions):
        values = layer.generator(p, (8, 8))  # the *updated* generator
        expected = _numpy_blend(old, p, values, 0.5)
        np.testing.assert_allclose(np.asarray(new.kernel), expected, rtol=1e-4, atol=1e-5)
    # The paper's step stores the values from before the update: different states.
    paper = make_train_step(optimizer, cfconv.Sparse(num=30, rate=0.5), (8, 8))
    model = make_model(
        "hw_cin_cout", in_channels=1, num_classes=3, width=3, depth=2, key=jax.random.key(0)
    )  # fmt: skip (the first step donated the model)
    states = jax.tree.map(jnp.asarray, old_states)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    _, paper_states, _, _ = paper(model, states, opt_state, images, labels, key)
    for paper_state, new in zip(paper_states, new_states):
        assert not np.allclose(np.asarray(paper_state.kernel), np.asarray(new.kernel), atol=1e-5)


def test_make_optimizer_generator_momentum():
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=3, depth=1,
                       key=jax.random.key(0))  # fmt: skip
    params = eqx.filter(model, eqx.is_inexact_array)
    labels = generator_labels(params)
    assert set(jax.tree.leaves(labels)) == {"generator", "other"}
    optimizer = make_optimizer(1e-2, generator_momentum=0.0)
    no_momentum, with_momentum = optax.adam(1e-2, b1=0.0), optax.adam(1e-2)
    states = [optimizer.init(params), no_momentum.init(params), with_momentum.init(params)]
    # Two steps with opposite gradients: momentum makes the second update differ.
    for sign in (1.0, -1.0):
        grads = jax.tree.map(lambda x: sign * jnp.ones_like(x), params)
        got, states[0] = optimizer.update(grads, states[0], params)
        want_gen, states[1] = no_momentum.update(grads, states[1], params)
        want_other, states[2] = with_momentum.update(grads, states[2], params)
    for g, a, b, label in zip(*(jax.tree.leaves(t) for t in (got, want_gen, want_other, labels))):
        np.testing.assert_allclose(np.asarray(g), np.asarray(a if label == "generator" else b),
                                   rtol=1e-5)  # fmt: skip
    assert not np.allclose(jax.tree.leaves(want_gen)[0], jax.tree.leaves(want_other)[0])
    for bad in (1.0, -0.1, True):
        with raises_naming("generator_momentum", ValueError, checker=True):
            make_optimizer(1e-3, generator_momentum=bad)


def test_train_config_carries_write_back_and_momentum():
    config = TrainConfig(write_back=True, positions=64, strategy="sparse-scan")
    assert config.kernel_strategy().write_back  # pyright: ignore[reportAttributeAccessIssue]
    assert TrainConfig.from_json(config.to_json()) == config
    # A configuration saved before these fields existed was the paper's step.
    saved = TrainConfig().to_json()
    del saved["write_back"], saved["generator_momentum"]
    old = TrainConfig.from_json(saved)
    assert not old.write_back and old.generator_momentum == 0.9
    new = TrainConfig()
    assert new.write_back and new.generator_momentum is None and new.momentum == 0.0
    assert TrainConfig(strategy="scan").momentum == 0.9  # no stored kernel to wait for
    assert TrainConfig(strategy="scan", generator_momentum=0.5).momentum == 0.5
    params = eqx.filter(make_model("hw", in_channels=1, num_classes=2, width=2, depth=1,
                                   key=jax.random.key(0)), eqx.is_inexact_array)  # fmt: skip
    structure = lambda optimizer: jax.tree.structure(optimizer.init(params))  # noqa: E731
    assert structure(old.optimizer()) == structure(optax.adam(old.lr))
    assert structure(new.optimizer()) == structure(make_optimizer(1e-3, generator_momentum=0.0))
    assert structure(new.optimizer()) != structure(optax.adam(new.lr))
    with pytest.raises(ValueError, match="`generator_momentum`"):
        TrainConfig(generator_momentum=1.0)
    with raises_naming("write_back", ValueError, checker=True):
        TrainConfig(write_back="yes")  # pyright: ignore[reportArgumentType]


def test_cli_options(capsys):
    from cfconv import cli

    for argv, name in ((["--generator-momentum", "1"], "--generator-momentum"),):
        with pytest.raises(SystemExit):
            cli.main(["train", *argv])
        assert name in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--write-back" in out and "--no-write-back" in out
