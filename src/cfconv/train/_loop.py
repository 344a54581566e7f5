"""The training loop behind `cfconv train`: epochs, evaluation, checkpoints, resume."""

import dataclasses
import json
import math
import os
import pathlib
import sys
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from .._custom_types import LogStream
from .._mlp import parameter_count
from .._spectral import kernel_concentration
from .._strategies import AbstractStrategy, Chunked
from ..data import Dataset, augment, batches, num_batches
from ..distributed._mesh import DATA_AXIS, as_mesh, mesh_info
from ..distributed._sharding import gather, shard
from ..models import CFConvNet
from ._checkpoint import atomic_write, load_checkpoint, load_metadata, save_checkpoint
from ._config import TrainConfig, layer_positions
from ._sampling import refresh_frequency_weights, stratifies, uniform_frequency_weights
from ._step import make_eval_step, make_train_step, standardizer


CHECKPOINT_FILE = "checkpoint.eqx"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


# Fields that may differ between a run and its resumption.
_RESUMABLE = {"epochs", "state_init"}  # state_init acts before the first epoch only


class _Progress:
    """A one-line progress bar on a terminal; one line per epoch otherwise."""

    def __init__(self, stream: LogStream | None, total: int, epoch: int, epochs: int):
        self.stream, self.total, self.epoch, self.epochs = stream, total, epoch, epochs
        isatty = getattr(stream, "isatty", None)  # a LogStream need not have one
        self.tty = callable(isatty) and bool(isatty())
        self.last = 0.0

    def update(self, step: int, loss, accuracy, rate: float):
        """Redraw at most five times a second; `loss` and `accuracy` may be device
        scalars, read (a device sync) only when drawing."""
        if self.stream is None or not self.tty:
            return
        now = time.perf_counter()
        if now - self.last < 0.2:
            return
        self.last = now
        loss, accuracy = float(loss), float(accuracy)
        filled = int(20 * step / max(1, self.total))
        bar = "#" * filled + "." * (20 - filled)
        self.stream.write(
            f"\repoch {self.epoch}/{self.epochs} [{bar}] {step}/{self.total} "
            f"loss {loss:.4f} acc {accuracy:.3f} {rate:.0f} ex/s"
        )
        self.stream.flush()

    def close(self, line: str):
        if self.stream is None:
            return
        self.stream.write(("\r" if self.tty else "") + line + " " * 10 + "\n")
        self.stream.flush()


def _per_layer(config: TrainConfig) -> list[int | str | None]:
    """`config.positions` for each layer (`None`: the whole grid)."""
    return [layer_positions(config.positions, i) for i in range(config.depth)]


@eqx.filter_jit
def _generated_states(model, states, image_size, chunk_size: int):
    """The states a dense strategy would store: every generator's kernel, in chunks."""
    return model.kernels(states, image_size, Chunked(chunk_size=chunk_size))[1]


def _evaluate(eval_step, model, states, dataset: Dataset, batch_size: int) -> tuple[float, float]:
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0}
    for images, labels in batches(dataset, batch_size, shuffle=False, drop_remainder=False):
        metrics = eval_step(model, states, images, labels)
        for name in totals:
            totals[name] += float(metrics[name])
    return totals["loss_sum"] / totals["count"], totals["correct"] / totals["count"]


