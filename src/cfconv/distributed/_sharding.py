"""Where every array of a training run lives on a mesh, and how it gets there."""

from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import PyTree

from .._generators import KernelGenerator
from .._state import KernelState
from ._mesh import DATA_AXIS, MODEL_AXIS, check_mesh


T = TypeVar("T")


def _model_size(mesh: Mesh) -> int:
    return int(mesh.shape[MODEL_AXIS])


def _kernel_spec(mesh: Mesh, leaf: Any) -> P:
    """A `(cin, cout, h, wf)` kernel: split over output channels; a state's other arrays
    (its `frequency_weights`) are replicated."""
    if leaf.ndim != 4:
        return P()
    cout, size = leaf.shape[1], _model_size(mesh)
    if cout % size:
        raise ValueError(
            f"the model axis of `mesh` has {size} devices, which do not divide the {cout} "
            f"output channels of a kernel of shape {tuple(leaf.shape)}: choose a model axis "
            "that divides every layer's width"
        )
    return P(None, MODEL_AXIS)


def _stack_spec(mesh: Mesh, leaf: Any) -> P:
    """An MLP stack's array: split along the stack axis when the model axis divides it."""
    if leaf.ndim >= 1 and leaf.shape[0] % _model_size(mesh) == 0:
        return P(MODEL_AXIS)
    return P()


def _fourier_spec(mesh: Mesh, leaf: Any) -> P:
    """A discretely parameterized model: its `(cin, cout, h, wf)` kernels are split like
    kernel states; everything else is replicated."""
    if leaf.ndim == 4:
        return _kernel_spec(mesh, leaf)
    return P()


def _rule(node: Any) -> Callable[[Mesh, Any], P] | None:
    from ..models import FourierCNN

    if isinstance(node, KernelState):
        return _kernel_spec
    if isinstance(node, KernelGenerator):
        return _stack_spec
    if isinstance(node, FourierCNN):
        return _fourier_spec
    return None


def _is_ruled(node: Any) -> bool:
    return _rule(node) is not None


def _is_array(leaf: Any) -> bool:
    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def _map_shardings(f: Callable[[Any, NamedSharding], Any], tree: Any, mesh: Mesh) -> Any:
    """`f(leaf, sharding)` on every array leaf of `tree`; other leaves are kept."""

    def visit(node):
        rule = _rule(node)
        if rule is None:
            return f(node, NamedSharding(mesh, P())) if _is_array(node) else node
        return jax.tree.map(
            lambda leaf: (
                f(leaf, NamedSharding(mesh, rule(mesh, leaf))) if _is_array(leaf) else leaf
            ),
            node,
        )

    return jax.tree.map(visit, tree, is_leaf=_is_ruled)


def tree_shardings(tree: PyTree, mesh: Mesh) -> PyTree:
    """The `NamedSharding` of every array of a model, its kernel states or its optimizer
    state.

    The rules, by where an array sits in the PyTree:

    - in a [`cfconv.KernelState`][] (the kernel, `(cin, cout, h, w // 2 + 1)`): split over
      output channels on the model axis, `PartitionSpec(None, "model")`; the model axis
      must divide every layer's output channels; its `residual` (error feedback's), if
      any, is split the same way, and its `frequency_weights`, if any, are replicated;
    - in a [`cfconv.KernelGenerator`][]: every array of its MLP stacks is split along the
      stack axis, `PartitionSpec("model")`, where the model axis divides the stack size.
      The stack axis is the output channel for `"hw_cin"` (one MLP per output channel), the
      input channel for `"hw_cout"`, the (input, output) pair, input-major, for `"hw"`;
      `"hw_cin_cout"` has one MLP, which is replicated;
    - in a [`cfconv.models.FourierCNN`][]: its `(cin, cout, h, wf)` kernels are split like
      kernel states;
    - everything else (heads, biases, scalars, PRNG keys): replicated.

    The rules apply wherever the arrays occur, so an Optax state, whose moments mirror the
    model's structure, is split like the model. Nothing is split over the data axis.

    **Arguments:**

    - `tree`: any PyTree, e.g. a model, its tuple of kernel states, an optimizer state.
    - `mesh`: a mesh from [`cfconv.distributed.make_mesh`][].

    **Returns:**

    A PyTree like `tree` with a `jax.sharding.NamedSharding` in place of every array leaf
    (other leaves are kept).
    """
    check_mesh(mesh)
    return _map_shardings(lambda leaf, sharding: sharding, tree, mesh)


