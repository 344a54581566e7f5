"""Benchmarks that reproduce the paper's Tables 1-3: `cfconv bench` and its pieces.

[`run_benchmark`][cfconv.bench.run_benchmark] measures, in one process, the parameter
counts, compiled training memory and interleaved step times of the spatial CNN and the
CF-Conv variants; [`markdown_report`][cfconv.bench.markdown_report] and
[`write_docs`][cfconv.bench.write_docs] turn its result into tables;
[`check_targets`][cfconv.bench.check_targets] says which targets are met.
"""

from ._breakdown import BREAKDOWN_PIECES as BREAKDOWN_PIECES
from ._config import (
    PRESETS as PRESETS,
    TABLE1_MODELS as TABLE1_MODELS,
    BenchConfig as BenchConfig,
    variant_names as variant_names,
)
from ._measure import (
    Timed as Timed,
    compiled_memory as compiled_memory,
    time_interleaved as time_interleaved,
)
from ._report import (
    NOTES_MARKER as NOTES_MARKER,
    docs_page as docs_page,
    markdown_report as markdown_report,
    write_docs as write_docs,
)
from ._run import run_benchmark as run_benchmark
from ._targets import TARGETS as TARGETS, Target as Target, check_targets as check_targets


__all__ = [
    "BREAKDOWN_PIECES",
    "NOTES_MARKER",
    "PRESETS",
    "TABLE1_MODELS",
    "TARGETS",
    "BenchConfig",
    "Target",
    "Timed",
    "check_targets",
    "compiled_memory",
    "docs_page",
    "markdown_report",
    "run_benchmark",
    "time_interleaved",
    "variant_names",
    "write_docs",
]
