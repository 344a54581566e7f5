"""Trained models from `cfconv train` checkpoints, rebuilt without knowing the data they
were trained on (`cfconv plot` draws them)."""

import os
import pathlib
from typing import Any

import equinox as eqx
import jax
import numpy as np


def _record_shapes(path: pathlib.Path, count: int) -> list[tuple[int, ...]]:
    """The shapes of the first `count` arrays saved after a checkpoint's header."""
    with open(path, "rb") as f:
        f.readline()  # the magic line
        f.seek(int.from_bytes(f.read(8), "little"), os.SEEK_CUR)  # the JSON header
        shapes = []
        for _ in range(count):
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            shapes.append(tuple(shape))
            f.seek(int(np.prod(shape)) * dtype.itemsize, os.SEEK_CUR)
    return shapes


def _template(config, in_channels: int, num_classes: int, weights: bool | None = None,
              residual: bool = False):  # fmt: skip
    """What `cfconv train` saves, as shapes only: (model, states, opt_state, key_data);
    the states hold `frequency_weights` if `weights` (`None`: if `config` stratifies), and
    a `residual` if `residual`."""
    from ..train._sampling import stratifies, uniform_frequency_weights

    def build():
        key = jax.random.key(config.seed)
        k_model, k_states = jax.random.split(key)
        size = (config.image_size, config.image_size)
        model = config.build_model(in_channels, num_classes, key=k_model)
        states = model.init_states(size, key=k_states)
        stratified = stratifies(config.kernel_strategy(), model) if weights is None else weights
        if stratified:
            states = uniform_frequency_weights(states)
        if residual:
            states = tuple(state.with_residual() for state in states)
        # The optimizer state's structure does not depend on the run's length.
        opt_state = config.optimizer(steps_per_epoch=1).init(
            eqx.filter(model, eqx.is_inexact_array)
        )
        return model, states, opt_state, jax.random.key_data(key)

    return eqx.filter_eval_shape(build)


def _saved_shapes(tree) -> list[tuple[int, ...]]:
    leaves = jax.tree.leaves(tree)
    return [tuple(np.shape(x)) for x in leaves if eqx.is_array_like(x)
            or isinstance(x, jax.ShapeDtypeStruct)]  # fmt: skip


def load_trained_model(checkpoint: str | os.PathLike) -> tuple[Any, tuple, dict[str, Any]]:
    """Load the model and kernel states of a `cfconv train --checkpoint DIR` run.

    The checkpoint's metadata holds the training configuration but not the data's
    numbers of channels and classes; they are read from the shapes of the saved arrays
    (two shape-only templates tell which dimensions depend on them).

    **Arguments:**

    - `checkpoint`: the checkpoint folder (holding `checkpoint.eqx`) or the file.

    **Returns:**

    `(model, states, metadata)`, with the [`cfconv.train.TrainConfig`][] as a dict in
    `metadata["config"]`.
    """
    from ..train import TrainConfig, load_checkpoint, load_metadata

    path = pathlib.Path(checkpoint)
    if path.is_dir():
        path = path / "checkpoint.eqx"
    if not path.is_file():
        raise ValueError(f"`checkpoint` is neither a checkpoint file nor a folder holding one: "
                         f"{checkpoint}")  # fmt: skip
    metadata = load_metadata(path)
    config = TrainConfig.from_json(metadata["config"])
    # Checkpoints from before this field: the states hold weights if the config stratifies.
    weights = metadata.get("frequency_weights")
    residual = bool(metadata.get("residual", False))  # error feedback's, if trained with it
    first = _saved_shapes(_template(config, 1, 2, weights, residual))  # one output
    second = _saved_shapes(_template(config, 2, 5, weights, residual))  # five outputs
    saved = _record_shapes(path, len(first))
    in_channels, num_classes = None, None
    for a, b, s in zip(first, second, saved):
        for da, db, ds in zip(a, b, s):
            if (da, db) == (1, 2) and in_channels is None:
                in_channels = ds
            if (da, db) == (1, 5) and num_classes is None:
                num_classes = 2 if ds == 1 else ds
    if in_channels is None or num_classes is None:  # pragma: no cover - defensive
        raise ValueError(f"cannot tell the channels and classes of the checkpoint {path}")
    like = _template(config, in_channels, num_classes, weights, residual)
    (model, states, _, _), metadata = load_checkpoint(path, like)
    return model, states, metadata
