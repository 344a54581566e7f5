"""Per-device memory and step time against the number of devices, and a projection."""

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np


def scaling_row(
    data: int,
    model: int,
    *,
    model_name: str = "hw_cin",
    width: int = 32,
    depth: int = 3,
    image_size: int = 32,
    batch_size: int = 16,
    positions: int = 1024,
    steps: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure one training step on a `data x model` mesh of this process's devices.

    Builds a CF-Conv net ([`cfconv.models.make_model`][]) with the sparse strategy and
    Adam, as `cfconv train` does, on the first `data * model` devices; compiles the step
    (without running it) for XLA's memory analysis; then runs `steps` steps after one
    warm-up step and takes the median wall time.

    **Arguments:**

    - `data`, `model`: the mesh shape.
    - `model_name`, `width`, `depth`, `image_size`, `batch_size`, `positions`: the
      network, images and sparse positions per layer (`batch_size` must be divisible by
      `data`, `width` by `model`).
    - `steps`: timed steps (at least 1).
    - `seed`: seeds the model and the data.

    **Returns:**

    A JSON-serialisable dict: `devices`, `mesh` (`"DATAxMODEL"`), `state_bytes` (all
    kernel states), `state_bytes_per_device` (read from the states' shards on the first
    device), XLA's per-device `argument_bytes`, `output_bytes`, `alias_bytes`,
    `temp_bytes`, `peak_bytes` (`argument + output - alias + temp`), `step_time_s`
    (median) and the settings.
    """
    import equinox as eqx
    import optax

    from .. import Sparse
    from ..models import make_model
    from ..train import make_train_step
    from ._mesh import make_mesh
    from ._sharding import shard

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}")
    devices = jax.devices()[: data * model]
    if len(devices) < data * model:
        raise ValueError(
            f"a {data}x{model} mesh needs {data * model} devices, this process sees "
            f"{jax.device_count()}"
        )
    mesh = make_mesh(data, model, devices=devices)
    size = (image_size, image_size)
    k_model, k_states, k_data = jax.random.split(jax.random.key(seed), 3)
    net = make_model(model_name, in_channels=1, num_classes=2, width=width, depth=depth,
                     key=k_model)  # fmt: skip
    states = net.init_states(size, key=k_states)
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(net, eqx.is_inexact_array))
    state_bytes = sum(int(s.kernel.nbytes) for s in states)
    net, states, opt_state = shard((net, states, opt_state), mesh)
    per_device = sum(
        int(shard.data.nbytes)
        for s in states
        for shard in s.kernel.addressable_shards
        if shard.device == devices[0]
    )
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(batch_size, 1, *size)).astype(np.float32)
    labels = (np.arange(batch_size) % 2).astype(np.int32)
    step = make_train_step(optimizer, Sparse(num=positions), size, mesh=mesh)
    key = jax.random.key(seed + 1)
    memory = step.lower(net, states, opt_state, images, labels, key).compile()  # pyright: ignore
    memory = memory.memory_analysis()
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        net, states, opt_state, metrics = step(net, states, opt_state, images, labels,
                                               jax.random.fold_in(key, i))  # fmt: skip
        jax.block_until_ready((net, states, opt_state, metrics))
        if i > 0:  # the first step compiles
            times.append(time.perf_counter() - start)
    fields = ("argument", "output", "alias", "temp")
    sizes = {f"{name}_bytes": int(getattr(memory, f"{name}_size_in_bytes")) for name in fields}
    peak = sizes["argument_bytes"] + sizes["output_bytes"] - sizes["alias_bytes"]
    return {
        "devices": data * model,
        "mesh": f"{data}x{model}",
        "platform": devices[0].platform,
        "state_bytes": state_bytes,
        "state_bytes_per_device": per_device,
        **sizes,
        "peak_bytes": peak + sizes["temp_bytes"],
        "step_time_s": statistics.median(times),
        "settings": dict(
            model=model_name,
            width=width,
            depth=depth,
            image_size=image_size,
            batch_size=batch_size,
            positions=positions,
            steps=steps,
        ),  # fmt: skip
    }


def scaling_rows(
    device_counts: Sequence[int] = (1, 2, 4, 8),
    *,
    axis: str = "model",
    timeout: float = 600.0,
    **settings: Any,
) -> list[dict[str, Any]]:
    """[`scaling_row`][cfconv.distributed.scaling_row] for several device counts, each in
    a fresh subprocess with that many forced CPU devices.

    JAX fixes its devices when it starts, so every count runs in its own Python process
    with `XLA_FLAGS=--xla_force_host_platform_device_count=N` and `JAX_PLATFORMS=cpu`.
    The forced devices share this machine's cores: the memory figures are XLA's
    per-device figures, but step times measure partitioning overhead, not speed-up.

    **Arguments:**

    - `device_counts`: the numbers of devices, e.g. `(1, 2, 4, 8)`.
    - `axis`: put the devices on the `"model"` axis (meshes `1xN`: kernel states split
      `N` ways) or on the `"data"` axis (meshes `Nx1`).
    - `timeout`: seconds allowed per subprocess.
    - `settings`: keyword arguments of `scaling_row` (`model_name`, `width`, `depth`,
      `image_size`, `batch_size`, `positions`, `steps`, `seed`).

    **Returns:**

    One dict per device count, as `scaling_row` returns them.

    !!! example

        ```python
        rows = cfconv.distributed.scaling_rows((1, 2, 4, 8), width=32, image_size=32)
        print(cfconv.distributed.scaling_table(rows))
        ```
    """
    if axis not in ("model", "data"):
        raise ValueError(f"`axis` must be 'model' or 'data', got {axis!r}")
    rows = []
    for n in device_counts:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`device_counts` must hold positive integers, got {n!r}")
        data, model = (1, n) if axis == "model" else (n, 1)
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
        ).strip()
        env["JAX_PLATFORMS"] = "cpu"
        request = json.dumps({"data": data, "model": model, **settings})
        done = subprocess.run(
            [sys.executable, "-m", "cfconv.distributed._scaling", request],
            env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"the {data}x{model} measurement failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def project_memory(
    rows: Sequence[dict[str, Any]],
    state_bytes: float,
    device_counts: Sequence[int] = (1, 2, 4, 8),
) -> list[dict[str, Any]]:
    """Project per-device memory to larger kernel states (a model, not a measurement).

    From measured rows of one configuration on `1xN` meshes, fit
    `peak(N) = fixed + split * S / N + whole * S`, where `S` is the rows' `state_bytes`:
    `split` (least squares over the rows) is the memory that the model axis divides
    (kernel states and what mirrors them), `whole` the memory every device holds whatever
    `N` (the whole kernels of the convolution phase and their gradients), `fixed` the
    rest. Scaling `S` to `state_bytes`, with `fixed` unchanged, gives the projection.

    **Arguments:**

    - `rows`: from [`scaling_rows`][cfconv.distributed.scaling_rows] with
      `axis="model"`, at least two device counts.
    - `state_bytes`: the kernel-state size to project to (all layers, bytes).
    - `device_counts`: the device counts to project for.

    **Returns:**

    One dict per device count: `devices`, `state_bytes`, `projected_peak_bytes`, and the
    fitted `fixed_bytes`, `split_ratio`, `whole_ratio`.
    """
    if len(rows) < 2 or len({r["devices"] for r in rows}) < 2:
        raise ValueError("`rows` must hold measurements for at least two device counts")
    measured = rows[0]["state_bytes"]
    n = np.array([r["devices"] for r in rows], dtype=np.float64)
    peak = np.array([r["peak_bytes"] for r in rows], dtype=np.float64)
    # peak = c0 + c1 / n: c1 is the split part, c0 the rest.
    design = np.stack([np.ones_like(n), 1.0 / n], axis=1)
    (c0, c1), *_ = np.linalg.lstsq(design, peak, rcond=None)
    split = c1 / measured
    # The part of c0 that grows with the kernels: the temporaries at the largest count.
    largest = max(rows, key=lambda r: r["devices"])
    whole = min(largest["temp_bytes"], c0) / measured
    fixed = c0 - whole * measured
    return [
        {
            "devices": int(d),
            "state_bytes": float(state_bytes),
            "projected_peak_bytes": float(fixed + split * state_bytes / d + whole * state_bytes),
            "fixed_bytes": float(fixed),
            "split_ratio": float(split),
            "whole_ratio": float(whole),
        }
        for d in device_counts
    ]


def scaling_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of measured rows: mesh, kernel-state bytes per device, XLA's
    argument, temporary and peak bytes per device, and the median step time."""
    lines = [
        "| mesh | devices | kernel states / device (MB) | arguments / device (MB) "
        "| temporaries / device (MB) | peak / device (MB) | median step (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mesh']} | {r['devices']} | {r['state_bytes_per_device'] / 1e6:.2f} "
            f"| {r['argument_bytes'] / 1e6:.2f} | {r['temp_bytes'] / 1e6:.2f} "
            f"| {r['peak_bytes'] / 1e6:.2f} | {r['step_time_s'] * 1e3:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    print(json.dumps(scaling_row(request.pop("data"), request.pop("model"), **request)))
