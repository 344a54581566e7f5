"""Small scalar-output MLPs, and stacks of them with a leading axis."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from ._errors import check_int


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
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the number of input coordinates.
        - `hidden`: the widths of the hidden layers, e.g. `(32, 32, 16)`; may be empty.
        - `activation`: applied after every hidden layer (default ReLU).
        - `key`: a PRNG key for the initial weights (Equinox's `Linear` initialisation).
        """
        in_size = check_int("in_size", in_size)
        widths = [in_size, *(check_int("hidden", h) for h in hidden), 1]
        if not callable(activation):
            raise TypeError(f"`activation` must be callable, got {activation!r}")
        keys = jax.random.split(key, len(widths) - 1)
        self.layers = tuple(
            eqx.nn.Linear(a, b, key=k) for a, b, k in zip(widths[:-1], widths[1:], keys)
        )
        self.activation = activation

    @classmethod
    def stack(
        cls,
        num: int,
        in_size: int,
        hidden: Sequence[int],
        activation: Callable[[Array], Array] = jax.nn.relu,
        *,
        key: PRNGKeyArray,
    ) -> "MLP":
        """Build `num` independent MLPs as one `MLP` with a leading axis of size `num`."""
        num = check_int("num", num)
        return _build_stack(cls, num, in_size, tuple(hidden), activation, key)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, ""]:
        """Evaluate one (unstacked) MLP at one point."""
        *hidden, last = self.layers
        for layer in hidden:
            x = self.activation(layer(x))
        return last(x)[0]


@eqx.filter_jit
def _build_stack(cls, num, in_size, hidden, activation, key):
    # Compiled once per configuration: eager construction would compile every random op
    # of every layer shape separately, which takes seconds for a deep MLP.
    return eqx.filter_vmap(lambda k: cls(in_size, hidden, activation, key=k))(
        jax.random.split(key, num)
    )


def stack_size(stack: MLP) -> int:
    """The leading-axis size of a stack built by `MLP.stack`."""
    return stack.layers[0].weight.shape[0]


def stack_apply(stack: MLP, x: Float[Array, "num in_size"]) -> Float[Array, "mlps num"]:
    """Evaluate every MLP of a stack at every point of `x`."""
    return eqx.filter_vmap(lambda mlp: jax.vmap(mlp)(x))(stack)


def stack_select(
    stack: MLP, index: Int[Array, " num"], x: Float[Array, "num in_size"]
) -> Float[Array, " num"]:
    """Evaluate, for each point `x[n]`, the MLP `index[n]` of a stack."""
    if stack_size(stack) == 1:
        single = jax.tree.map(lambda a: a[0] if eqx.is_array(a) else a, stack)
        return jax.vmap(single)(x)

    def one(i, xi):
        mlp = jax.tree.map(lambda a: a[i] if eqx.is_array(a) else a, stack)
        return mlp(xi)

    return jax.vmap(one)(index, x)


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
