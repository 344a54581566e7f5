"""Build every variant's step, measure its compiled memory, time them interleaved."""

import dataclasses
import os
import sys
from typing import Any

import equinox as eqx
import jax
import numpy as np
import optax

from .._custom_types import LogStream
from .._layerwise import Layerwise
from .._strategies import AbstractStrategy
from ._breakdown import BREAKDOWN_PIECES, make_pieces
from ._config import SPARSE_GROUPS, BenchConfig, position_label
from ._machine import available_memory, device_info, hugetlb_enabled, versions
from ._measure import Timed, compiled_memory, time_interleaved
from ._targets import check_targets


RATE = 0.1
"""The sparse EMA rate of every sparse variant (the paper's)."""

LEARNING_RATE = 1e-3
"""Adam's learning rate in every training step (as `cfconv train`)."""


def _group(name: str) -> str:
    if name == "spatial":
        return "baseline"
    if name.startswith("naive-"):
        return "table1"
    if name.startswith("sparse-"):
        return "sparse"
    if name.startswith("inference-"):
        return "inference"
    if name.startswith("breakdown"):
        return "breakdown"
    return "dense"


def _describe(strategy: Any) -> str:
    """A strategy's repr on one line (a table cell); a `Layerwise` as its runs of equal
    layers, e.g. `Layerwise([Sparse(num=None, ...)] + 5 * [Sparse(num=4096, ...)])`."""
    if not isinstance(strategy, Layerwise):
        return eqx.tree_pformat(strategy, width=10**9)
    runs: list[list] = []
    for layer in strategy.strategies:
        if runs and runs[-1][0] == layer:
            runs[-1][1] += 1
        else:
            runs.append([layer, 1])
    parts = [f"[{_describe(s)}]" if n == 1 else f"{n} * [{_describe(s)}]" for s, n in runs]
    return f"Layerwise({' + '.join(parts)})"


def _training_variant(name: str, config: BenchConfig) -> tuple[str, Any]:
    """`(model name, strategy)` of a training variant, with the strategies `cfconv
    train` uses for its `--strategy` names."""
    from .. import Chunked
    from ..train import TrainConfig

    if name == "spatial":
        return "spatial", "dense"
    if name.startswith("naive-"):
        return name.removeprefix("naive-"), TrainConfig(strategy="naive").kernel_strategy()
    if name == "dense-exact":
        chunk = config.exact_chunk_size
        return "hw_cin_cout", Chunked() if chunk is None else Chunked(chunk_size=chunk)
    for prefix in SPARSE_GROUPS:
        if name.startswith(prefix + "-"):
            num = next(p for p in config.positions if name == f"{prefix}-{position_label(p)}")
            # "sparse-train", "sparse-all": the update of `cfconv train`'s defaults (write-back,
            # error feedback), "sparse-all" with the first layer's grid whole.
            positions = ("all", num) if prefix == "sparse-all" else num
            train = TrainConfig(positions=positions, depth=config.depth, rate=RATE,
                                chunk_size=config.chunk_size)  # fmt: skip
            if prefix in ("sparse-scan", "sparse-vmap"):  # the paper's step, its tables'
                train = dataclasses.replace(train, strategy=prefix, write_back=False,
                                            sampling="uniform", error_feedback=False)  # fmt: skip
            return "hw_cin_cout", train.kernel_strategy()
    train = TrainConfig(strategy=name, chunk_size=config.chunk_size)
    return "hw_cin_cout", train.kernel_strategy()


