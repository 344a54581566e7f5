"""`cfconv bench`: the tiny preset end to end, the JSON schema, ratios, memory, targets and
argument errors. No timed assertions: the numbers themselves are the benchmark's business."""

import contextlib
import dataclasses
import io
import json
import statistics

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cfconv.bench import (
    NOTES_MARKER,
    PRESETS,
    TARGETS,
    BenchConfig,
    Timed,
    check_targets,
    compiled_memory,
    run_benchmark,
    time_interleaved,
    variant_names,
    write_docs,
)
from cfconv.bench._machine import hugetlb_enabled, with_hugetlb
from cfconv.cli import main
from cfconv.models import make_model
from cfconv.train import make_train_step


ROW_KEYS = {"name", "group", "model", "strategy", "positions", "params", "memory_bytes",
            "memory_ratio", "fits", "step_s", "step_ratio", "times", "share", "note"}  # fmt: skip
TINY_ROWS = {"spatial", "naive", "sparse-vmap-2^6", "sparse-train-2^6", "sparse-all-2^6",
             "dense-exact",
             "inference-stored",
             "inference-spatial", "breakdown-mlp", "breakdown-ema", "breakdown-fft",
             "breakdown-mix", "breakdown-rest"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One run of `cfconv bench --preset tiny` with --json and --docs (shared by the
    tests below: compiling the variants is what takes the time)."""
    folder = tmp_path_factory.mktemp("bench")
    json_path, docs_path = folder / "bench.json", folder / "benchmarks.md"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["bench", "--preset", "tiny", "--no-reexec", "--json", str(json_path),
                     "--docs", str(docs_path)])  # fmt: skip
    assert code == 0
    return json.loads(json_path.read_text()), docs_path, out.getvalue()


def test_json_schema_and_row_names(tiny):
    result, _, _ = tiny
    assert set(result) == {"device", "versions", "settings", "rows", "targets"}
    assert result["device"]["platform"] == jax.default_backend()
    assert result["versions"]["jax"] == jax.__version__
    settings = result["settings"]
    assert settings["preset"] == "tiny"
    assert settings["image_size"] == PRESETS["tiny"].image_size
    assert settings["malloc_hugetlb"] == hugetlb_enabled()
    assert settings["command"].startswith("cfconv bench --preset=tiny")
    names = [row["name"] for row in result["rows"]]
    assert len(names) == len(set(names))
    assert set(names) == TINY_ROWS
    for row in result["rows"]:
        assert set(row) == ROW_KEYS, row["name"]


def test_times_ratios_and_memory_consistent(tiny):
    result, _, _ = tiny
    rows = {row["name"]: row for row in result["rows"]}
    for name, row in rows.items():
        if name == "breakdown-rest":
            continue
        # Every variant of the tiny preset fits and runs.
        assert row["times"], name
        assert row["step_s"] == statistics.median(row["times"])
        assert all(t > 0 for t in row["times"])
    for name, row in rows.items():
        base = rows["inference-spatial"] if row["group"] == "inference" else rows["spatial"]
        assert row["step_ratio"] == pytest.approx(row["step_s"] / base["step_s"], rel=1e-12)
        if row["group"] == "breakdown":
            assert row["memory_bytes"] is None
            continue
        assert isinstance(row["memory_bytes"], int) and row["memory_bytes"] > 0, name
        assert row["memory_ratio"] == pytest.approx(row["memory_bytes"] / base["memory_bytes"])
        assert isinstance(row["params"], int) and row["params"] > 0
        assert row["fits"] is True
    assert rows["spatial"]["step_ratio"] == 1.0 and rows["spatial"]["memory_ratio"] == 1.0
    assert rows["inference-spatial"]["step_ratio"] == 1.0
    step = rows["sparse-vmap-2^6"]["step_s"]
    pieces = sum(rows[f"breakdown-{p}"]["step_s"] for p in ("mlp", "ema", "fft", "mix"))
    assert rows["breakdown-rest"]["step_s"] == pytest.approx(step - pieces)
    assert rows["breakdown-mlp"]["share"] == pytest.approx(rows["breakdown-mlp"]["step_s"] / step)
    # Dense and sparse CF-Conv variants share one model: the same parameter count.
    assert rows["naive"]["params"] == rows["sparse-vmap-2^6"]["params"] == rows[
        "dense-exact"]["params"] == rows["sparse-train-2^6"]["params"]  # fmt: skip
    # The paper's step and the step of `cfconv train`'s defaults.
    assert rows["sparse-vmap-2^6"]["strategy"] == "Sparse(num=64, rate=0.1)"
    train = rows["sparse-train-2^6"]["strategy"]
    assert "write_back=True" in train and "error_feedback=True" in train
    # `cfconv train`'s default step: the first layer whole, the others at the row's count.
    default = rows["sparse-all-2^6"]
    assert PRESETS["tiny"].depth == 2 and default["positions"] == 64
    sparse = "rate=0.1, write_back=True, error_feedback=True"
    assert default["strategy"] == (
        f"Layerwise([Sparse(num=None, {sparse})] + [Sparse(num=64, {sparse})])"
    )


def test_sparse_all_at_depth_one():
    # One layer, sampled whole: the row names no count for the (absent) later layers.
    config = dataclasses.replace(PRESETS["tiny"], depth=1, variants=("sparse-all",),
                                 repeats=1, warmup=0)  # fmt: skip
    rows = {row["name"]: row for row in run_benchmark(config, log=None)["rows"]}
    row = rows["sparse-all-2^6"]
    assert row["positions"] is None and "depth 1" in row["note"]
    assert row["strategy"] == (
        "Layerwise([Sparse(num=None, rate=0.1, write_back=True, error_feedback=True)])"
    )


def test_spatial_memory_equals_compiled_memory_analysis(tiny):
    result, _, _ = tiny
    config = PRESETS["tiny"]
    size = (config.image_size, config.image_size)
    model = make_model("spatial", in_channels=3, num_classes=2, width=config.width,
                       depth=config.depth, key=jax.random.key(1))  # fmt: skip
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    step = make_train_step(optimizer, "dense", size)
    images = jnp.zeros((config.batch_size, 3, *size))
    labels = jnp.zeros((config.batch_size,), jnp.int32)
    stats = step.lower(model, (), opt_state, images, labels, jax.random.key(0)).compile()
    stats = stats.memory_analysis()
    expected = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
                + stats.output_size_in_bytes - stats.alias_size_in_bytes)  # fmt: skip
    spatial = next(row for row in result["rows"] if row["name"] == "spatial")
    assert spatial["memory_bytes"] == expected


def test_targets_follow_the_rows(tiny):
    result, _, _ = tiny
    rows = {row["name"]: row for row in result["rows"]}
    assert len(result["targets"]) == len(TARGETS)
    for target in result["targets"]:
        assert target["status"] in ("met", "missed", "not measured")
        row = rows.get(target["row"])
        if row is None:  # the tiny preset measures no 2^12 or 2^18 positions
            assert target["status"] == "not measured" and target["value"] is None
        else:
            assert target["value"] == row[target["metric"]]
            assert target["status"] == ("met" if target["value"] <= target["limit"] else "missed")


def test_markdown_and_docs_page(tiny):
    result, docs_path, printed = tiny
    assert "| `spatial` |" in printed and "### Targets" in printed
    page = docs_path.read_text()
    assert page.startswith("# Benchmarks")
    assert result["device"]["cpu"] in page and result["versions"]["jax"] in page
    assert "cfconv bench --preset=tiny" in page
    assert NOTES_MARKER in page
    # Regenerating keeps what was written below the marker.
    docs_path.write_text(page + "\nA hand-written note.\n")
    write_docs(docs_path, result, "cfconv bench --preset=tiny")
    again = docs_path.read_text()
    assert again.endswith("\nA hand-written note.\n")
    assert again.count(NOTES_MARKER) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--positions", "0"], "--positions"),
        (["--positions", "2^x"], "--positions"),
        (["--repeats", "0"], "--repeats"),
        (["--budget", "-1"], "--budget"),
        (["--memory-limit", "zero"], "--memory-limit"),
        (["--preset", "huge"], "--preset"),
        (["--quick", "--preset", "tiny"], "not allowed with"),
        (["--variants", "sparse-vmap-2^7"], "`variants`"),
        (["--positions", "64,2^6"], "`positions` must not repeat"),
        (["--devices", "0"], "--devices"),
        (["--devices", "3"], "--devices [3] must divide the width (4)"),
    ],
)
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--preset", "tiny", "--no-reexec", *argv])
    text = str(info.value.code) + capsys.readouterr().err
    assert info.value.code != 0
    assert message in text


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="`batch_size`"):
        BenchConfig(batch_size=0)
    with pytest.raises(ValueError, match="`positions`"):
        BenchConfig(positions=())
    with pytest.raises(ValueError, match="`variants`"):
        BenchConfig(variants=("spatial", "fast"))
    with pytest.raises(ValueError, match="`budget`"):
        BenchConfig(budget=0)
    with pytest.raises(ValueError, match="`exact_chunk_size`"):
        BenchConfig(exact_chunk_size=0)


def test_variant_selection():
    names = variant_names((2**12, 1000))
    assert "sparse-scan-2^12" in names and "sparse-vmap-1000" in names
    assert "sparse-train-2^12" in names
    config = BenchConfig(positions=(2**12, 2**18), variants=("sparse-train",))
    assert config.selected() == ("spatial", "sparse-train-2^12", "sparse-train-2^18")
    config = BenchConfig(positions=(2**12,), variants=("sparse-all", "sparse-train-2^12"))
    assert config.selected() == ("spatial", "sparse-train-2^12", "sparse-all-2^12")
    config = BenchConfig(positions=(2**12, 2**18), variants=("sparse-vmap", "breakdown"),
                         breakdown_positions=2**12)  # fmt: skip
    assert config.selected() == ("spatial", "sparse-vmap-2^12", "sparse-vmap-2^18", "breakdown")
    config = BenchConfig(positions=(2**12,), variants=("inference-stored",))
    assert config.selected() == ("spatial", "inference-stored", "inference-spatial")
    assert BenchConfig().selected() == variant_names(BenchConfig().positions)


def test_check_targets_boundaries():
    rows = [{"name": "sparse-vmap-2^18", "step_ratio": 1.5, "memory_ratio": 2.5},
            {"name": "dense-exact", "step_ratio": None, "memory_ratio": 1.0}]  # fmt: skip
    status = {(t["row"], t["metric"]): t["status"] for t in check_targets(rows)}
    assert status[("sparse-vmap-2^18", "step_ratio")] == "met"  # at the limit
    assert status[("sparse-vmap-2^18", "memory_ratio")] == "missed"
    assert status[("dense-exact", "step_ratio")] == "not measured"
    assert status[("dense-exact", "memory_ratio")] == "met"
    assert status[("inference-stored", "step_ratio")] == "not measured"


def test_compiled_memory_of_a_jitted_function():
    x = jnp.ones((64, 64))
    lowered = jax.jit(lambda a: (a @ a).sum()).lower(x)
    stats = lowered.compile().memory_analysis()
    expected = (stats.temp_size_in_bytes + stats.argument_size_in_bytes
                + stats.output_size_in_bytes - stats.alias_size_in_bytes)  # fmt: skip
    assert compiled_memory(lowered) == expected
    assert expected >= x.nbytes


def test_time_interleaved_round_robin_budget_and_errors():
    calls = []

    def task(name):
        return lambda: calls.append(name)

    def broken():
        raise RuntimeError("boom")

    tasks = [Timed("a", task("a")), Timed("b", broken), Timed("c", task("c"))]
    time_interleaved(tasks, repeats=3, warmup=1, budget=1e3)
    assert calls == ["a", "c"] * 4  # round-robin; the broken task is dropped
    assert tasks[1].error == "RuntimeError: boom" and tasks[1].times == []
    assert len(tasks[0].times) == 3 and tasks[0].median == statistics.median(tasks[0].times)
    # A tiny budget: one timed call, then the task stops repeating.
    stingy = Timed("d", task("d"))
    time_interleaved([stingy], repeats=3, warmup=0, budget=1e-12)
    assert len(stingy.times) == 1


def test_hugetlb_environment():
    assert not hugetlb_enabled({})
    env = with_hugetlb({"PATH": "/bin"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1" and env["PATH"] == "/bin"
    assert hugetlb_enabled(env)
    env = with_hugetlb({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert np.all([hugetlb_enabled(env)])
