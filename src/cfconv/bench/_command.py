"""`cfconv bench`: the options, and running them."""

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import sys

from .._argtypes import int_list
from ._config import PRESETS, parse_positions
from ._machine import (
    HUGETLB,
    hugetlb_enabled,
    reexec_with_hugetlb,
    was_reexecuted,
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        return parse_positions(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _counts(text: str) -> tuple[int, ...]:
    return tuple(_count(part) for part in text.split(","))


def _counts_plain(text: str) -> tuple[int, ...]:
    return int_list(text, "device counts", minimum=1)


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated variant names, got {text!r}")
    return names


# (option, dest, type, help): options that override the preset when given.
_OVERRIDES = (
    ("--image-size", "image_size", _positive_int, "images are SIZE x SIZE x 3 (preset: 150)"),
    ("--batch-size", "batch_size", _positive_int, "examples per step (preset: 32)"),
    ("--width", "width", _positive_int, "filters per layer (preset: 32)"),
    ("--depth", "depth", _positive_int, "convolution layers (preset: 6)"),
    ("--positions", "positions", _counts,
     "sparse positions per step and layer, comma-separated, e.g. 2^12,2^18 (preset: "
     "2^12,2^15,2^18,2^21)"),
    ("--variants", "variants", _names,
     "comma-separated variants to measure (default: all; see below); spatial is always "
     "measured"),
    ("--repeats", "repeats", _positive_int, "timed repetitions per variant (preset: 5)"),
    ("--warmup", "warmup", _non_negative_int, "untimed calls per variant first (preset: 1)"),
    ("--budget", "budget", _positive_float,
     "seconds of timed calls after which a variant stops repeating (preset: 120)"),
    ("--chunk-size", "chunk_size", _count,
     "positions per chunk of scan and sparse-scan (preset: 2^15, as cfconv train)"),
    ("--exact-chunk-size", "exact_chunk_size", _count,
     "positions per chunk of dense-exact (default: cfconv.Chunked's)"),
    ("--breakdown-positions", "breakdown_positions", _count,
     "positions of the sparse-vmap step that the breakdown divides (preset: 2^18)"),
    ("--seed", "seed", _non_negative_int, "seed of the models, data and keys (0)"),
)  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add `cfconv bench`'s options to `p`."""
    p.epilog = (
        "variants: spatial, naive-hw, naive-hw_cin, naive-hw_cout, naive, remat, scan, "
        "sparse-scan-2^K, sparse-vmap-2^K (the paper's step), sparse-train-2^K (cfconv "
        "train's sparse update, write-back and error feedback, with 2^K positions in every "
        "layer), sparse-all-2^K (the same with the first layer's grid whole; with a fifth of a "
        "later layer's grid, 2334720 at 150x150, it is the kernel update of cfconv train's "
        "defaults, --positions all,20%) (one each per --positions; the groups "
        "sparse-scan, sparse-vmap, sparse-train and sparse-all select all), dense-exact, "
        "inference-stored, inference-spatial, breakdown"
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--preset", choices=tuple(PRESETS), default="default",
                      help="default: the paper's net at 150x150x3, batch 32 (slow on a "
                      "small CPU); quick: 64x64, batch 16 (minutes); tiny: a few variants "
                      "at 12x12, for tests")  # fmt: skip
    size.add_argument("--quick", action="store_const", const="quick", dest="preset",
                      help="the same as --preset quick")  # fmt: skip
    for option, dest, type_, help_ in _OVERRIDES:
        p.add_argument(option, dest=dest, type=type_, help=help_)
    p.add_argument("--memory-limit", type=_positive_float, metavar="GIB",
                   help="do not run a step whose compiled memory exceeds GIB gibibytes "
                   "(default: 90%% of the memory available at the start)")  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--docs", metavar="FILE", help="regenerate a docs page (e.g. "
                   "docs/benchmarks.md) from the results, keeping its notes")  # fmt: skip
    p.add_argument("--devices", type=_counts_plain, metavar="N1,N2,...",
                   help="also measure the sparse step on 1xN (or Nx1) meshes of N forced "
                   "CPU devices, each count in a subprocess "
                   "(cfconv.distributed.scaling_rows), at the breakdown's positions")  # fmt: skip
    p.add_argument("--devices-axis", choices=("model", "data"), default="model",
                   help="put the --devices on the model axis (kernel states split over "
                   "output channels; default) or the data axis (batches split)")  # fmt: skip
    p.add_argument("--no-reexec", action="store_true",
                   help="on CPU, do not restart with GLIBC_TUNABLES=" + HUGETLB + " when it "
                   "is not set (huge-page malloc speeds up XLA's buffers)")  # fmt: skip


def _command_line(args: argparse.Namespace) -> str:
    """The `cfconv bench` command that reproduces `args` (without --json/--docs paths'
    effects on the numbers)."""
    words = ["cfconv", "bench"]
    if args.preset != "default":
        words.append("--quick" if args.preset == "quick" else f"--preset={args.preset}")
    for option, dest, _, _ in _OVERRIDES:
        value = getattr(args, dest)
        if value is not None:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            words.append(f"{option}={text}")
    if args.memory_limit is not None:
        words.append(f"--memory-limit={args.memory_limit:g}")
    if args.devices is not None:
        words.append(f"--devices={','.join(map(str, args.devices))}")
        if args.devices_axis != "model":
            words.append(f"--devices-axis={args.devices_axis}")
    if args.docs is not None:
        words.append(f"--docs={args.docs}")
    return " ".join(shlex.quote(w) for w in words)


def config_from_args(args: argparse.Namespace):
    """The [`cfconv.bench.BenchConfig`][] of parsed `cfconv bench` arguments."""
    overrides = {dest: getattr(args, dest) for _, dest, _, _ in _OVERRIDES
                 if getattr(args, dest) is not None}  # fmt: skip
    if args.memory_limit is not None:
        overrides["memory_limit"] = int(args.memory_limit * 2**30)
    return dataclasses.replace(PRESETS[args.preset], **overrides)


def run_command(args: argparse.Namespace) -> int:
    """Measure the paper's Tables 1-3 (memory, training step, inference) and the targets."""
    import jax

    from ._report import markdown_report, write_docs
    from ._run import run_benchmark

    try:
        config = config_from_args(args)
    except ValueError as error:
        raise SystemExit(f"cfconv bench: {error}") from None
    if args.devices is not None:
        divides = config.width if args.devices_axis == "model" else config.batch_size
        what = "width" if args.devices_axis == "model" else "batch size"
        bad = [n for n in args.devices if divides % n]
        if bad:
            raise SystemExit(
                f"cfconv bench: --devices {bad} must divide the {what} ({divides}) on the "
                f"{args.devices_axis} axis"
            )
    on_cpu = jax.default_backend() == "cpu"
    # Only a real `cfconv bench` process restarts itself (not a test calling `main`).
    from_command_line = sys.argv[1:2] == ["bench"]
    if on_cpu and not hugetlb_enabled() and not args.no_reexec and from_command_line:
        if not was_reexecuted():
            print(f"cfconv bench: restarting with GLIBC_TUNABLES={HUGETLB} (huge-page "
                  "malloc for XLA's CPU buffers)", flush=True)  # fmt: skip
            reexec_with_hugetlb()
    if on_cpu:
        state = "on" if hugetlb_enabled() else "off"
        how = " (this process was restarted to set it)" if was_reexecuted() else ""
        print(f"cfconv bench: huge-page malloc {state}: GLIBC_TUNABLES="
              f"{os.environ.get('GLIBC_TUNABLES', 'unset')}{how}",
              flush=True)  # fmt: skip
    command = _command_line(args)
    settings = {
        "preset": args.preset,
        "command": command,
        "restarted_for_hugetlb": was_reexecuted(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    result = run_benchmark(config, settings=settings)
    if args.devices is not None:
        from ..distributed import scaling_rows

        print(f"cfconv bench: scaling over {args.devices} devices ({args.devices_axis} axis)",
              flush=True)  # fmt: skip
        result["scaling"] = scaling_rows(
            args.devices, axis=args.devices_axis, model_name="hw_cin_cout",
            width=config.width, depth=config.depth, image_size=config.image_size,
            batch_size=config.batch_size, positions=config.breakdown_positions,
            steps=config.repeats, seed=config.seed,
        )  # fmt: skip
    print()
    print(markdown_report(result))
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"cfconv bench: wrote {args.json}")
    if args.docs is not None:
        write_docs(args.docs, result, command)
        print(f"cfconv bench: wrote {args.docs}")
    return 0