def run_benchmark(
    config: BenchConfig | None = None,
    *,
    log: LogStream | None = sys.stderr,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure the paper's Tables 1-3 in this process: memory, step times and ratios.

    For every selected variant (see [`cfconv.bench.BenchConfig`][]): the parameter
    count ([`cfconv.parameter_count`][]), the compiled memory of its jitted step
    ([`cfconv.bench.compiled_memory`][]), and, if that memory is within the limit, the
    median wall time of its step, timed round-robin with every other variant
    ([`cfconv.bench.time_interleaved`][]). Training variants run
    [`cfconv.train.make_train_step`][] with Adam (learning rate 1e-3) on random
    `batch_size x 3 x image_size x image_size` images, as `cfconv train` would; the
    variants of one model share one model, states and optimizer state, which each step
    passes on to the next. Inference variants run [`cfconv.train.make_eval_step`][] (the
    stored kernels). The breakdown times the pieces of the sparse-vmap step with
    `breakdown_positions` positions (see [`cfconv.bench.BREAKDOWN_PIECES`][]).

    **Arguments:**

    - `config`: the settings; default `BenchConfig()` (the paper's size).
    - `log`: where progress goes (`None`: silent).
    - `settings`: extra entries for the result's `"settings"` (e.g. the command line).

    **Returns:**

    A JSON-serialisable dict `{"device", "versions", "settings", "rows", "targets"}`.
    Each row has `name`, `group`, `model`, `strategy`, `positions`, `params`,
    `memory_bytes`, `memory_ratio`, `fits`, `step_s` (median seconds, `None` if not
    run), `step_ratio`, `times` (every timed call), `share` (breakdown rows: the share
    of the step they divide) and `note`. Ratios are to the `spatial` row, inference rows
    to `inference-spatial`. `targets` is [`cfconv.bench.check_targets`][] of the rows.
    """
    from .. import parameter_count
    from ..models import make_model
    from ..train import make_eval_step, make_train_step, uniform_frequency_weights

    config = BenchConfig() if config is None else config
    selected = config.selected()
    size = (config.image_size, config.image_size)
    limit = config.memory_limit
    if limit is None:
        available = available_memory()
        limit = None if available is None else int(0.9 * available)

    def say(text: str) -> None:
        if log is not None:
            log.write(text + "\n")
            log.flush()

    say(f"cfconv bench: {len(selected)} variants at {size[0]}x{size[1]}x3, batch "
        f"{config.batch_size}, width {config.width}, depth {config.depth}; memory limit "
        f"{'unknown' if limit is None else f'{limit / 2**30:.1f} GiB'}")  # fmt: skip
    key = jax.random.key(config.seed)
    k_models, k_steps = jax.random.split(key)
    rng = np.random.default_rng(config.seed)
    images = jax.numpy.asarray(rng.normal(size=(config.batch_size, 3, *size)).astype(np.float32))
    labels = jax.numpy.asarray((np.arange(config.batch_size) % 2).astype(np.int32))
    optimizer = optax.adam(LEARNING_RATE)
    pools: dict[Any, list] = {}

    def pool_for(model_name: str, weights: bool = False, residual: bool = False) -> list:
        """Model, states and optimizer state; states with sampling weights if `weights`,
        with error feedback's residuals if `residual`."""
        if model_name not in pools:
            k_model, k_states = jax.random.split(jax.random.fold_in(k_models, len(pools)))
            model = make_model(model_name, in_channels=3, num_classes=2, width=config.width,
                               depth=config.depth, key=k_model)  # fmt: skip
            states = model.init_states(size, key=k_states)
            opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
            pools[model_name] = [model, states, opt_state]
        if not (weights or residual):
            return pools[model_name]
        if (model_name, weights, residual) not in pools:
            # Copies: each pool's steps donate (and so delete) its states and opt_state.
            copy = lambda x: jax.numpy.copy(x) if eqx.is_array(x) else x  # noqa: E731
            model, states, opt_state = jax.tree.map(copy, pools[model_name])
            if weights:
                states = uniform_frequency_weights(states)
            if residual:
                states = tuple(state.with_residual() for state in states)
            pools[(model_name, weights, residual)] = [model, states, opt_state]
        return pools[(model_name, weights, residual)]

    rows: dict[str, dict[str, Any]] = {}
    tasks: list[Timed] = []
    for index, name in enumerate(selected):
        if name == "breakdown":
            continue
        row: dict[str, Any] = {"name": name, "group": _group(name), "model": None,
                               "strategy": None, "positions": None, "params": None,
                               "memory_bytes": None, "memory_ratio": None, "fits": None,
                               "step_s": None, "step_ratio": None, "times": [],
                               "share": None, "note": ""}  # fmt: skip
        rows[name] = row
        inference = name.startswith("inference-")
        strategy: Any = None
        if inference:
            model_name = "spatial" if name == "inference-spatial" else "hw_cin_cout"
            row["strategy"] = "Stored()" if model_name != "spatial" else None
        else:
            model_name, strategy = _training_variant(name, config)
            row["strategy"] = None if model_name == "spatial" else _describe(strategy)
            row["positions"] = getattr(strategy, "num", None)
            if isinstance(strategy, Layerwise):  # sparse-all: the count of the later layers
                later = strategy.strategies[1:]
                row["positions"] = getattr(later[0], "num", None) if later else None
                if not later:
                    row["note"] = "depth 1: its only layer is sampled whole"
        row["model"] = model_name
        ours = isinstance(strategy, AbstractStrategy)
        pool = pool_for(model_name, weights=ours and strategy.needs_frequency_weights,
                        residual=ours and strategy.needs_residual)  # fmt: skip
        row["params"] = parameter_count(pool[0])
        say(f"[{index + 1}/{len(selected)}] {name}: compiling")
        if inference:
            lower, run = _eval_callables(make_eval_step(size), pool, images, labels)
        else:
            # Keys drawn now, so that the timed calls do nothing but the step.
            keys = jax.random.split(jax.random.fold_in(k_steps, index),
                                    config.warmup + config.repeats)  # fmt: skip
            train_step = make_train_step(optimizer, strategy, size)
            lower, run = _train_callables(train_step, pool, images, labels, list(keys))
        try:
            row["memory_bytes"] = compiled_memory(lower())
        except Exception as error:  # e.g. XLA cannot compile a program this large
            row["note"] = f"cannot compile: {type(error).__name__}: {error}"
            row["fits"] = False
            say(f"  {row['note']}")
            continue
        memory = row["memory_bytes"]
        row["fits"] = memory is None or limit is None or memory <= limit
        say(f"  memory {_gib(memory)}, {'fits' if row['fits'] else 'does not fit'}")
        if not row["fits"]:
            row["note"] = (f"not run: its compiled memory ({_gib(memory)}) exceeds the limit "
                           f"({_gib(limit)})")  # fmt: skip
            continue
        tasks.append(Timed(name, run))

    breakdown_step = f"sparse-vmap-{position_label(config.breakdown_positions)}"
    if "breakdown" in selected and rows[breakdown_step]["fits"]:
        say(f"breakdown of {breakdown_step}: compiling the pieces on first call")
        pool = pool_for("hw_cin_cout")
        pieces = make_pieces(pool[0], images, size, config.breakdown_positions, RATE,
                             seed=config.seed)  # fmt: skip
        for piece_name, piece in pieces.items():
            tasks.append(Timed(f"breakdown-{piece_name}", _piece_callable(piece, pool)))
            rows[f"breakdown-{piece_name}"] = _breakdown_row(f"breakdown-{piece_name}",
                                                             breakdown_step)  # fmt: skip
        rows["breakdown-rest"] = _breakdown_row("breakdown-rest", breakdown_step)

    say(f"timing {len(tasks)} callables round-robin: {config.warmup} warm-up and up to "
        f"{config.repeats} timed rounds (budget {config.budget:g} s each)")  # fmt: skip
    time_interleaved(tasks, repeats=config.repeats, warmup=config.warmup,
                     budget=config.budget, log=log)  # fmt: skip
    for task in tasks:
        row = rows[task.name]
        row["times"] = task.times
        row["step_s"] = task.median
        if task.error is not None:
            row["note"] = f"failed: {task.error}"
    _finish_rows(rows, breakdown_step)

    result = {
        "device": device_info(),
        "versions": versions(),
        "settings": {
            **config.to_json(),
            "memory_limit_used": limit,
            "learning_rate": LEARNING_RATE,
            "rate": RATE,
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
            "malloc_hugetlb": hugetlb_enabled(),
            **(settings or {}),
        },
        "rows": list(rows.values()),
    }
    result["targets"] = check_targets(result["rows"])
    return result


def _eval_callables(eval_step, pool: list, images, labels):
    """`(lower, run)` for an evaluation step on the pool's current model and states."""

    def lower():
        return eval_step.lower(pool[0], pool[1], images, labels)  # pyright: ignore

    def run():
        jax.block_until_ready(eval_step(pool[0], pool[1], images, labels))

    return lower, run


def _train_callables(train_step, pool: list, images, labels, keys: list):
    """`(lower, run)` for a training step; `run` passes the pool's model, states and
    optimizer state to the step and keeps what it returns (the step donates them)."""

    def lower():
        return train_step.lower(*pool, images, labels, keys[0])

    def run():
        out = train_step(*pool, images, labels, keys.pop(0) if len(keys) > 1 else keys[0])
        jax.block_until_ready(out)
        pool[:] = list(out[:3])

    return lower, run


def _piece_callable(piece, pool: list):
    def run():
        jax.block_until_ready(piece(pool[0], pool[1]))

    return run


def _breakdown_row(name: str, step: str) -> dict[str, Any]:
    piece = name.removeprefix("breakdown-")
    note = BREAKDOWN_PIECES.get(piece, "the step minus the pieces above")
    return {"name": name, "group": "breakdown", "model": "hw_cin_cout", "strategy": step,
            "positions": None, "params": None, "memory_bytes": None, "memory_ratio": None,
            "fits": None, "step_s": None, "step_ratio": None, "times": [], "share": None,
            "note": note}  # fmt: skip


def _ratio(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _finish_rows(rows: dict[str, dict[str, Any]], breakdown_step: str) -> None:
    """Fill in the breakdown's rest, the ratios and the shares."""
    if "breakdown-rest" in rows:
        step = rows[breakdown_step]["step_s"]
        parts = [rows[f"breakdown-{p}"]["step_s"] for p in BREAKDOWN_PIECES]
        if step is not None and None not in parts:
            rows["breakdown-rest"]["step_s"] = step - sum(parts)  # pyright: ignore
    spatial = rows["spatial"]
    reference = rows.get("inference-spatial", {})
    for row in rows.values():
        base = reference if row["group"] == "inference" else spatial
        row["step_ratio"] = _ratio(row["step_s"], base.get("step_s"))
        row["memory_ratio"] = _ratio(row["memory_bytes"], base.get("memory_bytes"))
        if row["group"] == "breakdown":
            row["step_ratio"] = _ratio(row["step_s"], spatial["step_s"])
            row["share"] = _ratio(row["step_s"], rows[breakdown_step]["step_s"])


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.2f} GiB"
