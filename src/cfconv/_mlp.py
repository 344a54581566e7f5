"""Small scalar-output MLPs, and stacks of them with a leading axis."""

import math
from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ._errors import check_int


MLPInit = Literal["he", "equinox"]
MLP_INITS: tuple[str, ...] = ("he", "equinox")


class MLP(eqx.Module):
    """A multilayer perceptron from `in_size` coordinates to one real number.

    Unlike `equinox.nn.MLP`, each hidden layer has its own width (the paper's generator is
    `[32, 32, 32, 16, 16, 16, 8, 8, 8, 1]`). The activation follows every hidden layer;
    the output layer is linear.

    A *stack* of `n` MLPs (see [`cfconv.MLP.stack`][]) is one `MLP` whose arrays all carry
    a leading axis of size `n`.
    """

    layers: tuple[eqx.nn.Linear, ...]
    activation: Callable[[Array], Array]

    def __init__(
        self,
        in_size: int,
        hidden: Sequence[int],
        activation: Callable[[Array], Array] = jax.nn.relu,
        init: MLPInit = "he",
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the number of input coordinates.
        - `hidden`: the widths of the hidden layers, e.g. `(32, 32, 16)`; may be empty.
        - `activation`: applied after every hidden layer (default ReLU).
        - `init`: `"he"` (default): weights with variance `2 / fan_in` (He et al.,
          2015; `1 / fan_in` for the output layer) and zero biases, so that the
          coordinates' signal survives a deep ReLU MLP; `"equinox"`: `equinox.nn.Linear`'s
          uniform weights and biases of variance `1 / (3 fan_in)`, under which a
          deep generator's output is dominated by its biases and is nearly the same
          at every coordinate.
        - `key`: a PRNG key for the initial weights.
        """
        in_size = check_int("in_size", in_size)
        widths = [in_size, *(check_int("hidden", h) for h in hidden), 1]
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}")
        if init not in MLP_INITS:
            raise ValueError(f"`init` must be one of {MLP_INITS}, got {init!r}")
        keys = jax.random.split(key, len(widths) - 1)
        layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(widths[:-1], widths[1:], keys)]
        if init == "he":
            layers = [_he(layer, gain=2.0 if n < len(layers) - 1 else 1.0)
                      for n, layer in enumerate(layers)]  # fmt: skip
        self.layers = tuple(layers)
        self.activation = activation

    @classmethod
    def stack(
        cls,
        num: int,
        in_size: int,
        hidden: Sequence[int],
        activation: Callable[[Array], Array] = jax.nn.relu,
        init: MLPInit = "he",
        *,
        key: PRNGKeyArray,
    ) -> "MLP":
        """Build `num` independent MLPs as one `MLP` with a leading axis of size `num`."""
        num = check_int("num", num)
        return _build_stack(cls, num, in_size, tuple(hidden), activation, init, key)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        """Evaluate one (unstacked) MLP at one point."""
        *hidden, last = self.layers
        for layer in hidden:
            x = self.activation(layer(x))
        return last(x)[0]


def _he(layer: eqx.nn.Linear, gain: float) -> eqx.nn.Linear:
    """Rescale Equinox's uniform weights to variance `gain / fan_in`; zero the bias."""
    # Equinox draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)): variance 1 / (3 fan_in).
    weight = layer.weight * math.sqrt(3.0 * gain)
    bias = None if layer.bias is None else jnp.zeros_like(layer.bias)
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (weight, bias))


@eqx.filter_jit
def _build_stack(cls, num, in_size, hidden, activation, init, key):
    # Compiled once per configuration: eager construction would compile every random op
    # of every layer shape separately, which takes seconds for a deep MLP.
    return eqx.filter_vmap(lambda k: cls(in_size, hidden, activation, init, key=k))(
        jax.random.split(key, num)
    )


def stack_size(stack: MLP) -> int:
    """The leading-axis size of a stack built by `MLP.stack`."""
    return stack.layers[0].weight.shape[0]


def stack_apply(stack: MLP, x: Float[Array, "num in_size"]) -> Float[Array, "mlps num"]:
    """Evaluate every MLP of a stack at every point of `x`."""
    if stack_size(stack) == 1:
        # A stack axis of size one would make every matmul a batched one, which XLA's CPU
        # backend runs about twice as slowly.
        return jax.vmap(_unstack(stack, 0))(x)[None]
    return eqx.filter_vmap(lambda mlp: jax.vmap(mlp)(x))(stack)


def _unstack(stack: MLP, index) -> MLP:
    """MLP `index` of a stack."""
    return jax.tree.map(lambda a: a[index] if eqx.is_array(a) else a, stack)


def stack_select(
    stack: MLP, index: Int[Array, " num"], x: Float[Array, "num in_size"]
) -> Float[Array, " num"]:
    """Evaluate, for each point `x[n]`, the MLP `index[n]` of a stack."""
    if stack_size(stack) == 1:
        return jax.vmap(_unstack(stack, 0))(x)
    return jax.vmap(lambda i, xi: _unstack(stack, i)(xi))(index, x)


def parameter_count(tree: PyTree) -> int:
    """The number of trainable scalars in a PyTree: the total size of its float arrays.

    Complex arrays count twice (real and imaginary parts). Non-array leaves and integer
    arrays are ignored.

    **Arguments:**

    - `tree`: any PyTree, e.g. a model or a [`cfconv.KernelGenerator`][].

    **Returns:**

    A Python `int`.
    """
    total = 0
    for leaf in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array)):
        factor = 2 if jnp.issubdtype(leaf.dtype, jnp.complexfloating) else 1
        total += factor * leaf.size
    return total
