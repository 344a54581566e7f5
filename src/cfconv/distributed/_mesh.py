"""Device meshes with a data axis and a model axis."""

import re
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import AxisType, Mesh


DATA_AXIS = "data"
"""The mesh axis that batches are split over (data parallelism)."""

MODEL_AXIS = "model"
"""The mesh axis that kernel states are split over, by output channel (model parallelism)."""

_MESH_TEXT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_mesh(text: str) -> tuple[int, int]:
    """Read a mesh shape written `DATAxMODEL`, as `cfconv train --mesh` takes it.

    **Arguments:**

    - `text`: e.g. `"4x2"`: four devices along the data axis times two along the model
      axis.

    **Returns:**

    The pair `(data, model)` of positive integers.

    !!! example

        ```python
        assert cfconv.distributed.parse_mesh("4x2") == (4, 2)
        ```
    """
    match = _MESH_TEXT.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"`mesh` must be written DATAxMODEL, e.g. '4x2', got {text!r}")
    data, model = int(match.group(1)), int(match.group(2))
    if data < 1 or model < 1:
        raise ValueError(f"`mesh` sizes must be positive, got {text!r}")
    return data, model


def make_mesh(
    data: int | None = None,
    model: int = 1,
    *,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A two-axis device mesh: `data` devices along the data axis times `model` along the
    model axis.

    Batches are split over the data axis; kernel states (and the generators' per-channel
    MLP stacks) over the model axis (see [`cfconv.distributed.shard`][]). The axes are
    named [`DATA_AXIS`][cfconv.distributed.DATA_AXIS] and
    [`MODEL_AXIS`][cfconv.distributed.MODEL_AXIS] and have JAX's automatic axis type:
    XLA's partitioner decides how to split every computation from the shardings of its
    inputs and the constraints in the step.

    **Arguments:**

    - `data`: devices along the data axis; `None` (default): all devices not used by the
      model axis.
    - `model`: devices along the model axis (default 1: pure data parallelism).
    - `devices`: the devices to use (default `jax.devices()`: every device of every
      process). `data * model` must equal their number.

    **Returns:**

    A `jax.sharding.Mesh` with axes `("data", "model")`.

    !!! example

        ```python
        mesh = cfconv.distributed.make_mesh()  # every device on the data axis
        ```
    """
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` must not be empty")
    if isinstance(model, bool) or not isinstance(model, int) or model < 1:
        raise ValueError(f"`model` must be a positive integer, got {model!r}")
    if data is None:
        if len(devices) % model:
            raise ValueError(
                f"`model` {model} does not divide the number of devices {len(devices)}"
            )
        data = len(devices) // model
    if isinstance(data, bool) or not isinstance(data, int) or data < 1:
        raise ValueError(f"`data` must be a positive integer, got {data!r}")
    if data * model != len(devices):
        raise ValueError(
            f"`data` x `model` = {data} x {model} = {data * model} must equal the number of "
            f"devices, {len(devices)} (pass `devices=jax.devices()[:{data * model}]` to use "
            "fewer)"
        )
    return jax.make_mesh(
        (data, model), (DATA_AXIS, MODEL_AXIS), (AxisType.Auto, AxisType.Auto), devices=devices
    )


def mesh_info(mesh: Mesh) -> dict[str, Any]:
    """A JSON-serialisable description of a mesh, as the metrics of `cfconv train` record it.

    **Arguments:**

    - `mesh`: a mesh from [`cfconv.distributed.make_mesh`][].

    **Returns:**

    `{"data", "model", "devices", "processes", "platform"}`: the axis sizes, the number
    of devices and of processes the mesh spans, and the devices' platform (`"cpu"`,
    `"gpu"`, ...).
    """
    check_mesh(mesh)
    devices = list(mesh.devices.flat)
    return {
        "data": int(mesh.shape[DATA_AXIS]),
        "model": int(mesh.shape[MODEL_AXIS]),
        "devices": len(devices),
        "processes": len({d.process_index for d in devices}),
        "platform": devices[0].platform,
    }


def check_mesh(mesh: Any) -> Mesh:
    """Raise unless `mesh` is a `Mesh` with exactly the axes `("data", "model")`."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if tuple(mesh.axis_names) != (DATA_AXIS, MODEL_AXIS):
        raise ValueError(
            f"`mesh` must have the axes {(DATA_AXIS, MODEL_AXIS)} (see "
            f"cfconv.distributed.make_mesh), got {tuple(mesh.axis_names)}"
        )
    return mesh


def as_mesh(mesh: "Mesh | tuple[int, int] | str") -> Mesh:
    """A mesh from a `Mesh`, a `(data, model)` pair, or `"DATAxMODEL"` text."""
    if isinstance(mesh, str):
        mesh = parse_mesh(mesh)
    if isinstance(mesh, tuple):
        if len(mesh) != 2:
            raise ValueError(f"`mesh` must be a (data, model) pair, got {mesh!r}")
        return make_mesh(*mesh)
    return check_mesh(mesh)


def initialize(spec: str = "auto") -> None:
    """Join a multi-process run: `jax.distributed.initialize`, from one string.

    Call it first thing in every process, before any other JAX call; afterwards
    `jax.devices()` lists the devices of every process, and a mesh from
    [`cfconv.distributed.make_mesh`][] spans them all.

    **Arguments:**

    - `spec`: `"auto"` (default) lets JAX read the cluster's environment (SLURM, Open MPI,
      Kubernetes, ...; `JAX_COORDINATOR_ADDRESS` may name the coordinator); or
      `"HOST:PORT,NUM_PROCESSES,PROCESS_ID"` sets everything, e.g.
      `"10.0.0.1:1234,2,0"` for the first of two processes (use the same `HOST:PORT`,
      where process 0 runs, in every process).
    """
    if not isinstance(spec, str):
        raise TypeError(f"`spec` must be a string, got {spec!r}")
    if spec == "auto":
        jax.distributed.initialize()
        return
    parts = spec.split(",")
    try:
        address, num, pid = parts
        num_processes, process_id = int(num), int(pid)
    except ValueError:
        raise ValueError(
            f"`spec` must be 'auto' or HOST:PORT,NUM_PROCESSES,PROCESS_ID, got {spec!r}"
        ) from None
    if ":" not in address or num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(
            f"`spec` must be 'auto' or HOST:PORT,NUM_PROCESSES,PROCESS_ID with "
            f"0 <= PROCESS_ID < NUM_PROCESSES, got {spec!r}"
        )
    jax.distributed.initialize(address, num_processes=num_processes, process_id=process_id)
