"""Training steps, the training loop, checkpoints and resume, and the command line."""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

import cfconv
from cfconv import cli
from cfconv.data import Dataset
from cfconv.models import make_model
from cfconv.train import (
    NonFiniteLossError,
    TrainConfig,
    fit,
    generator_labels,
    load_checkpoint,
    load_metadata,
    loss_and_accuracy,
    make_eval_step,
    make_optimizer,
    make_train_step,
    save_checkpoint,
)
from helpers import checker_modes, raises_naming


def _toy_dataset(n: int, size: int = 8, seed: int = 0) -> Dataset:
    """Horizontal (class 1) or vertical (class 0) stripes of random period and phase, in
    noise: a translation-invariant task, learnable by circular (Fourier) convolutions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    period = rng.uniform(2.5, 5, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    along = np.where(labels[:, None, None] == 1, rows[None], cols[None])
    stripes = np.sin(2 * np.pi * along / period + phase)
    images = 128 + 70 * stripes + rng.normal(0, 25, (n, size, size))
    images = np.clip(images, 0, 255)[..., None]
    return Dataset(images.astype(np.uint8), labels.astype(np.int32), ("vertical", "horizontal"))


SMALL = dict(width=4, depth=2, image_size=8, batch_size=16, seed=0)


def test_loss_and_accuracy_against_numpy():
    logits = jnp.asarray([[2.0], [-1.0], [0.5]])
    labels = jnp.asarray([1, 1, 0])
    loss, accuracy = loss_and_accuracy(logits, labels)
    z, y = np.array([2.0, -1.0, 0.5]), np.array([1, 1, 0])
    expected = np.mean(
        -(y * np.log(1 / (1 + np.exp(-z))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-z))))
    )
    assert np.isclose(float(loss), expected, rtol=1e-6)
    assert np.isclose(float(accuracy), 1 / 3)
    logits = jnp.asarray([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
    loss, accuracy = loss_and_accuracy(logits, jnp.asarray([2, 1]))
    probs = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(1, keepdims=True)
    assert np.isclose(float(loss), -np.mean(np.log([probs[0, 2], probs[1, 1]])), rtol=1e-6)
    assert np.isclose(float(accuracy), 0.5)


@pytest.mark.parametrize("name", ["spatial", "hw_cin_cout"])
def test_train_step_shapes_and_metrics(name):
    model = make_model(name, in_channels=1, num_classes=3, width=4, depth=2, key=jax.random.key(0))
    states = model.init_states((8, 8), key=jax.random.key(1))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_train_step(optimizer, cfconv.Sparse(num=64), (8, 8))
    images = jax.random.uniform(jax.random.key(2), (5, 1, 8, 8))
    labels = jnp.asarray([0, 1, 2, 0, 1])
    new_model, new_states, opt_state, metrics = step(
        model, states, opt_state, images, labels, jax.random.key(3)
    )
    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["loss"].shape == () and np.isfinite(float(metrics["loss"]))
    assert 0 <= float(metrics["accuracy"]) <= 1
    assert jax.tree.structure(new_states) == jax.tree.structure(states)
    assert eqx.tree_equal(jax.tree.structure(new_model), jax.tree.structure(model))
    evaluate = make_eval_step((8, 8))
    totals = evaluate(new_model, new_states, images, labels)
    assert int(totals["count"]) == 5
    assert 0 <= float(totals["correct"]) <= 5


@pytest.mark.parametrize("strategy", ["naive", "remat", "scan", "sparse-scan", "sparse-vmap"])
def test_every_strategy_learns_the_toy_task(strategy):
    data = _toy_dataset(256)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    # Sparse updates: a quarter of the grid per step, blended at rate 0.5.
    config = TrainConfig(model="hw_cin_cout", strategy=strategy, positions=160, rate=0.5,
                         chunk_size=100, epochs=4, lr=1e-3, augment=False, **SMALL)  # fmt: skip
    result = fit(config, train, val, log=None)
    losses = [e["train_loss"] for e in result["epochs"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert result["val_acc"] > 0.7


def test_spatial_baseline_learns_the_toy_task():
    data = _toy_dataset(256)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    config = TrainConfig(model="spatial", epochs=4, lr=3e-3, augment=False, **SMALL)
    result = fit(config, train, val, log=None)
    assert result["epochs"][-1]["train_loss"] < 0.8 * result["epochs"][0]["train_loss"]
    assert result["val_acc"] > 0.7


def test_checkpoint_round_trip(tmp_path):
    model = make_model("hw", in_channels=1, num_classes=2, width=4, depth=2, key=jax.random.key(0))
    states = model.init_states((8, 8), key=jax.random.key(1))
    tree = (model, states, jax.random.key_data(jax.random.key(5)))
    path = tmp_path / "sub" / "c.eqx"
    save_checkpoint(path, tree, {"epoch": 3, "note": "x"})
    assert load_metadata(path) == {"epoch": 3, "note": "x"}
    like = (
        make_model("hw", in_channels=1, num_classes=2, width=4, depth=2, key=jax.random.key(9)),
        model.init_states((8, 8), key=jax.random.key(9)),
        jax.random.key_data(jax.random.key(0)),
    )
    loaded, metadata = load_checkpoint(path, like)
    assert metadata["epoch"] == 3
    assert eqx.tree_equal(eqx.filter(loaded, eqx.is_array), eqx.filter(tree, eqx.is_array))
    # No temporary files are left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.eqx"]


def test_checkpoint_write_is_atomic(tmp_path):
    path = tmp_path / "c.eqx"
    save_checkpoint(path, (jnp.ones(3),), {"epoch": 1})
    before = path.read_bytes()

    # A tree that fails half-way through serialisation (a typed PRNG key cannot be saved
    # as it is, only its key data) must leave the old file intact.
    bad = (jnp.zeros(3), jax.random.key(0))
    with pytest.raises(Exception):
        save_checkpoint(path, bad, {"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.eqx"]
    with pytest.raises(ValueError, match="`path`"):
        load_checkpoint(tmp_path / "missing.eqx", (jnp.ones(3),))
    (tmp_path / "junk.eqx").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="`path`"):
        load_metadata(tmp_path / "junk.eqx")


_COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def _history(result) -> list[list]:
    """A run's per-epoch metrics that a resumed run must reproduce exactly."""
    return [[epoch[k] for k in _COMPARED] for epoch in result["epochs"]]


