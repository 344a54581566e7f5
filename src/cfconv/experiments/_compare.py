"""`cfconv compare`: train a model and a baseline on the same splits for several seeds,
and summarise the paired differences of their final validation accuracies."""

import dataclasses
import json
import math
import os
import pathlib
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import jax

from .._custom_types import LogStream
from .._errors import check_int
from ..data import Dataset, train_val_split
from ..models import MODEL_NAMES
from ..train import NonFiniteLossError, TrainConfig, fit
from ..train._checkpoint import atomic_write


def compare_seeds(
    config: TrainConfig,
    dataset: Dataset,
    seeds: Sequence[int],
    *,
    baseline: str = "spatial",
    val_fraction: float = 0.2,
    out: str | os.PathLike | None = None,
    log: LogStream | None = sys.stderr,
    mesh: Any = None,
) -> dict[str, Any]:
    """Train `config`'s model and `baseline` for each seed, and compare them.

    For each seed, `dataset` is split with [`cfconv.data.train_val_split`][] (seeded by
    it), and both models are trained with [`cfconv.train.fit`][] on that split, with
    `config` and that seed (the baseline's config is `config` with `model=baseline`).
    The two final validation accuracies of a seed form a pair: the seeds change the
    split, the initialisation, the batches and the sampled positions for both, and the
    difference within a pair is what the summary averages.

    **Arguments:**

    - `config`: the settings of the model under test; its `seed` is replaced by each of
      `seeds`.
    - `dataset`: the data, split anew for each seed.
    - `seeds`: distinct non-negative seeds, at least one.
    - `baseline`: the model to compare with, one of `cfconv.models.MODEL_NAMES` other
      than `config.model` (default: the spatial CNN).
    - `val_fraction`: the validation share of each split.
    - `out`: if given, the result is written there as JSON (atomically) after every
      run, so that an interrupted comparison keeps the runs it finished.
    - `log`: where the runs' progress goes (`None`: nowhere).
    - `mesh`: passed to [`cfconv.train.fit`][].

    **Returns:**

    A dict with `config` (`config.to_json()`), `baseline`, `seeds`, `runs` (for each
    model name, the list of [`cfconv.train.fit`][] results, one per seed), `val_acc` (for
    each model name, the final validation accuracies, one per seed) and `summary`: for
    each model name its `mean` and `sd` (the sample standard deviation over seeds,
    `None` for one seed), and `difference`, the same of the paired differences
    model - baseline plus their `standard_error` (`sd / sqrt(n)`, `None` for one seed).

    **Raises:**

    [`cfconv.train.NonFiniteLossError`][] when a run's loss is NaN or infinite; its
    message names the model and the seed, and its `result` attribute holds the runs
    finished before it (as returned, summarised over the complete pairs).
    """
    seeds = [check_int("seeds", s, minimum=0) for s in seeds]
    if not seeds:
        raise ValueError("`seeds` must name at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be distinct, got {seeds}")
    if baseline not in MODEL_NAMES:
        raise ValueError(f"`baseline` must be one of {MODEL_NAMES}, got {baseline!r}")
    if baseline == config.model:
        raise ValueError(f"`baseline` must differ from `config.model`, both are {baseline!r}")
    if out is not None and pathlib.Path(out).is_dir():
        raise ValueError(f"`out` must be a file path, got the folder {out}")
    models = (baseline, config.model)
    result: dict[str, Any] = {
        "config": config.to_json(),
        "baseline": baseline,
        "seeds": seeds,
        "runs": {m: [] for m in models},
    }
    writer = jax.process_index() == 0  # with several processes, one logs and writes
    log = log if writer else None

    def finish() -> dict[str, Any]:
        result["val_acc"] = {m: [run["val_acc"] for run in result["runs"][m]] for m in models}
        done = len(result["runs"][config.model])
        result["summary"] = _paired_summary(
            result["val_acc"][baseline][:done], result["val_acc"][config.model], models
        )
        if out is not None and writer:
            text = json.dumps(result, indent=2).encode()
            atomic_write(out, lambda f: f.write(text))
        return result

    try:
        finish()  # an unwritable `out` fails now, not after the first run
    except OSError as error:
        raise ValueError(f"`out` cannot be written: {error}") from error
    for seed in seeds:
        train, val = train_val_split(dataset, val_fraction=val_fraction, seed=seed)
        for model in models:
            if log is not None:
                print(f"== {model}, seed {seed} ==", file=log, flush=True)
            run_config = dataclasses.replace(config, model=model, seed=seed)
            try:
                run = fit(run_config, train, val, log=log, mesh=mesh)
            except NonFiniteLossError as error:
                stopped = NonFiniteLossError(f"{model}, seed {seed}: {error}")
                stopped.result = finish()  # pyright: ignore[reportAttributeAccessIssue]
                raise stopped from error
            result["runs"][model].append(run)
            finish()
    return finish()


