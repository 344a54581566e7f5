"""Compiled memory, and interleaved timing of several callables in one process."""

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._custom_types import LogStream


def compiled_memory(lowered: Any) -> int | None:
    """Bytes a compiled program needs while it runs, from XLA's memory analysis.

    `temp + arguments + outputs - aliased` (donated arguments whose buffers the outputs
    reuse are counted once). Nothing is run or allocated.

    **Arguments:**

    - `lowered`: a `jax.stages.Lowered` (e.g. `jax.jit(f).lower(*args)`, or
      `train_step.lower(*args)` of [`cfconv.train.make_train_step`][]), an Equinox
      lowered function (with a `.lowered` attribute), or an already compiled
      `jax.stages.Compiled`.

    **Returns:**

    The number of bytes, or `None` where the backend gives no memory analysis.
    """
    lowered = getattr(lowered, "lowered", lowered)
    compiled = lowered.compile() if hasattr(lowered, "compile") else lowered
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return int(
        stats.temp_size_in_bytes
        + stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
    )


@dataclasses.dataclass
class Timed:
    """One callable to time: `run()` does one call and waits for its result."""

    name: str
    run: Callable[[], None]
    times: list[float] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None


def time_interleaved(
    tasks: Sequence[Timed],
    *,
    repeats: int,
    warmup: int,
    budget: float | int,
    log: LogStream | None = None,
) -> None:
    """Time every task round-robin: `warmup` untimed rounds, then up to `repeats` timed
    ones, each calling every task once in turn, so that whatever else the machine does
    slows all tasks alike. A task stops once its timed calls add up to more than `budget`
    seconds (after at least one). A task that raises is dropped, its `error` set.
    """
    for round_ in range(warmup + repeats):
        timed = round_ >= warmup
        for task in tasks:
            if task.error is not None or (timed and task.times and sum(task.times) > budget):
                continue
            start = time.perf_counter()
            try:
                task.run()
            except Exception as error:  # a variant that fails must not stop the others
                task.error = f"{type(error).__name__}: {error}"
                if log is not None:
                    log.write(f"  {task.name}: failed: {task.error}\n")
                continue
            seconds = time.perf_counter() - start
            if timed:
                task.times.append(seconds)
            if log is not None:
                what = f"rep {round_ - warmup + 1}/{repeats}" if timed else "warm-up"
                log.write(f"  {task.name}: {what}: {seconds:.3f} s\n")
                log.flush()
