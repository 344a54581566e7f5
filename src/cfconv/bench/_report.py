"""The benchmark's markdown: the tables, the targets, and the docs page."""

import os
import pathlib
from typing import Any

from ._breakdown import BREAKDOWN_PIECES
from ._machine import describe_machine


NOTES_MARKER = (
    "<!-- cfconv bench: everything below this line is kept when the page is regenerated -->"
)
"""The line of `docs/benchmarks.md` after which hand-written notes survive `--docs`."""


def _time(seconds: float | int | None) -> str:
    if seconds is None:
        return "—"
    if abs(seconds) >= 10:
        return f"{seconds:.1f} s"
    return f"{seconds * 1e3:.1f} ms"


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB"


def _ratio(r: float | int | None) -> str:
    return "—" if r is None else f"{r:.2f}x"


def _status(row: dict[str, Any]) -> str:
    if row["step_s"] is not None:
        return f"{len(row['times'])} timed"
    if row["fits"] is False:
        return "memory only (does not fit)"
    return row["note"] or "not timed"


def _table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def markdown_report(result: dict[str, Any]) -> str:
    """The result of [`cfconv.bench.run_benchmark`][] as markdown: the machine and
    settings, Table 1 (parameters and training memory), Tables 2-3 (training step time
    and memory), inference, the breakdown of the sparse step, and the targets."""
    settings = result["settings"]
    rows = {row["name"]: row for row in result["rows"]}
    parts = [
        f"Machine: {describe_machine(result['device'])}; jax {result['versions'].get('jax')}, "
        f"jaxlib {result['versions'].get('jaxlib')}, cfconv {result['versions'].get('cfconv')}.",
        f"Settings: {settings['image_size']}x{settings['image_size']}x3 images, batch "
        f"{settings['batch_size']}, {settings['depth']} layers of {settings['width']} filters; "
        f"medians of up to {settings['repeats']} interleaved repetitions after "
        f"{settings['warmup']} warm-up; huge-page malloc "
        f"{'on' if settings.get('malloc_hugetlb') else 'off'} "
        f"(GLIBC_TUNABLES={settings.get('glibc_tunables') or 'unset'}).",
    ]
    table1 = [n for n in rows if rows[n]["group"] in ("baseline", "table1") or n == "naive"]
    if table1:
        parts.append("### Table 1: parameters and training memory (every kernel position)")
        parts.append(_table(
            ["variant", "model", "parameters", "training memory", "x CNN", "run"],
            [[f"`{n}`", rows[n]["model"], f"{rows[n]['params']:,}", _bytes(rows[n]["memory_bytes"]),
              _ratio(rows[n]["memory_ratio"]), _status(rows[n])] for n in table1],
        ))  # fmt: skip
    train = [n for n in rows if rows[n]["group"] in ("baseline", "dense", "sparse")]
    parts.append("### Tables 2 and 3: training step (`hw_cin_cout`)")
    parts.append(_table(
        ["variant", "strategy", "training memory", "x CNN", "step (median)", "x CNN", "run"],
        [[f"`{n}`", f"`{rows[n]['strategy']}`" if rows[n]["strategy"] else "3x3 CNN",
          _bytes(rows[n]["memory_bytes"]), _ratio(rows[n]["memory_ratio"]),
          _time(rows[n]["step_s"]), _ratio(rows[n]["step_ratio"]), _status(rows[n])]
         for n in train],
    ))  # fmt: skip
    inference = [n for n in rows if rows[n]["group"] == "inference"]
    if inference:
        parts.append("### Inference (a batch, stored kernels)")
        parts.append(_table(
            ["variant", "memory", "x CNN inference", "time (median)", "x CNN inference", "run"],
            [[f"`{n}`", _bytes(rows[n]["memory_bytes"]), _ratio(rows[n]["memory_ratio"]),
              _time(rows[n]["step_s"]), _ratio(rows[n]["step_ratio"]), _status(rows[n])]
             for n in inference],
        ))  # fmt: skip
    pieces = [n for n in rows if rows[n]["group"] == "breakdown"]
    if pieces:
        step = rows[pieces[0]]["strategy"]
        parts.append(f"### Breakdown of the `{step}` step")
        parts.append(
            "Each piece jitted alone at the step's shapes, for all layers; the rest is the "
            "step's median minus the pieces' medians (negative when the separately jitted "
            "pieces cost more than they do fused in the step)."
        )
        parts.append(_table(
            ["piece", "time (median)", "share of the step", "what"],
            [[f"`{n}`", _time(rows[n]["step_s"]),
              "—" if rows[n]["share"] is None else f"{100 * rows[n]['share']:.0f}%",
              BREAKDOWN_PIECES.get(n.removeprefix("breakdown-"), "everything else")]
             for n in pieces],
        ))  # fmt: skip
    parts.append("### Targets (ratios to the spatial 3x3 CNN in this run)")
    parts.append(_table(
        ["target", "limit", "measured", "status"],
        [[t["description"], f"<= {t['limit']:g}x", _ratio(t["value"]),
          f"**{t['status']}**" if t["status"] == "missed" else t["status"]]
         for t in result["targets"]],
    ))  # fmt: skip
    if "naive" in rows and rows["naive"]["memory_bytes"] is not None:
        naive = rows["naive"]
        parts.append(
            f"Naive dense (`hw_cin_cout`, plain autodiff over every position) needs "
            f"{_bytes(naive['memory_bytes'])} to train ({_ratio(naive['memory_ratio'])} the "
            f"CNN's){'' if naive['fits'] else '; it was not run'}."
        )
    if result.get("scaling"):
        from ..distributed import scaling_table

        parts.append("### Scaling over devices (sparse step, forced CPU devices)")
        parts.append(
            "Each device count in its own process (`cfconv.distributed.scaling_rows`); the "
            "forced devices share this machine's cores, so step times show partitioning "
            "overhead, not speed-up."
        )
        parts.append(scaling_table(result["scaling"]))
    return "\n\n".join(parts) + "\n"


