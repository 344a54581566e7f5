"""Jitted training and evaluation steps, composable in users' own loops."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._strategies import AbstractStrategy, Stored, resolve_strategy
from ..data import Dataset
from ..distributed._mesh import check_mesh
from ..distributed._sharding import apply_model, replicate, shard, shard_batch
from ..distributed._strategy import shard_strategy


def loss_and_accuracy(
    logits: Float[Array, "batch outputs"], labels: Int[Array, " batch"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean classification loss and accuracy of a batch of logits.

    One output means two classes: sigmoid and binary cross-entropy, as in the paper.
    Several outputs: softmax cross-entropy.

    **Arguments:**

    - `logits`: shape `(batch, outputs)`.
    - `labels`: integer class labels, shape `(batch,)`.

    **Returns:**

    `(loss, accuracy)`, two scalars.
    """
    if logits.shape[-1] == 1:
        logit = logits[:, 0]
        losses = optax.sigmoid_binary_cross_entropy(logit, labels.astype(logit.dtype))
        predictions = (logit > 0).astype(labels.dtype)
    else:
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        predictions = jnp.argmax(logits, axis=-1).astype(labels.dtype)
    return jnp.mean(losses), jnp.mean((predictions == labels).astype(jnp.float32))


TrainStep = Callable[..., tuple[Any, tuple, PyTree, dict[str, Array]]]


def make_train_step(
    optimizer: optax.GradientTransformation,
    strategy: AbstractStrategy | str,
    image_size: tuple[int, int],
    *,
    augment: Callable[[PRNGKeyArray, Array], Array] | None = None,
    preprocess: Callable[[Array], Array] | None = None,
    mesh: Mesh | None = None,
) -> TrainStep:
    """Build a jitted training step.

    The step is `(model, states, opt_state, images, labels, key) ->
    (model, states, opt_state, metrics)` with `metrics = {"loss": ..., "accuracy": ...}`.
    The kernel phase runs once for the batch; the convolution phase per example under
    `jax.vmap`. After the optimizer update, the next states come from
    [`model.after_update`][cfconv.models.AbstractModel.after_update] (for
    [`cfconv.Sparse`][] with `write_back=True`, the updated generators' values at the
    sampled positions). The model's arrays, the kernel states and the optimizer state are donated
    (their buffers are reused for the outputs), so do not use the passed-in values after
    the call. `step.lower(...)` with the same arguments gives the `jax.stages.Lowered`
    step without running it, e.g. for `step.lower(...).compile().memory_analysis()`.

    **Arguments:**

    - `optimizer`: an Optax optimizer; `opt_state = optimizer.init(eqx.filter(model,
      eqx.is_inexact_array))`.
    - `strategy`: the kernel-phase strategy of CF-Conv layers (ignored by models without
      any).
    - `image_size`: `(h, w)` of the images.
    - `augment`: optional `augment(key, images) -> images` applied to each batch inside
      the step (training only).
    - `preprocess`: optional `preprocess(images) -> images` applied after `augment`, e.g.
      standardisation (give the same one to [`cfconv.train.make_eval_step`][]).
    - `mesh`: optional device mesh from [`cfconv.distributed.make_mesh`][]. The step then
      splits each batch over the mesh's data axis and keeps the model, the kernel states
      and the optimizer state split by the rules of
      [`cfconv.distributed.tree_shardings`][] (kernel states over output channels on the
      model axis); a [`cfconv.Sparse`][] strategy runs as
      [`cfconv.distributed.ShardedSparse`][]. Arguments not yet on the mesh are put there
      (see [`cfconv.distributed.shard`][]), so the step takes the same arguments as
      without a mesh, and computes the same losses and states to float32 rounding.

    **Returns:**

    The step function.
    """
    strategy = resolve_strategy(strategy)
    if mesh is not None:
        check_mesh(mesh)
        strategy = shard_strategy(strategy, mesh)

    def loss_fn(model, states, images, labels, key):
        kernels, new_states = model.kernels(states, image_size, strategy, key=key)
        if mesh is None:
            logits = jax.vmap(model, in_axes=(0, None))(images, kernels)
        else:
            logits = apply_model(model, images, kernels, mesh)
        loss, accuracy = loss_and_accuracy(logits, labels)
        return loss, (kernels, new_states, accuracy)

    # The batch comes first and is not donated; the model, states and optimizer state are.
    @eqx.filter_jit(donate="all-except-first")
    def step(batch, model, states, opt_state):
        images, labels, key = batch
        key_kernels, key_augment = jax.random.split(key)
        if augment is not None:
            images = augment(key_augment, images)
        if preprocess is not None:
            images = preprocess(images)
        if strategy.needs_state_gradient:
            # E.g. error feedback: the kernel gradient at every entry, through the states.
            grad_fn = eqx.filter_value_and_grad(
                lambda both, *rest: loss_fn(*both, *rest), has_aux=True
            )
            (loss, (kernels, new_states, accuracy)), (grads, state_grads) = grad_fn(
                (model, states), images, labels, key_kernels
            )
        else:
            grad_fn = eqx.filter_value_and_grad(loss_fn, has_aux=True)
            (loss, (kernels, new_states, accuracy)), grads = grad_fn(
                model, states, images, labels, key_kernels
            )
            state_grads = None
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = eqx.apply_updates(model, updates)
        # E.g. a sparse strategy's write-back: the updated generators at the sampled positions.
        if state_grads is None:
            states = model.after_update(kernels, new_states, image_size, strategy)
        else:
            states = model.after_update(kernels, new_states, image_size, strategy,
                                        state_gradients=state_grads)  # fmt: skip
        if mesh is not None:
            # Keep every output where the matching input was.
            model, states, opt_state = shard((model, states, opt_state), mesh)
        return model, states, opt_state, {"loss": loss, "accuracy": accuracy}

    def arguments(model, states, opt_state, images, labels, key):
        if mesh is not None:
            images, labels = shard_batch((images, labels), mesh)
            key = replicate(key, mesh)
            model, states, opt_state = shard((model, states, opt_state), mesh)
        return (images, labels, key), model, states, opt_state

    def train_step(model, states, opt_state, images, labels, key):
        return step(*arguments(model, states, opt_state, images, labels, key))

    # As `jax.jit` functions have it: `train_step.lower(...).compile().memory_analysis()`.
    train_step.lower = lambda *args: step.lower(*arguments(*args)).lowered  # pyright: ignore
    return train_step