@pytest.mark.parametrize(
    "model, sampling",
    [("spatial", "uniform"), ("hw_cin_cout", "uniform"), ("hw_cin_cout", "stratified")],
)
def test_resume_reproduces_an_uninterrupted_run(tmp_path, model, sampling):
    data = _toy_dataset(96)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    config = TrainConfig(model=model, positions=64, epochs=3, sampling=sampling, **SMALL)
    full = fit(config, train, val, checkpoint_dir=tmp_path / "a", log=None)
    fit(dataclasses.replace(config, epochs=1), train, val, checkpoint_dir=tmp_path / "b",
        log=None)  # fmt: skip
    resumed = fit(config, train, val, checkpoint_dir=tmp_path / "b", resume=True, log=None)
    assert _history(resumed) == _history(full)
    # A resumed run refuses other settings (except the number of epochs).
    other = dataclasses.replace(config, seed=1)
    with pytest.raises(ValueError, match="seed"):
        fit(other, train, val, checkpoint_dir=tmp_path / "b", resume=True, log=None)


def test_resume_reproduces_an_interrupted_cosine_run(tmp_path, monkeypatch):
    data = _toy_dataset(96)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    config = TrainConfig(model="hw_cin_cout", positions=64, epochs=3, lr_schedule="cosine",
                         **SMALL)  # fmt: skip
    full = fit(config, train, val, checkpoint_dir=tmp_path / "a", log=None)
    real_save = cfconv.train._loop.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(cfconv.train._loop, "save_checkpoint", save_then_crash)
        with pytest.raises(KeyboardInterrupt):  # after the first epoch's checkpoint
            fit(config, train, val, checkpoint_dir=tmp_path / "b", log=None)
    resumed = fit(config, train, val, checkpoint_dir=tmp_path / "b", resume=True, log=None)
    assert _history(resumed) == _history(full)
    # The decay spans the run's epochs: a cosine run cannot be extended.
    longer = dataclasses.replace(config, epochs=4)
    with pytest.raises(ValueError, match="epochs=3 \\(now 4\\)"):
        fit(longer, train, val, checkpoint_dir=tmp_path / "b", resume=True, log=None)