def docs_page(result: dict[str, Any], command: str, notes: str | None = None) -> str:
    """The page `docs/benchmarks.md`: how it was made, the report, then `notes`.

    **Arguments:**

    - `result`: a [`cfconv.bench.run_benchmark`][] result.
    - `command`: the command that made it, shown on the page for rerunning.
    - `notes`: markdown to put below [`NOTES_MARKER`][cfconv.bench.NOTES_MARKER]
      (default: an empty notes section).

    **Returns:**

    The page's markdown.
    """
    device = result["device"]
    head = f"""# Benchmarks

The paper's Tables 1-3 measured on one machine, in one process, every variant timed
round-robin with the others so that machine noise hits all alike. Everything above the
notes below is generated; rerun it with

```bash
{command}
```

(`cfconv bench --help` lists the options; `--json FILE` also writes every number,
including each timed repetition). The numbers below come from that command on
{describe_machine(device)} ({device.get("platform")} device `{device.get("device_kind")}`,
jax {result["versions"].get("jax")}), {result["settings"].get("date", "")}.

Training memory is XLA's memory analysis of the compiled step (temporaries + arguments +
outputs - donated buffers reused), so it exists even for steps too large to run; a step
whose memory exceeds the limit ({_bytes(result["settings"].get("memory_limit_used"))}
here) is not run. Ratios are to the spatial 3x3 CNN's step in the same run (inference:
to the CNN's inference).

"""
    body = markdown_report(result).replace("### ", "## ")
    tail = notes if notes is not None else "\n## Notes\n\nNone yet.\n"
    return head + body + "\n" + NOTES_MARKER + "\n" + tail


def write_docs(path: str | os.PathLike, result: dict[str, Any], command: str) -> None:
    """Write [`docs_page`][cfconv.bench.docs_page] to `path`, keeping the notes below
    [`NOTES_MARKER`][cfconv.bench.NOTES_MARKER] of the page already there."""
    path = pathlib.Path(path)
    notes = None
    if path.exists():
        old = path.read_text()
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1].removeprefix("\n")
    path.write_text(docs_page(result, command, notes))