def _is_key(leaf: Any) -> bool:
    return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def _same(current: Any, sharding: NamedSharding, ndim: int) -> bool:
    # Equivalent is not enough: a single-device array is "equivalent" to a one-device
    # mesh's sharding, but a jitted step compiles anew when its inputs' shardings change.
    return (
        isinstance(current, NamedSharding)
        and current.mesh == sharding.mesh
        and current.is_equivalent_to(sharding, ndim)
    )


def _place(leaf: Any, sharding: NamedSharding) -> Any:
    if isinstance(leaf, jax.Array) and _is_key(leaf):
        # Key arrays cannot be put on devices of other processes; their data can.
        data = _place(jax.random.key_data(leaf), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
    if isinstance(leaf, jax.Array) and _same(leaf.sharding, sharding, leaf.ndim):
        return leaf
    # A host value or a process-local array is taken to be the same in every process
    # (as it is when every process runs the same program from the same seed).
    return jax.device_put(leaf, sharding)


def shard(tree: T, mesh: Mesh) -> T:
    """Put a model, its kernel states or an optimizer state on a mesh, split by the rules
    of [`cfconv.distributed.tree_shardings`][].

    Outside `jax.jit` the arrays are placed (arrays that already have their sharding are
    kept, without a copy); host values and process-local arrays are taken to be equal in
    every process, as they are when every process builds them from the same seed. Inside
    `jax.jit` this is a sharding constraint (`jax.lax.with_sharding_constraint`), which
    keeps a step's outputs where its inputs were.

    **Arguments:**

    - `tree`: any PyTree; non-array leaves are kept.
    - `mesh`: a mesh from [`cfconv.distributed.make_mesh`][].

    **Returns:**

    `tree` with its arrays on the mesh.

    !!! example

        ```python
        mesh = cfconv.distributed.make_mesh(data=4, model=2)
        model, states, opt_state = cfconv.distributed.shard((model, states, opt_state), mesh)
        ```
    """
    check_mesh(mesh)

    def put(leaf, sharding):
        if isinstance(leaf, jax.core.Tracer):
            return jax.lax.with_sharding_constraint(leaf, sharding)
        return _place(leaf, sharding)

    return _map_shardings(put, tree, mesh)


def batch_sharding(mesh: Mesh, batch_size: int) -> NamedSharding:
    """The sharding of a batch of `batch_size` examples: split over the data axis along its
    first axis when the data axis divides `batch_size`, replicated otherwise."""
    check_mesh(mesh)
    if batch_size % int(mesh.shape[DATA_AXIS]) == 0:
        return NamedSharding(mesh, P(DATA_AXIS))
    return NamedSharding(mesh, P())


def shard_batch(batch: T, mesh: Mesh) -> T:
    """Split a batch over the data axis of a mesh.

    Every array of `batch` has the batch as its first axis. It is split along that axis
    over the data axis (and replicated along the model axis); a batch that the data axis
    does not divide (such as the last, smaller evaluation batch) is replicated. With
    several processes every process passes the same, whole batch and keeps only the part
    its own devices hold.

    **Arguments:**

    - `batch`: an array or a PyTree of arrays with a common first axis, e.g.
      `(images, labels)`.
    - `mesh`: a mesh from [`cfconv.distributed.make_mesh`][].

    **Returns:**

    `batch` with its arrays on the mesh.
    """
    check_mesh(mesh)
    leaves = jax.tree.leaves(batch)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(
            f"`batch` must hold arrays with a common first (batch) axis, got shapes "
            f"{[np.shape(leaf) for leaf in leaves]}"
        )
    (size,) = sizes
    sharding = batch_sharding(mesh, int(size))  # pyright: ignore
    return jax.tree.map(lambda leaf: _place(leaf, sharding), batch)


def replicate(tree: T, mesh: Mesh) -> T:
    """Put every array of `tree` (PRNG keys included) on every device of `mesh`."""
    check_mesh(mesh)
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda leaf: _place(leaf, sharding) if eqx.is_array(leaf) else leaf,
                        tree)  # fmt: skip