class _Params(eqx.Module):
    generator: jax.Array
    head: jax.Array


def test_cosine_schedule_decays_both_learning_rates():
    params = _Params(jnp.zeros(3), jnp.zeros(2))
    optimizer = make_optimizer(1e-2, generator_lr=1e-4, generator_momentum=0.0,
                               lr_schedule="cosine", total_steps=4)  # fmt: skip
    opt_state = optimizer.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for k in range(6):
        # With a constant gradient every Adam step has the size of its learning rate.
        updates, opt_state = optimizer.update(grads, opt_state, params)
        factor = 0.5 * (1 + math.cos(math.pi * min(k, 4) / 4))
        np.testing.assert_allclose(updates.generator, -1e-4 * factor, rtol=1e-3, atol=1e-12)
        np.testing.assert_allclose(updates.head, -1e-2 * factor, rtol=1e-3, atol=1e-12)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    data = _toy_dataset(64)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    config = TrainConfig(model="spatial", epochs=3, **SMALL)
    real = make_train_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        step = real(*args, **kwargs)

        def wrapped(*a):
            out = step(*a)
            calls["n"] += 1
            if calls["n"] > 3:  # epoch 2 (3 steps per epoch) goes wrong
                out[3]["loss"] = jnp.nan
            return out

        return wrapped

    monkeypatch.setattr("cfconv.train._loop.make_train_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="epoch 2"):
        fit(config, train, val, checkpoint_dir=tmp_path, log=None)
    assert load_metadata(tmp_path / "checkpoint.eqx")["epoch"] == 1


def _image_folder(root, n_per_class=12, size=10):
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            array[:, : size // 2] //= 1 + c
            Image.fromarray(array).save(root / name / f"{i}.png")


def test_cli_train_on_an_image_folder(tmp_path, capsys):
    _image_folder(tmp_path / "images")
    out = tmp_path / "metrics.json"
    code = cli.main(["train", "--data", str(tmp_path / "images"), "--image-size", "8",
                     "--model", "hw", "--width", "4", "--depth", "2", "--epochs", "2",
                     "--batch-size", "4", "--metrics-out", str(out),
                     "--checkpoint", str(tmp_path / "ckpt")])  # fmt: skip
    assert code == 0
    metrics = json.loads(out.read_text())
    assert len(metrics["epochs"]) == 2
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "step_time", "examples_per_s"):
        assert key in metrics["epochs"][0]
    assert metrics["params"] > 0 and metrics["val_acc"] == metrics["epochs"][-1]["val_acc"]
    assert "final validation accuracy" in capsys.readouterr().out
    # Resume to 3 epochs: one more epoch is appended.
    code = cli.main(["train", "--data", str(tmp_path / "images"), "--image-size", "8",
                     "--model", "hw", "--width", "4", "--depth", "2", "--epochs", "3",
                     "--batch-size", "4", "--metrics-out", str(out),
                     "--checkpoint", str(tmp_path / "ckpt"), "--resume"])  # fmt: skip
    assert code == 0
    assert [e["epoch"] for e in json.loads(out.read_text())["epochs"]] == [1, 2, 3]


def test_cli_train_on_the_digits(tmp_path):
    out = tmp_path / "m.json"
    argv = ["train", "--model", "spatial", "--width", "4", "--depth", "2", "--epochs", "1"]
    code = cli.main([*argv, "--max-per-class", "20", "--metrics-out", str(out)])
    assert code == 0
    metrics = json.loads(out.read_text())
    assert metrics["config"]["image_size"] == 8
    if jax.device_count() == 1:  # no --mesh on one device: no mesh
        assert metrics["mesh"] is None


@pytest.mark.skipif(jax.device_count() != 1, reason="needs a single device")
def test_cli_mesh_only_when_asked_for_on_one_device():
    from argparse import Namespace

    from cfconv._train_cli import make_train_mesh

    args = Namespace(mesh=None, batch_size=8, width=4, model="hw")
    assert make_train_mesh(args, "cfconv train") is None
    mesh = make_train_mesh(Namespace(**{**vars(args), "mesh": (1, 1)}), "cfconv train")
    assert mesh is not None and mesh.devices.shape == (1, 1)


@pytest.mark.parametrize("command", [[], ["train"], ["demo"], ["filters"]])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: cfconv" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--model", "resnet"], "--model"),
        (["train", "--strategy", "dense"], "--strategy"),
        (["train", "--rate", "0"], "--rate"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--mlp-hidden", "3,x"], "--mlp-hidden"),
        (["train", "--resume"], "--resume"),
        (["train", "--generator", "tanh"], "--generator"),
        (["train", "--generator-lr", "0"], "--generator-lr"),
        (["train", "--frequency-scale", "0"], "--frequency-scale"),
        (["train", "--frequency-scale", "nan"], "--frequency-scale"),
        (["train", "--generator-weight-decay", "-1"], "--generator-weight-decay"),
    ],
)
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code != 0
    captured = capsys.readouterr()
    assert message in captured.err + str(info.value.code)


