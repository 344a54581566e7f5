"""Per-layer strategies (`cfconv.Layerwise`) and per-layer positions (`--positions all,N`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cfconv
from cfconv import cli
from cfconv.distributed import ShardedSparse, make_mesh
from cfconv.distributed._strategy import shard_strategy
from cfconv.models import CFConvNet, make_model
from cfconv.train import TrainConfig, fit
from cfconv.train._config import layer_positions
from helpers import raises_naming, train_steps, tree_allclose


SIZE = (6, 6)


def _net(depth=2) -> tuple[CFConvNet, tuple]:
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=4, depth=depth,
                       mlp_hidden=(8,), key=jax.random.key(0))  # fmt: skip
    assert isinstance(model, CFConvNet)
    return model, model.init_states(SIZE, key=jax.random.key(1))


def test_each_layer_runs_its_own_strategy():
    model, states = _net()
    strategy = cfconv.Layerwise([cfconv.Sparse(None), cfconv.Sparse(20)])
    kernels, _ = model.kernels(states, SIZE, strategy, key=jax.random.key(2))
    first = model.layers[0].generator.grid_shape(SIZE)
    k0, k1 = kernels
    assert isinstance(k0, cfconv.SparseKernel) and isinstance(k1, cfconv.SparseKernel)
    # The first layer's grid whole, each position once; 20 positions in the second.
    assert sorted(np.asarray(k0.positions).tolist()) == list(range(int(np.prod(first))))
    assert k1.positions.shape == (20,)
    # The same strategy in every layer is that strategy.
    same = cfconv.Sparse(15, rate=0.3)
    got = model.kernels(states, SIZE, cfconv.Layerwise([same, same]), key=jax.random.key(3))
    assert tree_allclose(got, model.kernels(states, SIZE, same, key=jax.random.key(3)))
    assert same.for_layer(5) is same


def test_properties_are_any_layers():
    plain, feedback = cfconv.Sparse(10), cfconv.Sparse(10, error_feedback=True)
    stratified = cfconv.Sparse(10, sampling="stratified")
    mixed = cfconv.Layerwise([plain, feedback, stratified])
    assert mixed.needs_residual and mixed.needs_state_gradient
    assert mixed.needs_frequency_weights and mixed.needs_key
    assert not cfconv.Layerwise([plain, cfconv.Stored()]).needs_state_gradient
    assert mixed.for_layer(1) is feedback


def test_errors():
    model, states = _net()
    with raises_naming("strategies", ValueError, checker=True):
        cfconv.Layerwise([])
    with raises_naming("strategies", TypeError, checker=True):
        cfconv.Layerwise(["sparse"])  # pyright: ignore[reportArgumentType]
    with raises_naming("strategies", TypeError, checker=True):
        cfconv.Layerwise([cfconv.Layerwise([cfconv.Sparse(4)])])
    with raises_naming("strategies", ValueError, checker=True):
        cfconv.Layerwise([cfconv.Sparse(4), cfconv.Dense()])  # it regenerates its states
    three = cfconv.Layerwise([cfconv.Sparse(4)] * 3)
    with raises_naming("index", ValueError, checker=True):
        three.for_layer(3)
    with raises_naming("strategy", ValueError, checker=True):
        model.kernels(states, SIZE, three, key=jax.random.key(0))
    with pytest.raises(TypeError, match="for_layer"):
        three(model.layers[0].generator, states[0], SIZE, key=jax.random.key(0))
    with raises_naming("num", ValueError, checker=True):
        cfconv.Sparse(0)


def test_train_step_with_mixed_layers_on_one_device_mesh():
    """Error feedback in the first layer only: the step passes the state gradient to that
    layer alone, and on a mesh each `Sparse` becomes a `ShardedSparse` with the same
    results."""
    model, states = _net()
    states = tuple(s.with_residual() for s in states)
    strategy = cfconv.Layerwise([cfconv.Sparse(None, error_feedback=True, write_back=True),
                                 cfconv.Sparse(30, write_back=True)])  # fmt: skip
    sharded = shard_strategy(strategy, make_mesh(1, 1))
    assert isinstance(sharded, cfconv.Layerwise)
    assert all(isinstance(s, ShardedSparse) for s in sharded.strategies)
    images = jax.random.normal(jax.random.key(2), (8, 1, *SIZE))
    labels = jnp.arange(8) % 3
    optimizer = optax.adam(1e-2)
    outs = [train_steps(model, states, strategy, SIZE, images, labels, optimizer=optimizer,
                        mesh=mesh) for mesh in (None, make_mesh(1, 1))]  # fmt: skip
    assert tree_allclose(outs[0], outs[1])
    first, second = outs[0][1]
    # The first layer is sampled whole every step: nothing is left in its residual. The
    # second keeps no residual of its own (the zeros it started with).
    assert not np.any(np.asarray(first.residual))
    assert not np.any(np.asarray(second.residual))
    assert not np.allclose(np.asarray(second.kernel), np.asarray(states[1].kernel))


def test_train_config_positions_per_layer():
    config = TrainConfig(positions=("all", 64), depth=3, width=4)
    strategy = config.kernel_strategy()
    assert isinstance(strategy, cfconv.Layerwise)
    nums = [s.num for s in strategy.strategies]  # pyright: ignore[reportAttributeAccessIssue]
    assert nums == [None, 64, 64]
    assert all(s.error_feedback for s in strategy.strategies)  # pyright: ignore
    assert TrainConfig.from_json(config.to_json()) == config
    assert isinstance(TrainConfig(positions=64).kernel_strategy(), cfconv.Sparse)
    scan = TrainConfig(positions=(8, 16), strategy="sparse-scan", chunk_size=4)
    assert [s.chunk_size for s in scan.kernel_strategy().strategies] == [4] * 6  # pyright: ignore
    # Entries beyond the layers are not used.
    long = TrainConfig(positions=("all",) * 3 + (9,), depth=2).kernel_strategy()
    assert [s.num for s in long.strategies] == [None, None]  # pyright: ignore
    assert [layer_positions(("all", 5), i) for i in range(3)] == [None, 5, 5]
    assert layer_positions(7, 4) == 7
    for bad in (0, "all", (), (0, 4), ("some",), True, "20", "0%", ("all", "101%"), "x%"):
        with raises_naming("positions", ValueError, checker=True):
            TrainConfig(positions=bad)  # pyright: ignore[reportArgumentType]


def test_positions_as_shares_of_each_grid():
    # "N%" entries become Sparse(share=N/100) with no fixed number, layer by layer.
    strategy = TrainConfig(positions=("all", "20%", 64), depth=3).kernel_strategy()
    first, second, third = strategy.strategies  # pyright: ignore[reportAttributeAccessIssue]
    assert (first.num, first.share) == (None, None)
    assert (second.num, second.share) == (None, 0.2)
    assert (third.num, third.share) == (64, None)
    assert TrainConfig(positions="2.5%").kernel_strategy().share == 0.025  # pyright: ignore
    assert [layer_positions(("all", "20%"), i) for i in range(3)] == [None, "20%", "20%"]
    # So a share samples the same part of grids of every size (32 x 32 layers).
    for image, expected in ((8, 8192), (16, 29491), (150, 2334720)):
        size = 32 * 32 * image * (image // 2 + 1)
        assert second.count(size) == expected


def test_cli_positions(capsys):
    import argparse

    from cfconv._train_cli import add_train_arguments, train_config

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--positions", "all,4096"])
    assert train_config(args, image_size=8, seed=0).positions == ("all", 4096)
    assert parser.parse_args(["--positions", "512"]).positions == 512
    assert parser.parse_args(["--positions", "all, 20%"]).positions == ("all", "20%")
    assert parser.parse_args(["--positions", "12.5%"]).positions == "12.5%"
    for bad in ("0", "all,x", "4096,-1", "0%", "all,120%", "%"):
        with pytest.raises(SystemExit):
            cli.main(["train", "--positions", bad])
        assert "--positions" in capsys.readouterr().err


def test_cli_defaults_are_the_configs():
    import argparse

    from cfconv._train_cli import add_train_arguments, train_config

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    config = train_config(parser.parse_args([]), image_size=8, seed=0)
    assert config == TrainConfig(image_size=8, seed=0)
    # The first layer whole, a fifth of the grid in the others: 8192 of a 32 -> 32
    # layer's 8 x 5 x 32 x 32 entries on the digits.
    assert config.positions == ("all", "20%")
    first, second, *_ = config.kernel_strategy().strategies  # pyright: ignore
    assert (first.num, first.share) == (None, None)
    assert second.count(8 * 5 * 32 * 32) == 8192


def test_fit_with_per_layer_positions(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 8, 8, 1), dtype=np.uint8)
    data = cfconv.data.Dataset(images, (np.arange(48) % 2).astype(np.int32), ("a", "b"))
    # A share of the second layer's grid (4 x 4 x 8 x 5 entries): 160 positions.
    config = TrainConfig(positions=("all", "25%"), epochs=1, batch_size=16, width=4, depth=2,
                         mlp_hidden=(8,), augment=False)  # fmt: skip
    result = fit(config, data, data, checkpoint_dir=tmp_path, log=None)
    assert tuple(result["config"]["positions"]) == ("all", "25%")
    assert len(result["epochs"][0]["kernel_lag"]) == 2
    resumed = fit(config, data, data, checkpoint_dir=tmp_path, resume=True, log=None)
    assert resumed["epochs"] == result["epochs"]
    # The same positions per layer, written otherwise, resume too.
    same = TrainConfig(**{**config.to_json(), "positions": ("all", "25%", "25%"), "epochs": 2})
    assert len(fit(same, data, data, checkpoint_dir=tmp_path, resume=True,
                   log=None)["epochs"]) == 2  # fmt: skip
    # cfconv plot draws one step's positions per layer: the first layer's grid whole.
    from cfconv.experiments import plot_checkpoint

    paths = plot_checkpoint(tmp_path, tmp_path / "plots", layers=[0, 1])
    assert all(p.exists() for p in paths) and len(paths) == 4
