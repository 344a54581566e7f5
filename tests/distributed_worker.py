"""Runs in a subprocess with 8 forced CPU devices (XLA_FLAGS must be set before JAX is
imported, so `tests/test_distributed.py` starts this script); writes what it measured to
the `.npz` file named on the command line, for the tests to check."""

import os
import sys


os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import cfconv  # noqa: E402
from cfconv.distributed import make_mesh, scaling_row  # noqa: E402
from cfconv.models import make_model  # noqa: E402
from cfconv.train import make_train_step  # noqa: E402


SIZE, WIDTH, BATCH, STEPS = (16, 16), 8, 16, 2
MESHES = {"none": None, "8x1": (8, 1), "4x2": (4, 2), "1x8": (1, 8)}


def count_compilations():
    count = [0]

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    return count


def run_feedback(mesh_shape, start, out):
    """A few SGD steps with error feedback (`Sparse(error_feedback=True)`): the residuals
    are split like the kernels, and the kernel gradient reaches them through the gather."""
    mesh = None if mesh_shape is None else make_mesh(*mesh_shape)
    model, states = jax.tree.map(lambda a: a.copy() if eqx.is_array(a) else a, start)
    states = tuple(state.with_residual() for state in states)
    optimizer = optax.sgd(0.1)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    rng = np.random.default_rng(1)
    images = rng.normal(size=(BATCH, 1, *SIZE)).astype(np.float32)
    labels = (np.arange(BATCH) % 3).astype(np.int32)
    strategy = cfconv.Sparse(num=64, error_feedback=True, write_back=True)
    step = make_train_step(optimizer, strategy, SIZE, mesh=mesh)
    losses = []
    for i in range(STEPS + 1):
        model, states, opt_state, metrics = step(model, states, opt_state, images, labels,
                                                 jax.random.key(20 + i))  # fmt: skip
        losses.append(float(metrics["loss"]))
    name = "none" if mesh_shape is None else f"{mesh_shape[0]}x{mesh_shape[1]}"
    out[f"feedback/{name}/losses"] = np.asarray(losses)
    for layer, state in enumerate(states):
        out[f"feedback/{name}/state{layer}"] = np.asarray(state.kernel)
        out[f"feedback/{name}/residual{layer}"] = np.asarray(state.residual)
        shapes = sorted({s.data.shape for s in state.residual.addressable_shards})
        out[f"feedback/{name}/residual{layer}_shard_shapes"] = np.asarray(shapes)


def run(mesh_shape, start, out):
    """A few SGD steps of a small `hw_cin` net (one MLP per output channel, so both the
    kernel states and the MLP stacks are split over the model axis)."""
    mesh = None if mesh_shape is None else make_mesh(*mesh_shape)
    # Fresh copies: the step donates its arguments.
    model, states = jax.tree.map(lambda a: a.copy() if eqx.is_array(a) else a, start)
    optimizer = optax.sgd(0.1)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, 1, *SIZE)).astype(np.float32)
    labels = (np.arange(BATCH) % 3).astype(np.int32)
    step = make_train_step(optimizer, cfconv.Sparse(num=64), SIZE, mesh=mesh)
    memory = step.lower(model, states, opt_state, images, labels, jax.random.key(9))
    memory = memory.compile().memory_analysis()
    losses, compiles = [], count_compilations()
    for i in range(STEPS):
        if i == 1:
            compiles[0] = 0
        model, states, opt_state, metrics = step(model, states, opt_state, images, labels,
                                                 jax.random.key(10 + i))  # fmt: skip
        losses.append(float(metrics["loss"]))
    name = "none" if mesh_shape is None else f"{mesh_shape[0]}x{mesh_shape[1]}"
    out[f"{name}/losses"] = np.asarray(losses)
    out[f"{name}/recompiles"] = np.asarray(compiles[0])
    for layer, state in enumerate(states):
        out[f"{name}/state{layer}"] = np.asarray(state.kernel)
        shapes = sorted({s.data.shape for s in state.kernel.addressable_shards})
        out[f"{name}/state{layer}_shard_shapes"] = np.asarray(shapes)
        out[f"{name}/state{layer}_devices"] = np.asarray(
            len({s.device for s in state.kernel.addressable_shards})
        )
    stack = model.layers[1].generator.real.layers[0].weight  # (stack, out, in)
    out[f"{name}/stack_shard_shapes"] = np.asarray(
        sorted({s.data.shape for s in stack.addressable_shards})
    )
    out[f"{name}/stack"] = np.asarray(stack)
    params = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    out[f"{name}/params"] = np.concatenate([np.ravel(p) for p in params])
    out[f"{name}/argument_bytes"] = np.asarray(memory.argument_size_in_bytes)
    out[f"{name}/temp_bytes"] = np.asarray(memory.temp_size_in_bytes)


def main(path):
    out = {"device_count": np.asarray(jax.device_count())}
    model = make_model("hw_cin", in_channels=1, num_classes=3, width=WIDTH, depth=2,
                       mlp_hidden=(4,), key=jax.random.key(0))  # fmt: skip
    start = (model, model.init_states(SIZE, key=jax.random.key(1)))
    for shape in MESHES.values():
        run(shape, start, out)
    for shape in (None, (4, 2)):
        run_feedback(shape, start, out)
    row = scaling_row(1, 8, model_name="hw_cin", width=WIDTH, depth=1, image_size=8,
                      batch_size=8, positions=64, steps=1)  # fmt: skip
    for key in ("state_bytes", "state_bytes_per_device", "devices"):
        out[f"row/{key}"] = np.asarray(row[key])
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