def make_eval_step(
    image_size: tuple[int, int],
    *,
    preprocess: Callable[[Array], Array] | None = None,
    mesh: Mesh | None = None,
) -> Callable[..., dict[str, Array]]:
    """Build a jitted evaluation step `(model, states, images, labels) -> metrics`.

    CF-Conv layers use their stored kernels ([`cfconv.Stored`][]): no MLP is evaluated.
    `metrics` holds the batch sums `"loss_sum"` and `"correct"`, and `"count"`, so that
    batches of different sizes combine exactly. With a `mesh` (see
    [`cfconv.train.make_train_step`][]) each batch is split over the data axis (a batch
    that the data axis does not divide is replicated) and the model and states are put on
    the mesh.
    """
    if mesh is not None:
        check_mesh(mesh)

    @eqx.filter_jit
    def eval_step(model, states, images, labels):
        if preprocess is not None:
            images = preprocess(images)
        kernels, _ = model.kernels(states, image_size, Stored())
        if mesh is None:
            logits = jax.vmap(model, in_axes=(0, None))(images, kernels)
        else:
            logits = apply_model(model, images, kernels, mesh)
        loss, accuracy = loss_and_accuracy(logits, labels)
        count = labels.shape[0]
        return {"loss_sum": loss * count, "correct": accuracy * count, "count": count}

    if mesh is None:
        return eval_step

    def sharded_eval_step(model, states, images, labels):
        images, labels = shard_batch((images, labels), mesh)
        model, states = shard((model, states), mesh)
        return eval_step(model, states, images, labels)

    return sharded_eval_step


def standardizer(data: Dataset):
    """Per-channel standardisation with the training set's mean and standard deviation."""
    pixels = data.images.reshape(-1, data.channels).astype(np.float64) / 255.0
    mean = pixels.mean(axis=0).reshape(1, -1, 1, 1).astype(np.float32)
    std = np.maximum(pixels.std(axis=0), 1e-3).reshape(1, -1, 1, 1).astype(np.float32)

    def standardize(images):
        return (images - mean) / std

    return standardize
