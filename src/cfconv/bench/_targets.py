"""The targets of issue 4: ratios to the spatial 3x3 CNN measured in the same run."""

import dataclasses
from collections.abc import Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class Target:
    """One target: `row`'s `metric` (`"step_ratio"` or `"memory_ratio"`) at most `limit`.

    **Fields:**

    - `row`: the row name, e.g. `"sparse-vmap-2^18"`.
    - `metric`: `"step_ratio"` or `"memory_ratio"`.
    - `limit`: the largest ratio that meets the target.
    - `description`: what is compared, in words.
    """

    row: str
    metric: str
    limit: float
    description: str


TARGETS: tuple[Target, ...] = (
    Target("sparse-vmap-2^18", "step_ratio", 1.5,
           "sparse+vmap, 2^18 positions: train step vs the CNN's"),
    Target("sparse-vmap-2^18", "memory_ratio", 2.0,
           "sparse+vmap, 2^18 positions: training memory vs the CNN's"),
    Target("sparse-vmap-2^12", "step_ratio", 1.2,
           "sparse, 2^12 positions: train step vs the CNN's"),
    Target("inference-stored", "step_ratio", 1.0,
           "inference with stored kernels vs the CNN's inference"),
    Target("dense-exact", "step_ratio", 10.0,
           "exact dense gradient (every position): train step vs the CNN's"),
    Target("dense-exact", "memory_ratio", 2.0,
           "exact dense gradient (every position): training memory vs the CNN's"),
)  # fmt: skip
"""The targets of issue 4 (CPU, batch 32, 150x150x3): each ratio at most its limit."""


def check_targets(
    rows: Sequence[dict[str, Any]], targets: Sequence[Target] = TARGETS
) -> list[dict[str, Any]]:
    """Which targets the measured rows meet.

    **Arguments:**

    - `rows`: the `"rows"` of a [`cfconv.bench.run_benchmark`][] result.
    - `targets`: default [`cfconv.bench.TARGETS`][].

    **Returns:**

    One dict per target: `row`, `metric`, `limit`, `description`, `value` (the measured
    ratio or `None`) and `status`: `"met"`, `"missed"` or `"not measured"`.
    """
    by_name = {row["name"]: row for row in rows}
    results = []
    for target in targets:
        value = by_name.get(target.row, {}).get(target.metric)
        if value is None:
            status = "not measured"
        else:
            status = "met" if value <= target.limit else "missed"
        results.append({**dataclasses.asdict(target), "value": value, "status": status})
    return results
