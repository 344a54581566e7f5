"""The spatial 3x3 CNN baseline of the paper (Table 4, first row)."""

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, Real

from .._state import KernelState
from .._strategies import AbstractStrategy, resolve_strategy
from ._base import (
    AbstractModel,
    Head,
    Logits,
    StepKernel,
    check_image,
    check_sizes,
    num_outputs_for,
)


def _he_conv(cin: int, cout: int, *, key: PRNGKeyArray) -> eqx.nn.Conv2d:
    r"""A 3x3 convolution with He-uniform weights and zero bias.

    Equinox's default (uniform in $\pm 1/\sqrt{\text{fan-in}}$) shrinks the activations
    by about $\sqrt{6}$ per convolution + ReLU, which slows a six-layer network down; He
    initialisation keeps their scale, as the CF-Conv nets' initialisation does, so the
    baseline is compared on equal terms. (`cfconv demo`, which trains this network on the
    digits for 10 epochs, reported validation accuracy 0.7298 with Equinox's default and
    0.8162 with this; 0.8134 in a later run at commit ec0d1c9.)
    """
    conv = eqx.nn.Conv2d(cin, cout, kernel_size=3, padding="SAME", key=key)
    limit = math.sqrt(6.0 / (cin * 9))
    weight = jax.random.uniform(key, conv.weight.shape, minval=-limit, maxval=limit)
    assert conv.bias is not None
    return eqx.tree_at(lambda c: (c.weight, c.bias), conv, (weight, jnp.zeros_like(conv.bias)))


class SpatialCNN(AbstractModel):
    """The baseline: `depth` 3x3 convolutions with ReLU, global average pooling, a head.

    The same network as [`cfconv.models.CFConvNet`][] with ordinary spatial convolutions
    (`equinox.nn.Conv2d`, `padding="SAME"`, zero padding) in place of the CF-Convs. It has
    no stored kernels, so its kernel phase does nothing; it shares the two-phase interface
    so that one training loop serves every model.

    !!! example

        ```python
        model = cfconv.models.SpatialCNN(key=jax.random.key(0))
        states = model.init_states((150, 150), key=k)     # ()
        kernels, states = model.kernels(states, (150, 150), "stored")  # ((), ())
        logits = jax.vmap(model, in_axes=(0, None))(images, kernels)  # (batch, 1)
        ```
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    head: Head
    in_channels: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    num_outputs: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 32,
        depth: int = 6,
        head: Sequence[int] = (128, 64),
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`: channels of the input images.
        - `num_classes`: the number of classes; two gives one output (a logit for the
          sigmoid), more give `num_classes` logits.
        - `width`: the number of filters of every convolution (the paper's 32).
        - `depth`: the number of convolutions (the paper's 6).
        - `head`: the widths of the dense layers after pooling (the paper's `(128, 64)`).
        - `key`: a PRNG key.
        """
        check_sizes(in_channels, num_classes, width, depth)
        keys = jax.random.split(key, depth + 1)
        channels = [in_channels] + [width] * depth
        self.convs = tuple(
            _he_conv(cin, cout, key=k)
            for cin, cout, k in zip(channels[:-1], channels[1:], keys[:-1])
        )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_outputs = num_outputs_for(num_classes)
        self.head = Head(width, head, self.num_outputs, key=keys[-1])

    def init_states(
        self, image_size: tuple[int, int], *, key: PRNGKeyArray
    ) -> tuple[KernelState, ...]:
        """No stored kernels: `()`."""
        del image_size, key
        return ()

    def kernels(
        self,
        states: tuple[KernelState, ...],
        image_size: tuple[int, int],
        strategy: AbstractStrategy | str,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[StepKernel, ...], tuple[KernelState, ...]]:
        """No kernel phase: `((), states)`."""
        del image_size, key
        resolve_strategy(strategy)  # still reject an unknown strategy name
        return (), states

    def __call__(self, x: Real[Array, "cin h w"], kernels: tuple[StepKernel, ...] = ()) -> Logits:
        """The logits for one example `x` of shape `(in_channels, h, w)`; `kernels` is
        ignored (it is `()`)."""
        check_image(x, self.in_channels)
        h = x.astype(self.convs[0].weight.dtype)
        for conv in self.convs:
            h = jax.nn.relu(conv(h))
        return self.head(h)
