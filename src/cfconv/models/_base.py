"""What every model shares: the two-phase interface and the classifier head."""

import abc
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, PRNGKeyArray, Real

from .._errors import check_int
from .._state import KernelState, SparseKernel
from .._strategies import AbstractStrategy


StepKernel = Complex[Array, "_cin _cout h wf"] | SparseKernel
"""One layer's kernel for one step (the channel counts differ between layers): a complex
array, or a [`cfconv.SparseKernel`][] from a sparse strategy."""

Logits = Float[Array, " num_outputs"]
"""A model's output for one example."""


class AbstractModel(eqx.Module):
    """A classifier whose training step has a kernel phase and a convolution phase.

    Every model in [`cfconv.models`][] has this interface:

    - [`init_states`][cfconv.models.AbstractModel.init_states]: one
      [`cfconv.KernelState`][] per CF-Conv layer (none for a spatial CNN).
    - [`kernels`][cfconv.models.AbstractModel.kernels], phase 1, once per step for the
      whole batch: this step's kernels and the next states.
    - `model(x, kernels)`, phase 2, for ONE example `x` of shape `(C, H, W)`: the logits,
      of shape `(num_outputs,)`. Batch with `jax.vmap(model, in_axes=(0, None))`.

    With two classes there is one output, the logit of class 1 (apply the sigmoid in the
    loss, e.g. `optax.sigmoid_binary_cross_entropy(logits[..., 0], labels)`); with more,
    `num_classes` logits.
    """

    num_outputs: eqx.AbstractVar[int]
    num_classes: eqx.AbstractVar[int]
    in_channels: eqx.AbstractVar[int]

    @abc.abstractmethod
    def init_states(
        self, image_size: tuple[int, int], *, key: PRNGKeyArray
    ) -> tuple[KernelState, ...]:
        """Fresh stored kernels for images of `image_size = (h, w)`, one per CF-Conv
        layer."""

    @abc.abstractmethod
    def kernels(
        self,
        states: tuple[KernelState, ...],
        image_size: tuple[int, int],
        strategy: AbstractStrategy | str,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[StepKernel, ...], tuple[KernelState, ...]]:
        """Phase 1: `(kernels, new_states)` for this step."""

    def after_update(
        self,
        kernels: tuple[StepKernel, ...],
        new_states: tuple[KernelState, ...],
        image_size: tuple[int, int],
        strategy: AbstractStrategy | str,
        *,
        state_gradients: tuple[KernelState, ...] | None = None,
    ) -> tuple[KernelState, ...]:
        """The states to carry to the next step, called on the model *after* the
        optimizer update, with the `kernels` and `new_states` that
        [`kernels`][cfconv.models.AbstractModel.kernels] returned, and (for strategies
        that [`need_state_gradient`][cfconv.AbstractStrategy.needs_state_gradient]) the
        loss's gradients with respect to the step's input states.

        Each CF-Conv layer's strategy decides
        ([`AbstractStrategy.after_update`][cfconv.AbstractStrategy.after_update]); by
        default, and for models without generators, this is `new_states`.
        """
        del kernels, image_size, strategy, state_gradients
        return new_states

    @abc.abstractmethod
    def __call__(self, x: Real[Array, "cin h w"], kernels: tuple[StepKernel, ...]) -> Logits:
        """Phase 2: the logits for one example."""


def check_image(x: object, in_channels: int) -> None:
    """Raise unless `x` is one example of shape `(in_channels, h, w)`."""
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 3 or shape[0] != in_channels:
        raise ValueError(
            f"`x` must be one example of shape ({in_channels}, h, w) (batch with "
            f"`jax.vmap`), got shape {shape}"
        )


def check_sizes(in_channels: int, num_classes: int, width: int, depth: int) -> None:
    check_int("in_channels", in_channels)
    check_int("num_classes", num_classes, minimum=2)
    check_int("width", width)
    check_int("depth", depth)


def num_outputs_for(num_classes: int) -> int:
    """One logit for two classes (sigmoid), `num_classes` logits otherwise (softmax)."""
    return 1 if num_classes == 2 else num_classes


class Head(eqx.Module):
    """Global average pooling, then dense layers with ReLU, then a linear output layer."""

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(self, in_size: int, hidden: Sequence[int], num_outputs: int, *, key: PRNGKeyArray):
        """**Arguments:**

        - `in_size`: the number of channels of the feature map.
        - `hidden`: the widths of the hidden dense layers, e.g. the paper's `(128, 64)`.
        - `num_outputs`: the width of the output layer.
        - `key`: a PRNG key.
        """
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(f"`head` must be a sequence of integers, got {hidden!r}")
        widths = [in_size, *(check_int("head", h) for h in hidden), num_outputs]
        keys = jax.random.split(key, len(widths) - 1)
        self.layers = tuple(
            eqx.nn.Linear(a, b, key=k) for a, b, k in zip(widths[:-1], widths[1:], keys)
        )

    def __call__(self, features: Float[Array, "c h w"]) -> Logits:
        h = jnp.mean(features, axis=(1, 2))
        *hidden, last = self.layers
        for layer in hidden:
            h = jax.nn.relu(layer(h))
        return last(h)