def gather(tree: T) -> T:
    """Bring every array of `tree` to the host, whole, as NumPy arrays.

    With several processes this is a collective (`process_allgather`): every process must
    call it, and every process gets the whole arrays. Use it before saving a checkpoint
    of a sharded run.

    **Arguments:**

    - `tree`: any PyTree; non-array leaves are kept.

    **Returns:**

    `tree` with NumPy arrays in place of its JAX arrays.
    """

    def one(leaf):
        if not isinstance(leaf, jax.Array):
            return leaf
        if _is_key(leaf):
            raise TypeError("`tree` holds PRNG keys: gather `jax.random.key_data(key)` instead")
        if leaf.is_fully_addressable or leaf.is_fully_replicated:
            return np.asarray(leaf)
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(one, tree)


def apply_model(model: Any, images: Any, kernels: Any, mesh: Mesh) -> Any:
    """The convolution phase on a mesh: `jax.vmap(model, in_axes=(0, None))(images,
    kernels)` with the batch split over every device.

    The phase runs under `jax.shard_map`, one program per device. XLA's automatic
    partitioner does not split FFTs along batch axes (it gathers the whole batch onto
    every device first: [jax#15680](https://github.com/jax-ml/jax/issues/15680),
    [openxla/xla#24](https://github.com/openxla/xla/issues/24)), hence the explicit
    per-device program:

    - the batch is split over both mesh axes when their product divides it (else over
      the data axis, else not at all), so every device convolves its own examples;
    - each kernel arrives split over output channels and is gathered whole
      (`jax.lax.all_gather` over the model axis) inside the per-device program; the
      transpose of that gather sums the kernel gradients over the devices and splits
      them again. The whole kernels stay alive for the backward pass. (Recomputing them
      there instead, with a `jax.checkpoint` policy that saves everything but them, fails
      in JAX 0.10: remat inserts `reduce_precision` on complex residuals, which it does
      not accept.)

    **Arguments:**

    - `model`: a model from [`cfconv.models`][].
    - `images`: a batch of shape `(batch, channels, h, w)`.
    - `kernels`: this step's kernels, from the model's `kernels` method (split over
      output channels as [`cfconv.distributed.tree_shardings`][] splits kernel states).
    - `mesh`: a mesh from [`cfconv.distributed.make_mesh`][].

    **Returns:**

    The logits, shape `(batch, num_outputs)`, split like the batch.
    """
    check_mesh(mesh)
    batch = images.shape[0]
    if batch % mesh.size == 0:
        batch_spec = P((DATA_AXIS, MODEL_AXIS))
    elif batch % int(mesh.shape[DATA_AXIS]) == 0:
        batch_spec = P(DATA_AXIS)
    else:
        batch_spec = P()
    size = _model_size(mesh)

    def kernel_spec(kernel):
        split = size > 1 and kernel.ndim == 4 and kernel.shape[1] % size == 0
        return P(None, MODEL_AXIS) if split else P()

    kernel_specs = jax.tree.map(kernel_spec, kernels)
    arrays, static = eqx.partition(model, eqx.is_array)

    def gather(kernel, spec):
        if spec == P():
            return kernel
        return jax.lax.all_gather(kernel, MODEL_AXIS, axis=1, tiled=True)

    def local(arrays, images, kernels):
        kernels = jax.tree.map(gather, kernels, kernel_specs)
        return jax.vmap(eqx.combine(arrays, static), in_axes=(0, None))(images, kernels)

    run = jax.shard_map(
        local, mesh=mesh, in_specs=(P(), batch_spec, kernel_specs), out_specs=batch_spec
    )
    return run(arrays, images, kernels)