def fit(
    config: TrainConfig,
    train_data: Dataset,
    val_data: Dataset,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    metrics_out: str | os.PathLike | None = None,
    log: LogStream | None = sys.stderr,
    mesh: Mesh | tuple[int, int] | str | None = None,
    strategy: AbstractStrategy | None = None,
) -> dict[str, Any]:
    r"""Train a model as `cfconv train` does, and return its metrics.

    With a sparse strategy, each epoch's metrics also hold `kernel_lag`: for every
    layer, $\lVert S - K_\theta \rVert / \lVert K_\theta \rVert$, how far the stored
    kernel $S$ is from the kernel $K_\theta$ its generator gives now (evaluated
    everywhere, in chunks). A lag that stays large means that the generator moves faster
    than the sparse updates can carry it into the stored kernel (see
    [`cfconv.train.make_optimizer`][]). They also hold `val_loss_generated` and
    `val_acc_generated`: the validation loss and accuracy of the network with those
    generators' kernels in place of the stored ones, which says whether the generators
    alone (the continuous kernels) carry what the network learned. A CF-Conv net's
    metrics hold `kernel_concentration` every epoch: for every layer, the share of its
    stored spatial kernels' energy within 3x3 of the origin (at the origin for images
    smaller than 3x3; [`cfconv.kernel_concentration`][]; 1 for a 3x3 CNN).

    Each epoch: shuffled batches (a function of `seed` and the epoch); with a strategy
    that [`needs_frequency_weights`][cfconv.AbstractStrategy.needs_frequency_weights]
    (such as [`cfconv.Sparse`][] with `sampling="stratified"`), first new
    `frequency_weights` for the kernel states from the epoch's first batch
    ([`cfconv.train.refresh_frequency_weights`][], with `config.sampling_floor`); one jitted
    [`cfconv.train.make_train_step`][] per batch, evaluation on `val_data` with the
    stored kernels, then (optionally) an atomic checkpoint of the model, kernel states,
    optimizer state, PRNG key and metrics. All randomness derives from `seed` and the
    epoch and step numbers, so a resumed run reproduces an uninterrupted one.

    **Arguments:**

    - `config`: a [`cfconv.train.TrainConfig`][].
    - `train_data`, `val_data`: [`cfconv.data.Dataset`][]s of the same image shape.
    - `checkpoint_dir`: where to keep `checkpoint.eqx` (written after every epoch).
    - `resume`: continue from the checkpoint in `checkpoint_dir` if there is one. The
      checkpoint's settings must be `config`'s, except `epochs` (a resumed run continues
      up to the new total) and `state_init`; with a `"cosine"` `lr_schedule`, whose
      decay spans the run's epochs, `epochs` must match too.
    - `metrics_out`: write the metrics as JSON there after every epoch.
    - `log`: where the progress goes (`None`: silent).
    - `mesh`: train on a device mesh: a `jax.sharding.Mesh` from
      [`cfconv.distributed.make_mesh`][], a `(data, model)` pair or `"DATAxMODEL"` text
      (`"4x2"`). Batches are split over the data axis (which must divide
      `config.batch_size`), kernel states over output channels on the model axis (which
      must divide `config.width`); see [`cfconv.train.make_train_step`][]. The results
      equal those without a mesh to float32 rounding, so a run may resume on another
      mesh. With several processes (after `jax.distributed.initialize`), every process
      calls `fit` with the same arguments; process 0 alone logs and writes the
      checkpoint and the metrics. `None` (default): one device, no mesh.
    - `strategy`: a kernel strategy to train with instead of `config.strategy`'s (e.g.
      one of your own, see [`cfconv.AbstractStrategy`][]). The states are regenerated
      before evaluation if its `generates_state` says so; otherwise evaluation uses the
      stored kernels and the metrics hold `kernel_lag`. The checkpoint records
      `config` and whether the states hold `frequency_weights`, not the strategy, so
      resume with the same `strategy`.

    **Returns:**

    `{"config", "params", "epochs": [per-epoch metrics], "val_acc", "mesh"}`, with
    `"mesh"` from [`cfconv.distributed.mesh_info`][] (or `None` without a mesh).

    **Raises:**

    `NonFiniteLossError` when a loss is NaN or infinite (nothing is saved for that epoch).
    """
    image_size = (config.image_size, config.image_size)
    if mesh is not None:
        mesh = as_mesh(mesh)
        if config.batch_size % mesh.shape[DATA_AXIS]:
            raise ValueError(
                f"the data axis of `mesh` ({mesh.shape[DATA_AXIS]} devices) must divide "
                f"`config.batch_size` ({config.batch_size})"
            )
        if jax.process_index() != 0:
            log = None
    for name, data in (("train_data", train_data), ("val_data", val_data)):
        if data.image_shape != image_size:
            raise ValueError(
                f"`{name}` holds {data.image_shape} images but `config.image_size` is "
                f"{config.image_size}"
            )
    key = jax.random.key(config.seed)
    k_model, k_states, k_train = jax.random.split(key, 3)
    model = config.build_model(train_data.channels, train_data.num_classes, key=k_model)
    if strategy is None:
        strategy = config.kernel_strategy()
    elif not isinstance(strategy, AbstractStrategy):
        raise TypeError(
            f"`strategy` must be a cfconv.AbstractStrategy or None, got {type(strategy).__name__}"
        )
    # Stratified sparse sampling: every epoch draws by the kernel gradient's frequencies.
    stratified = stratifies(strategy, model)
    states = model.init_states(image_size, key=k_states)
    if config.state_init == "generator" and isinstance(model, CFConvNet):
        # Stored kernels that start as the generators' kernels (evaluated everywhere).
        states = _generated_states(model, states, image_size, config.chunk_size)
    if stratified:
        states = uniform_frequency_weights(states)
    # Error feedback: the states keep the kernel gradient not yet passed to the generators.
    feedback = strategy.needs_residual and isinstance(model, CFConvNet)
    if feedback:
        states = tuple(state.with_residual() for state in states)
    steps_per_epoch = num_batches(train_data, config.batch_size, drop_remainder=True)
    optimizer = config.optimizer(steps_per_epoch)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    key_data = jax.random.key_data(k_train)
    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0

    path = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir) / CHECKPOINT_FILE
    if resume and path is not None and path.exists():
        saved_metadata = load_metadata(path)
        saved = TrainConfig.from_json(saved_metadata["config"])
        weights = saved_metadata.get("frequency_weights", stratified)  # older: as config
        if weights != stratified:
            raise ValueError(
                f"cannot resume from {path}: its kernel states were trained "
                f"{'with' if weights else 'without'} stratified sampling, and this "
                f"`strategy` ({type(strategy).__name__}) samples "
                f"{'uniformly' if weights else 'stratified'}; pass the run's `strategy`"
            )
        different = {
            f.name
            for f in dataclasses.fields(TrainConfig)
            if getattr(saved, f.name) != getattr(config, f.name)
        } - _RESUMABLE
        if _per_layer(saved) == _per_layer(config):  # e.g. 4096 and (4096,)
            different.discard("positions")
        if config.lr_schedule != "constant" and saved.epochs != config.epochs:
            different.add("epochs")  # the schedule spans the run's epochs
        if different:
            settings = ", ".join(
                f"{name}={getattr(saved, name)!r} (now {getattr(config, name)!r})"
                for name in sorted(different)
            )
            why = ""
            if "epochs" in different:
                why = f" (a {config.lr_schedule} lr_schedule's decay spans the run's epochs)"
            raise ValueError(
                f"cannot resume from {path}: the checkpoint was made with other settings: "
                f"{settings}{why}; pass the saved ones (e.g. `--positions all,4096` for "
                f"a run of the previous release's defaults)"
            )
        if saved_metadata.get("residual", False) != feedback:
            raise ValueError(
                f"cannot resume from {path}: its kernel states were trained "
                f"{'without' if feedback else 'with'} error feedback, and this `strategy` "
                f"({type(strategy).__name__}) {'keeps' if feedback else 'keeps no'} "
                "residual; pass the run's `strategy` (or its `--error-feedback` setting)"
            )
        like = (model, states, opt_state, key_data)
        (model, states, opt_state, key_data), metadata = load_checkpoint(path, like)
        start_epoch, step, history = metadata["epoch"], metadata["step"], metadata["history"]
        if log is not None:
            log.write(f"resumed from {path} after epoch {start_epoch}\n")
    k_train = jax.random.wrap_key_data(key_data)
    if mesh is not None:
        model, states, opt_state = shard((model, states, opt_state), mesh)

    augment_fn = augment if config.augment else None
    standardize = standardizer(train_data)
    train_step = make_train_step(optimizer, strategy, image_size, augment=augment_fn,
                                 preprocess=standardize, mesh=mesh)  # fmt: skip
    eval_step = make_eval_step(image_size, preprocess=standardize, mesh=mesh)
    writer = jax.process_index() == 0  # with several processes, one writes the files

    def refresh(model, states):
        return _generated_states(model, states, image_size, config.chunk_size)

    # How far the stored kernels lag the generators (sparse strategies only).
    measure_lag = not strategy.generates_state and isinstance(model, CFConvNet)

    @eqx.filter_jit
    def kernel_lag(states, generated):
        return jnp.stack([jnp.linalg.norm(s.kernel - g.kernel) / jnp.linalg.norm(g.kernel)
                          for s, g in zip(states, generated)])  # fmt: skip

    @eqx.filter_jit
    def concentration(states):
        taps = 3 if min(image_size) >= 3 else 1  # images smaller than 3x3: the origin
        return jnp.stack([kernel_concentration(s.kernel, image_size, taps) for s in states])

    params = parameter_count(model)

    def result() -> dict[str, Any]:
        return {
            "config": config.to_json(),
            "params": params,
            "epochs": history,
            "val_acc": history[-1]["val_acc"] if history else None,
            "mesh": None if mesh is None else mesh_info(mesh),
        }

    for epoch in range(start_epoch, config.epochs):
        epoch_key = jax.random.fold_in(k_train, epoch)
        progress = _Progress(log, steps_per_epoch, epoch + 1, config.epochs)
        losses, accuracies = [], []
        start = time.perf_counter()
        data = batches(train_data, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch)
        if stratified:
            first = batches(train_data, config.batch_size, shuffle=True, seed=config.seed,
                            epoch=epoch, prefetch=0)  # fmt: skip
            images, labels = next(iter(first))
            states = refresh_frequency_weights(model, states, images, labels, image_size,
                                               preprocess=standardize, mesh=mesh,
                                               floor=config.sampling_floor)  # fmt: skip
        timed_steps = steps_per_epoch
        for i, (images, labels) in enumerate(data):
            model, states, opt_state, metrics = train_step(
                model, states, opt_state, images, labels, jax.random.fold_in(epoch_key, i)
            )
            losses.append(metrics["loss"])
            accuracies.append(metrics["accuracy"])
            step += 1
            if i == 0 and steps_per_epoch > 1:
                # Time the steps after the first, which may include compilation.
                jax.block_until_ready(metrics)
                start, timed_steps = time.perf_counter(), steps_per_epoch - 1
            if progress.tty:
                progress.update(i + 1, losses[-1], accuracies[-1],
                                i * config.batch_size / (time.perf_counter() - start))  # fmt: skip
        train_loss = float(jnp.mean(jnp.stack(losses)))
        seconds = time.perf_counter() - start
        if not math.isfinite(train_loss):
            bad = int(np.argmin(np.isfinite(np.asarray(jnp.stack(losses)))))
            kept = f"; the last good checkpoint (epoch {epoch}) is kept at {path}" if path else ""
            raise NonFiniteLossError(
                f"non-finite training loss in epoch {epoch + 1} (first at step {bad + 1}): "
                f"stopping{kept}. Try a lower --lr."
            )
        train_acc = float(jnp.mean(jnp.stack(accuracies)))
        if strategy.generates_state:
            # A dense step stores the kernel it used, made before the optimizer update:
            # regenerate it from the updated generators, so that evaluation (and the
            # checkpoint) pairs the stored kernels with the parameters they belong to.
            states = refresh(model, states)
            if mesh is not None:
                states = shard(states, mesh)
        val_loss, val_acc = _evaluate(eval_step, model, states, val_data, config.batch_size)
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "step_time": seconds / timed_steps,
            "examples_per_s": timed_steps * config.batch_size / seconds,
        }
        if isinstance(model, CFConvNet):
            record["kernel_concentration"] = [float(v) for v in concentration(states)]
        if measure_lag:
            generated = refresh(model, states)
            if mesh is not None:
                generated = shard(generated, mesh)
            record["kernel_lag"] = [float(v) for v in kernel_lag(states, generated)]
            record["val_loss_generated"], record["val_acc_generated"] = _evaluate(
                eval_step, model, generated, val_data, config.batch_size
            )
            del generated  # a copy of every kernel: not kept through the next epoch
        history.append(record)
        lag = ""
        if measure_lag:
            lag = (f" | kernel lag {np.mean(record['kernel_lag']):.2f}, generated "
                   f"kernels' val acc {record['val_acc_generated']:.3f}")  # fmt: skip
        progress.close(
            f"epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.4f} acc {train_acc:.3f}"
            f" | val loss {val_loss:.4f} acc {val_acc:.3f} | {record['step_time'] * 1e3:.1f} ms"
            f"/step, {record['examples_per_s']:.0f} ex/s{lag}"
        )
        if path is not None:
            # `frequency_weights`, `residual`: whether the states hold them (a given
            # `strategy` may differ from `config`'s), for loaders that rebuild the tree.
            metadata = {"config": config.to_json(), "epoch": epoch + 1, "step": step,
                        "history": history, "frequency_weights": stratified,
                        "residual": feedback}  # fmt: skip
            tree = (model, states, opt_state, key_data)
            if mesh is not None:
                tree = gather(tree)  # a collective: every process takes part
            if writer:
                save_checkpoint(path, tree, metadata)
        if metrics_out is not None and writer:
            text = json.dumps(result(), indent=2).encode()
            atomic_write(metrics_out, lambda f: f.write(text))
    return result()
