"""Data-parallel training and kernel states split over devices and processes.

JAX fixes its devices at start-up, so the checks on 8 devices run in a subprocess with
forced CPU devices (`tests/distributed_worker.py`), and the multi-process check starts two
`cfconv train --distributed` processes joined over loopback. The references are the same
computations on this process's single device, without a mesh.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

import cfconv
from cfconv import cli
from cfconv.distributed import (
    ShardedSparse,
    make_mesh,
    mesh_info,
    parse_mesh,
    tree_shardings,
)
from cfconv.models import make_model
from cfconv.train import TrainConfig, load_checkpoint


HERE = pathlib.Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """Everything the 8-device subprocess measured."""
    path = tmp_path_factory.mktemp("worker") / "out.npz"
    done = subprocess.run([sys.executable, str(HERE / "distributed_worker.py"), str(path)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(np.load(path))


MESHES = ["8x1", "4x2", "1x8"]


def test_worker_sees_eight_devices(worker):
    assert int(worker["device_count"]) == 8


@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_steps_match_one_device(worker, mesh):
    np.testing.assert_allclose(worker[f"{mesh}/losses"], worker["none/losses"], rtol=1e-5)
    for layer in (0, 1):
        np.testing.assert_allclose(
            worker[f"{mesh}/state{layer}"], worker[f"none/state{layer}"], rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(worker[f"{mesh}/params"], worker["none/params"], rtol=1e-4,
                               atol=1e-6)  # fmt: skip
    # The steps changed the states (else the comparison would prove little).
    assert worker["none/losses"][0] != worker["none/losses"][1]


def test_error_feedback_on_a_mesh_matches_one_device(worker):
    ours, reference = "feedback/4x2", "feedback/none"
    np.testing.assert_allclose(worker[f"{ours}/losses"], worker[f"{reference}/losses"],
                               rtol=1e-5)  # fmt: skip
    for layer in (0, 1):
        for name in ("state", "residual"):
            np.testing.assert_allclose(worker[f"{ours}/{name}{layer}"],
                                       worker[f"{reference}/{name}{layer}"], rtol=1e-4,
                                       atol=1e-6)  # fmt: skip
        residual = worker[f"{reference}/residual{layer}"]
        assert np.abs(residual).sum() > 0
        # Split over output channels on the model axis, like the kernel.
        shapes = [tuple(s) for s in worker[f"{ours}/residual{layer}_shard_shapes"]]
        assert shapes == [(residual.shape[0], residual.shape[1] // 2, *residual.shape[2:])]


@pytest.mark.parametrize("mesh", MESHES)
def test_each_device_holds_one_model_share_of_every_state(worker, mesh):
    _, model = parse_mesh(mesh)
    for layer in (0, 1):
        full = worker[f"{mesh}/state{layer}"].shape
        shapes = worker[f"{mesh}/state{layer}_shard_shapes"]
        assert int(worker[f"{mesh}/state{layer}_devices"]) == 8
        # One shard shape: (cin, cout / model, h, wf) on every device.
        assert [tuple(s) for s in shapes] == [(full[0], full[1] // model, *full[2:])]
    stack = worker[f"{mesh}/stack"].shape  # the hw_cin MLP stack: one MLP per output channel
    assert [tuple(s) for s in worker[f"{mesh}/stack_shard_shapes"]] == [
        (stack[0] // model, *stack[1:])
    ]


def test_second_step_does_not_recompile(worker):
    for mesh in ["none", *MESHES]:
        assert int(worker[f"{mesh}/recompiles"]) == 0, mesh


def test_compiled_memory_per_device_shrinks(worker):
    # Kernel states: (1, 8, 16, 9) and (8, 8, 16, 9) complex64.
    state_bytes = (1 + 8) * 8 * 16 * 9 * 8
    single = int(worker["none/argument_bytes"])
    for mesh in MESHES:
        _, model = parse_mesh(mesh)
        saved = single - int(worker[f"{mesh}/argument_bytes"])
        # At least the states' share that other devices hold is gone from each device.
        assert saved >= state_bytes * (1 - 1 / model), mesh
    # Splitting the batch 8 ways shrinks the temporaries (activations) of the step.
    assert int(worker["8x1/temp_bytes"]) < int(worker["none/temp_bytes"]) / 2


def test_scaling_row_reads_the_shards(worker):
    assert int(worker["row/devices"]) == 8
    assert int(worker["row/state_bytes_per_device"]) * 8 == int(worker["row/state_bytes"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TRAIN = ["train", "--model", "hw_cin", "--mlp-hidden", "4", "--width", "4", "--depth", "1",
         "--max-per-class", "10", "--batch-size", "16", "--positions", "64", "--epochs", "1",
         "--no-augment"]  # fmt: skip


def test_two_processes_agree_with_one(tmp_path):
    """Two processes with two CPU devices each, joined by `jax.distributed.initialize`
    over loopback (Gloo collectives), train on a 2x2 mesh; the metrics and the saved
    model, states and optimizer state equal a single-device run's."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")  # fmt: skip
    out = tmp_path / "multi"
    argv = [*TRAIN, "--mesh", "2x2", "--checkpoint", str(out), "--metrics-out",
            str(out / "metrics.json")]  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cfconv", *argv, "--distributed", f"127.0.0.1:{port},2,{i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-4000:]

    ref = tmp_path / "single"
    assert cli.main([*TRAIN, "--mesh", "1x1", "--checkpoint", str(ref), "--metrics-out",
                     str(ref / "metrics.json")]) == 0  # fmt: skip
    multi = json.loads((out / "metrics.json").read_text())
    single = json.loads((ref / "metrics.json").read_text())
    assert multi["mesh"] == {"data": 2, "model": 2, "devices": 4, "processes": 2,
                             "platform": "cpu"}  # fmt: skip
    assert single["mesh"]["devices"] == 1
    for key in ("train_loss", "val_loss", "val_acc"):
        assert np.isclose(multi["epochs"][0][key], single["epochs"][0][key], rtol=1e-5), key

    model = make_model("hw_cin", in_channels=1, num_classes=10, width=4, depth=1,
                       mlp_hidden=(4,), key=jax.random.key(0))  # fmt: skip
    # `cfconv train` keeps error feedback's residuals (the default) in the states.
    states = tuple(s.with_residual() for s in model.init_states((8, 8), key=jax.random.key(0)))
    opt_state = TrainConfig().optimizer().init(eqx.filter(model, eqx.is_inexact_array))
    like = (model, states, opt_state, jax.random.key_data(jax.random.key(0)))
    got, _ = load_checkpoint(out / "checkpoint.eqx", like)
    want, _ = load_checkpoint(ref / "checkpoint.eqx", like)
    for a, b in zip(jax.tree.leaves(eqx.filter(got, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(want, eqx.is_array))):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_sharded_sparse_equals_sparse_on_one_device():
    layer = cfconv.CFConv2d(2, 4, "hw_cin", hidden=(4,), key=jax.random.key(0))
    state = layer.init_state((8, 8), key=jax.random.key(1))
    sparse = cfconv.Sparse(num=200, rate=0.3)  # with replacement: repeated positions too
    key = jax.random.key(2)

    def loss(generator, strategy):
        kernel, new = strategy(generator, state, (8, 8), key=key)
        return np.float32(0) + (abs(kernel.dense()) ** 2).sum(), new

    mesh = make_mesh(1, 1)
    (want, want_state), want_grad = eqx.filter_value_and_grad(loss, has_aux=True)(
        layer.generator, sparse
    )
    (got, got_state), got_grad = eqx.filter_value_and_grad(loss, has_aux=True)(
        layer.generator, ShardedSparse(sparse, mesh)
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_state.kernel, want_state.kernel, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree.leaves(eqx.filter(got_grad, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(want_grad, eqx.is_array))):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sharding_rules():
    mesh = make_mesh(1, 1)
    model = make_model("hw_cin", in_channels=1, num_classes=2, width=4, depth=1,
                       mlp_hidden=(4,), key=jax.random.key(0))  # fmt: skip
    states = model.init_states((8, 8), key=jax.random.key(1))
    state_specs = [s.kernel.spec for s in tree_shardings(states, mesh)]
    assert state_specs == [jax.sharding.PartitionSpec(None, "model")]
    generator = tree_shardings(model, mesh).layers[0].generator
    assert generator.real.layers[0].weight.spec == jax.sharding.PartitionSpec("model")
    head = tree_shardings(model, mesh).head.layers[0].weight
    assert head.spec == jax.sharding.PartitionSpec()


def test_parse_and_make_mesh():
    assert parse_mesh("4x2") == (4, 2)
    assert parse_mesh(" 1X8 ") == (1, 8)
    for bad in ("4", "4x", "x2", "0x2", "4x2x1", "-1x2", "ax2"):
        with pytest.raises(ValueError, match="`mesh`"):
            parse_mesh(bad)
    mesh = make_mesh()
    assert mesh_info(mesh) == {"data": jax.device_count(), "model": 1,
                               "devices": jax.device_count(), "processes": 1,
                               "platform": jax.devices()[0].platform}  # fmt: skip
    with pytest.raises(ValueError, match="`data`"):
        make_mesh(2 * jax.device_count(), 1)
    with pytest.raises(ValueError, match="`model`"):
        make_mesh(None, 0)


def test_initialize_rejects_bad_specs():
    for bad in ("localhost", "localhost:1,2", "localhost:1,2,2", "host,2,0"):
        with pytest.raises(ValueError, match="`spec`"):
            cfconv.distributed.initialize(bad)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--mesh", "4"], "DATAxMODEL"),
        (["train", "--mesh", "0x1"], "DATAxMODEL"),
        (["train", "--mesh", f"{2 * jax.device_count()}x1"], "number of devices"),
    ],
)
def test_cli_rejects_bad_meshes(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code != 0
    assert message in capsys.readouterr().err + str(info.value.code)
