"""Sampling weights for stratified sparse updates, from the gradient of a batch's loss."""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, Float, Int

from .._state import KernelState
from .._strategies import AbstractStrategy, Stored
from .._stratified import frequency_weights
from ..distributed._sharding import apply_model, shard_batch
from ..models import AbstractModel
from ._step import loss_and_accuracy


def stratifies(strategy: AbstractStrategy, model) -> bool:
    """Whether `fit` trains `model` with `strategy` by stratified sampling (and so keeps
    `frequency_weights` in its kernel states): a CF-Conv net, with a strategy whose
    [`needs_frequency_weights`][cfconv.AbstractStrategy.needs_frequency_weights]."""
    from ..models import CFConvNet

    return strategy.needs_frequency_weights and isinstance(model, CFConvNet)


def uniform_frequency_weights(states: tuple[KernelState, ...]) -> tuple[KernelState, ...]:
    """`states` with equal `frequency_weights` (every frequency alike): where stratified
    sampling starts before any gradient is known."""
    return tuple(
        KernelState(
            state.kernel,
            jnp.ones(state.shape[2:], jnp.float32) / math.prod(state.shape[2:]),
            state.residual,
        )
        for state in states
    )


@eqx.filter_jit
def _kernel_gradients(model, states, images, labels, image_size, mesh=None):
    kernels, _ = model.kernels(states, image_size, Stored())

    def loss(kernels):
        if mesh is None:
            logits = jax.vmap(model, in_axes=(0, None))(images, kernels)
        else:  # as the train step runs it: one program per device
            logits = apply_model(model, images, kernels, mesh)
        return loss_and_accuracy(logits, labels)[0]

    return jax.grad(loss)(kernels)


@eqx.filter_jit
def _weights(model, states, images, labels, image_size, mesh, floor):
    gradients = _kernel_gradients(model, states, images, labels, image_size, mesh)
    return tuple(frequency_weights(gradient, floor=floor) for gradient in gradients)


def refresh_frequency_weights(
    model: AbstractModel,
    states: tuple[KernelState, ...],
    images: Float[Array, "batch channels h w"],
    labels: Int[Array, " batch"],
    image_size: tuple[int, int],
    *,
    preprocess: Callable[[Array], Array] | None = None,
    floor: float = 0.05,
    mesh: Mesh | None = None,
) -> tuple[KernelState, ...]:
    r"""Recompute every layer's `frequency_weights` from one batch's kernel gradient.

    The gradient of the batch's mean loss with respect to the stored kernels (the
    network as [`cfconv.Stored`][] runs it; one dense forward and backward pass, with no
    MLP evaluated) gives each layer's weights by [`cfconv.frequency_weights`][]. A
    [`cfconv.Sparse`][] strategy with `sampling="stratified"` (or another that
    [`needs_frequency_weights`][cfconv.AbstractStrategy.needs_frequency_weights]) then
    draws its positions by them. [`cfconv.train.fit`][] calls this at the start of every
    epoch, on the epoch's first batch.

    **Arguments:**

    - `model`: a model with CF-Conv layers (e.g. [`cfconv.models.CFConvNet`][]).
    - `states`: its kernel states, one per layer.
    - `images`, `labels`: a batch (as the train step gets it).
    - `image_size`: `(h, w)` of the images.
    - `preprocess`: optional `preprocess(images) -> images`, as given to
      [`cfconv.train.make_train_step`][].
    - `floor`: [`cfconv.frequency_weights`][]'s `floor`. Default `0.05`.
    - `mesh`: optional device mesh, as given to [`cfconv.train.make_train_step`][]: the
      batch is then split over its data axis and the network run as the step runs it.

    **Returns:**

    The states with the same kernels (and residuals) and new `frequency_weights`.
    """
    states = tuple(states)
    if not all(isinstance(state, KernelState) for state in states):
        raise TypeError("`states` must be a tuple of cfconv.KernelState, one per CF-Conv layer")
    if preprocess is not None:
        images = preprocess(images)
    if mesh is not None:
        images, labels = shard_batch((images, labels), mesh)
    weights = _weights(model, states, images, labels, tuple(image_size), mesh, floor)
    return tuple(KernelState(state.kernel, w, state.residual) for state, w in zip(states, weights))