def _mean_sd(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "sd": None}
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "sd": sd}


def _paired_summary(
    baseline: Sequence[float], model: Sequence[float], names: tuple[str, str]
) -> dict[str, Any]:
    differences = [m - b for b, m in zip(baseline, model)]
    difference = _mean_sd(differences)
    sd = difference["sd"]
    difference["standard_error"] = None if sd is None else sd / math.sqrt(len(differences))
    return {names[0]: _mean_sd(baseline), names[1]: _mean_sd(model), "difference": difference}


def format_comparison(result: dict[str, Any]) -> str:
    """A Markdown table of a [`cfconv.experiments.compare_seeds`][] result: each seed's
    final validation accuracies and their difference in points, then the means and
    standard deviations over seeds, and a line on the mean difference."""
    baseline, model = result["baseline"], result["config"]["model"]
    accs, summary = result["val_acc"], result["summary"]
    params = {m: result["runs"][m][0]["params"] for m in (baseline, model) if result["runs"][m]}
    head = [f"{m} ({params[m]} parameters)" if m in params else m for m in (baseline, model)]
    lines = [f"| seed | {head[0]} | {head[1]} | difference (points) |", "|---|---|---|---|"]
    for i, seed in enumerate(result["seeds"][: len(accs[model])]):
        b, m = accs[baseline][i], accs[model][i]
        lines.append(f"| {seed} | {b:.4f} | {m:.4f} | {100 * (m - b):+.2f} |")

    def cell(stats: dict[str, Any], key: str, scale: float, digits: str) -> str:
        value = stats[key]
        return "" if value is None else format(scale * value, digits)

    d = summary["difference"]
    for key in ("mean", "sd"):
        b, m = (cell(summary[n], key, 1.0, ".4f") for n in (baseline, model))
        diff = cell(d, key, 100.0, "+.2f" if key == "mean" else ".2f")
        lines.append(f"| {key} | {b} | {m} | {diff} |")
    n = len(accs[model])
    if d["mean"] is not None:
        se = d["standard_error"]
        se = "" if se is None else f", standard error {100 * se:.2f}"
        lines.append(
            f"\n{model} - {baseline}: {100 * d['mean']:+.2f} points on average over {n} "
            f"seed{'s' if n != 1 else ''}{se}"
        )
    return "\n".join(lines)


def compare_command(args) -> int:
    """Train a model (default: the sparse single-MLP CF-Conv net) and a baseline
    (default: the spatial CNN) on the same splits for several seeds, and print the
    paired differences of their validation accuracies."""
    from .._train_cli import load_dataset, make_train_mesh, train_config
    from ..train import NonFiniteLossError

    if args.baseline == args.model:
        raise SystemExit(f"cfconv compare: --baseline must differ from --model ({args.model})")
    mesh = make_train_mesh(args, "cfconv compare", models=(args.model, args.baseline))
    size, dataset = load_dataset(args)
    config = train_config(args, image_size=size, seed=args.seeds[0])
    source = args.data or "scikit-learn digits"
    print(
        f"cfconv compare: {config.model} against {args.baseline} on {source} ({len(dataset)} "
        f"images of {size}x{size}x{dataset.channels}, {dataset.num_classes} classes), seeds "
        f"{', '.join(map(str, args.seeds))}, {config.epochs} epochs each",
        flush=True,
    )
    try:
        result = compare_seeds(
            config,
            dataset,
            args.seeds,
            baseline=args.baseline,
            val_fraction=args.val_fraction,
            out=args.out,
            mesh=mesh,
        )
    except ValueError as error:
        raise SystemExit(f"cfconv compare: {str(error).replace('`out`', '--out')}")
    except NonFiniteLossError as error:
        print(f"cfconv compare: {error}", file=sys.stderr)
        partial = error.result  # pyright: ignore[reportAttributeAccessIssue]
        if partial["val_acc"][config.model]:
            print("\nthe pairs finished before it:\n")
            print(format_comparison(partial))
        return 1
    print()
    print(format_comparison(result))
    return 0


def add_compare_arguments(p, seeds_type) -> None:
    """`cfconv compare`'s own options (the training options are `cfconv train`'s)."""
    p.add_argument(
        "--seeds",
        type=seeds_type,
        default=(0, 1, 2),
        metavar="S1,S2,...",
        help="distinct seeds; each gives both models a new split, initialisation, batches "
        "and positions (default 0,1,2)",
    )
    p.add_argument(
        "--baseline",
        choices=MODEL_NAMES,
        default="spatial",
        help="the model to compare with (default spatial, the 3x3 CNN)",
    )
    p.add_argument(
        "--out", metavar="FILE", help="write every run's metrics and the summary as JSON"
    )