def test_dense_training_stores_the_final_generators_kernels(tmp_path):
    """After dense training, the stored kernels (used by evaluation and saved in the
    checkpoint) are the generators' kernels for the final parameters."""
    data = _toy_dataset(64)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    config = TrainConfig(model="hw_cin_cout", strategy="naive", epochs=1, **SMALL)
    fit(config, train, val, checkpoint_dir=tmp_path, log=None)
    model = make_model("hw_cin_cout", in_channels=1, num_classes=2, width=4, depth=2,
                       key=jax.random.key(0))  # fmt: skip
    states = model.init_states((8, 8), key=jax.random.key(1))
    opt_state = config.optimizer().init(eqx.filter(model, eqx.is_inexact_array))
    like = (model, states, opt_state, jax.random.key_data(jax.random.key(0)))
    (model, states, _, _), _ = load_checkpoint(tmp_path / "checkpoint.eqx", like)
    for layer, state in zip(model.layers, states):
        np.testing.assert_allclose(
            np.asarray(state.kernel), np.asarray(layer.generator.materialize((8, 8))),
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip


def test_cli_rejects_a_negative_seed(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--seed", "-1"])
    assert "--seed" in capsys.readouterr().err


def test_make_optimizer_gives_generators_their_own_learning_rate():
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=4, depth=2,
                       key=jax.random.key(0))  # fmt: skip
    params = eqx.filter(model, eqx.is_inexact_array)
    labels = generator_labels(params)
    for layer, layer_labels in zip(model.layers, labels.layers):
        assert set(jax.tree.leaves(layer_labels.generator)) == {"generator"}
        assert layer_labels.bias == "other"
    assert set(jax.tree.leaves(labels.head)) == {"other"}
    # One Adam step moves every parameter by its learning rate (times the sign of its
    # gradient, which is +1 here).
    grads = jax.tree.map(jnp.ones_like, params)
    optimizer = make_optimizer(1e-2, generator_lr=1e-4)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    for update, label in zip(jax.tree.leaves(updates), jax.tree.leaves(labels)):
        expected = -1e-4 if label == "generator" else -1e-2
        np.testing.assert_allclose(np.asarray(update), expected, rtol=1e-3)
    # Without generator_lr it is plain Adam.
    plain, _ = make_optimizer(1e-2).update(grads, optax.adam(1e-2).init(params), params)
    np.testing.assert_allclose(jax.tree.leaves(plain)[0], -1e-2, rtol=1e-3)


def test_generator_weight_decay_shrinks_only_the_generators_weight_matrices():
    """One step against the closed form: Adam's first step is `-rate * sign(gradient)`,
    and decoupled weight decay adds `-rate * decay * weight` on the generator MLPs'
    weight matrices only (not their biases, nor anything outside a generator)."""
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=4, depth=2,
                       key=jax.random.key(0))  # fmt: skip
    # Shifted off zero: the generators' biases start at 0, where decay would not show.
    params = jax.tree.map(lambda p: p + 0.5, eqx.filter(model, eqx.is_inexact_array))
    grads = jax.tree.map(jnp.ones_like, params)
    rate, decay = 1e-2, 0.5
    optimizer = make_optimizer(1e-3, generator_lr=rate, generator_momentum=0.0,
                               generator_weight_decay=decay)  # fmt: skip
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    decayed = 0
    for (path, update), param in zip(jax.tree_util.tree_leaves_with_path(updates),
                                     jax.tree.leaves(params)):  # fmt: skip
        names = [getattr(k, "name", None) for k in path]
        if "generator" not in names:
            expected = -1e-3 * np.ones_like(param)
        elif names[-1] == "weight":
            expected = -rate * (1 + decay * np.asarray(param))
            decayed += 1
        else:
            assert names[-1] == "bias", names
            expected = -rate * np.ones_like(param)
        np.testing.assert_allclose(np.asarray(update), expected, rtol=1e-3, atol=1e-7)
    # Every generator layer of both CF-Convs, real and imaginary MLPs.
    assert decayed == 2 * 2 * len(model.layers[0].generator.real.layers)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(generator_lr=0.0), "generator_lr"), (dict(lr=-1.0), "lr"),
     (dict(generator_weight_decay=-0.1), "generator_weight_decay"),
     (dict(generator_weight_decay=float("nan")), "generator_weight_decay")],
)  # fmt: skip
def test_make_optimizer_rejects_bad_rates(kwargs, name):
    arguments = dict(lr=1e-3) | kwargs
    with pytest.raises(ValueError, match=name):
        make_optimizer(**arguments)


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(lr_schedule="linear"), "lr_schedule"), (dict(lr_schedule="cosine"), "total_steps"),
     (dict(lr_schedule="cosine", total_steps=0), "total_steps")],
)  # fmt: skip
def test_make_optimizer_rejects_bad_schedules(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_optimizer(1e-3, **kwargs)


def test_train_config_schedules(monkeypatch):
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")
    cosine = TrainConfig(lr_schedule="cosine", epochs=3)
    for bad in (None, 0):
        with pytest.raises(ValueError, match="`steps_per_epoch`"):
            cosine.optimizer(bad)
    # Checkpoints from before the schedule existed trained at a constant rate.
    old = cosine.to_json()
    del old["lr_schedule"]
    assert TrainConfig.from_json(old).lr_schedule == "constant"
    # `fit` spans the decay over the run's steps: 3 epochs of 50 // 16 = 3 full batches.
    seen = []
    real = cfconv.train._config.make_optimizer

    def spy(*args, **kwargs):
        seen.append(kwargs["total_steps"])
        return real(*args, **kwargs)

    monkeypatch.setattr(cfconv.train._config, "make_optimizer", spy)
    data = _toy_dataset(50)
    config = TrainConfig(model="spatial", epochs=3, lr_schedule="cosine", **SMALL)
    fit(config, data, data, log=None)
    assert seen == [3 * (50 // 16)]


@pytest.mark.parametrize(
    "kwargs, name, exception",
    [
        (dict(generator="tanh"), "generator", ValueError),
        (dict(generator_lr=-1e-3), "generator_lr", ValueError),
        (dict(frequency_scale=0.0), "frequency_scale", ValueError),
        (dict(frequency_scale=float("inf")), "frequency_scale", ValueError),
        (dict(frequency_scale=True), "frequency_scale", TypeError),
        (dict(frequency_scale="2"), "frequency_scale", TypeError),
        (dict(generator_weight_decay=-1.0), "generator_weight_decay", ValueError),
        (dict(generator_weight_decay=float("nan")), "generator_weight_decay", ValueError),
    ],
)
@checker_modes
def test_train_config_rejects_bad_generator_settings(kwargs, name, exception, checker):
    with raises_naming(name, exception, checker=checker):
        TrainConfig(**kwargs)


def test_train_config_builds_the_chosen_generator(tmp_path, monkeypatch):
    import cfconv.train._config as config_module

    built = {}

    def spy(name, **kwargs):
        built.update(kwargs)
        return make_model(name, **kwargs)

    monkeypatch.setattr(config_module, "make_model", spy)  # fit builds through the config
    data = _toy_dataset(64)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    config = TrainConfig(model="hw_cin_cout", generator="relu", generator_lr=1e-4, epochs=1,
                         positions=64, augment=False, frequency_scale=0.5,
                         generator_weight_decay=0.25, **SMALL)  # fmt: skip
    fit(config, train, val, checkpoint_dir=tmp_path, log=None)
    assert built["generator"] == "relu"
    assert built["frequency_scale"] == 0.5
    metadata = load_metadata(tmp_path / "checkpoint.eqx")
    assert metadata["config"]["generator"] == "relu"
    assert metadata["config"]["generator_lr"] == 1e-4
    assert metadata["config"]["frequency_scale"] == 0.5
    assert metadata["config"]["generator_weight_decay"] == 0.25
    # Configurations saved before the field existed built the generator's own scale.
    old = {k: v for k, v in metadata["config"].items() if k != "frequency_scale"}
    assert TrainConfig.from_json(old).frequency_scale is None
    relu = make_model("hw_cin_cout", width=4, depth=2, generator="relu", key=jax.random.key(0))
    sine = make_model("hw_cin_cout", width=4, depth=2, key=jax.random.key(0))
    assert relu.layers[0].generator.real.activation is jax.nn.relu
    assert sine.layers[0].generator.real.activation is cfconv.fast_sin


def test_kernel_concentration_on_images_smaller_than_three_pixels():
    """On 2x2 images no 3x3 window fits: fit records the share at the origin instead of
    failing after the first epoch."""
    data = _toy_dataset(32, size=2)
    config = TrainConfig(model="hw_cin_cout", positions=8, epochs=1, augment=False,
                         **(SMALL | dict(image_size=2)))  # fmt: skip
    result = fit(config, data, data, log=None)
    shares = result["epochs"][-1]["kernel_concentration"]
    assert len(shares) == 2 and all(0 < v < 1 for v in shares)


def test_kernel_lag_is_recorded_for_sparse_runs(tmp_path):
    data = _toy_dataset(64)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    config = TrainConfig(model="hw_cin_cout", strategy="sparse-vmap", positions=64, epochs=1,
                         augment=False, sampling="uniform", state_init="uniform",
                         **SMALL)  # fmt: skip
    result = fit(config, train, val, checkpoint_dir=tmp_path, log=None)
    lag = result["epochs"][-1]["kernel_lag"]
    # Independently: the saved stored kernels against the saved generators' kernels.
    like_model = make_model("hw_cin_cout", in_channels=1, num_classes=2, width=4, depth=2,
                            key=jax.random.key(1))  # fmt: skip
    # With error feedback (the default) the saved states hold residuals.
    like_states = tuple(
        s.with_residual() for s in like_model.init_states((8, 8), key=jax.random.key(2))
    )
    optimizer = config.optimizer()
    like = (like_model, like_states, optimizer.init(eqx.filter(like_model, eqx.is_inexact_array)),
            jax.random.key_data(jax.random.key(0)))  # fmt: skip
    (model, states, _, _), _ = load_checkpoint(tmp_path / "checkpoint.eqx", like)
    expected = []
    for layer, state in zip(model.layers, states):
        generated = np.asarray(layer.generator.materialize((8, 8)), np.complex128)
        stored = np.asarray(state.kernel, np.complex128)
        expected.append(np.linalg.norm(stored - generated) / np.linalg.norm(generated))
    np.testing.assert_allclose(lag, expected, rtol=1e-3)
    # The stored spatial kernels' energy within 3x3 of the origin, by numpy's inverse FFT.
    shares = []
    for state in states:
        energy = np.fft.irfft2(np.asarray(state.kernel, np.complex128), s=(8, 8)) ** 2
        near = energy[..., [7, 0, 1], :][..., [7, 0, 1]]
        shares.append(near.sum() / energy.sum())
    np.testing.assert_allclose(result["epochs"][-1]["kernel_concentration"], shares, rtol=1e-4)
    # 64 positions a step at rate 0.1 leave the stored kernel far from the generator's.
    assert min(lag) > 0.1
    # The network with the generators' kernels, on the validation set standardised by
    # the training set's statistics.
    pixels = np.asarray(train.images, np.float64) / 255.0
    mean, std = pixels.mean(), max(pixels.std(), 1e-3)
    images = ((np.asarray(val.images, np.float64) / 255.0 - mean) / std).astype(np.float32)
    images = images.transpose(0, 3, 1, 2)  # batches are (n, channels, h, w)
    kernels = tuple(layer.generator.materialize((8, 8)) for layer in model.layers)
    logits = jax.vmap(model, in_axes=(0, None))(jnp.asarray(images), kernels)
    labels = np.asarray(val.labels)
    predicted = (np.asarray(logits)[:, 0] > 0).astype(labels.dtype)
    record = result["epochs"][-1]
    # Not the stored kernels' figures (the kernels are far apart).
    assert record["val_loss_generated"] != pytest.approx(record["val_loss"], rel=1e-3)
    assert record["val_acc_generated"] == pytest.approx(np.mean(predicted == labels))
    z = np.asarray(logits, np.float64)[:, 0]
    bce = np.mean(np.maximum(z, 0) - z * labels + np.log1p(np.exp(-np.abs(z))))
    assert record["val_loss_generated"] == pytest.approx(bce, rel=1e-4)
    dense = TrainConfig(model="hw_cin_cout", strategy="naive", epochs=1, augment=False, **SMALL)
    assert "kernel_lag" not in fit(dense, train, val, log=None)["epochs"][-1]


@pytest.mark.parametrize("sampling", ["uniform", "stratified"])
def test_state_init_generator_starts_the_stored_kernels_at_the_generators(sampling):
    data = _toy_dataset(64)
    train, val = cfconv.data.train_val_split(data, val_fraction=0.25, seed=0)
    # A learning rate so small that the generators stay put: the stored kernels then stay
    # at their kernels if they started there, and far from them if they started as noise.
    config = TrainConfig(model="hw_cin_cout", positions=64, epochs=1, lr=1e-12,
                         sampling=sampling, state_init="generator", **SMALL)  # fmt: skip
    lag = fit(config, train, val, log=None)["epochs"][-1]["kernel_lag"]
    assert max(lag) < 1e-3
    noise = dataclasses.replace(config, state_init="uniform")
    assert min(fit(noise, train, val, log=None)["epochs"][-1]["kernel_lag"]) > 0.1
    old = config.to_json()
    del old["state_init"]
    assert TrainConfig.from_json(old).state_init == "uniform"
    with pytest.raises(ValueError, match="`state_init`"):
        TrainConfig(state_init="zeros")


def test_per_epoch_kernel_generation_is_jitted():
    # Run eagerly, generating every kernel (at the start, after each dense epoch and for
    # each sparse epoch's kernel lag) dispatches each primitive op by op: much slower.
    jitted = type(eqx.filter_jit(lambda x: x))
    assert isinstance(cfconv.train._loop._generated_states, jitted)
