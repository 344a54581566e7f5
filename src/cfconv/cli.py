"""The `cfconv` command line: `cfconv train`, `compare`, `demo`, `filters`, `spectral-bias`,
`gradient-noise`, `sparse-ablation`, `plot`, `bench`."""

import argparse
import json
import sys
from collections.abc import Sequence

from ._argtypes import (
    fraction as _fraction,
    layer_positions as _layer_positions,
    momentum as _momentum,
    non_negative_int as _non_negative_int,
    positive_int as _positive_int,
    seeds as _seeds,
    widths as _widths,
)
from ._train_cli import (
    DEFAULT_POSITIONS,
    add_train_arguments,
    check_train_arguments,
    load_dataset,
    make_train_mesh,
    train_config,
)


def train(args) -> int:
    """Train one of the paper's networks on an image folder or the bundled digits."""
    from .data import train_val_split
    from .train import NonFiniteLossError, fit

    if args.resume and args.checkpoint is None:
        raise SystemExit("cfconv train: --resume needs --checkpoint DIR")
    mesh = make_train_mesh(args, "cfconv train")
    size, dataset = load_dataset(args)
    train_data, val_data = train_val_split(dataset, val_fraction=args.val_fraction, seed=args.seed)
    config = train_config(args, image_size=size, seed=args.seed)
    source = args.data or "scikit-learn digits"
    print(
        f"cfconv train: {args.model} on {source} ({len(train_data)} train / {len(val_data)} "
        f"validation images of {size}x{size}x{train_data.channels}, "
        f"{train_data.num_classes} classes)",
        flush=True,
    )
    try:
        result = fit(
            config,
            train_data,
            val_data,
            checkpoint_dir=args.checkpoint,
            resume=args.resume,
            metrics_out=args.metrics_out,
            mesh=mesh,
        )
    except NonFiniteLossError as error:
        print(f"cfconv train: {error}", file=sys.stderr)
        return 1
    print(f"parameters: {result['params']}; final validation accuracy: {result['val_acc']:.4f}")
    return 0


def demo(args) -> int:
    """Train the spatial 3x3 CNN and a sparse CF-Conv net side by side on the digits."""
    from .data import load_digits, train_val_split
    from .train import NonFiniteLossError, TrainConfig, fit

    dataset = load_digits()
    train_data, val_data = train_val_split(dataset, val_fraction=0.2, seed=args.seed)
    print(
        f"cfconv demo: {len(train_data)} train / {len(val_data)} validation digits (8x8), "
        f"{args.epochs} epochs each\n",
        flush=True,
    )
    rows = []
    for model in ("spatial", "hw_cin_cout"):
        config = TrainConfig(model=model, strategy="sparse-vmap", positions=args.positions,
                             epochs=args.epochs, seed=args.seed, lr=args.lr)  # fmt: skip
        print(f"== {model} ==", flush=True)
        try:
            result = fit(config, train_data, val_data)
        except NonFiniteLossError as error:
            print(f"cfconv demo: {model}: {error}", file=sys.stderr)
            return 1
        last = result["epochs"][-1]
        rows.append((model, result["params"], last["val_acc"], last["step_time"]))
    print("\n| model | parameters | validation accuracy | ms/step |")
    print("|---|---|---|---|")
    for model, params, acc, seconds in rows:
        name = "spatial 3x3 CNN" if model == "spatial" else f"CF-Conv {model}, sparse"
        print(f"| {name} | {params} | {acc:.4f} | {seconds * 1e3:.1f} |")
    if args.json:
        print(json.dumps([dict(zip(("model", "params", "val_acc", "step_time"), r)) for r in rows]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `cfconv` command line with `argv` (default: `sys.argv[1:]`)."""
    from .experiments import (
        _commands as _experiments,
        _compare,
        _filters,
        _gradient_noise,
    )

    parser = argparse.ArgumentParser(
        prog="cfconv",
        description="Continuous Fourier Convolutions (CF-Convs) in JAX: train the paper's "
        "networks, run the demo, and small experiments.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("train", help=train.__doc__, description=train.__doc__)
    add_train_arguments(p)
    p.set_defaults(run=train)

    doc = _compare.compare_command.__doc__
    # No abbreviations: `--seed` (cfconv train's) must not pass for `--seeds`.
    p = commands.add_parser("compare", help=doc, description=doc, allow_abbrev=False)
    _compare.add_compare_arguments(p, _seeds)
    add_train_arguments(p, one_run=False)
    p.set_defaults(run=_compare.compare_command)

    p = commands.add_parser("demo", help=demo.__doc__, description=demo.__doc__)
    p.add_argument("--epochs", type=_positive_int, default=10, help="epochs per model (10)")
    p.add_argument("--positions", type=_layer_positions, default=DEFAULT_POSITIONS,
                   help="sparse positions per layer, as in cfconv train (all,20%%)")  # fmt: skip
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (0)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.set_defaults(run=demo)

    p = commands.add_parser(
        "filters", help=_filters.fit_filters.__doc__, description=_filters.fit_filters.__doc__
    )
    _filters.add_arguments(p, _positive_int)
    p.set_defaults(run=_filters.fit_filters)

    doc = _experiments.spectral_bias_command.__doc__
    p = commands.add_parser("spectral-bias", help=doc, description=doc)
    _experiments.add_spectral_bias_arguments(p, _positive_int, _widths)
    p.set_defaults(run=_experiments.spectral_bias_command)

    doc = _gradient_noise.gradient_noise_command.__doc__
    p = commands.add_parser("gradient-noise", help=doc, description=doc)
    _gradient_noise.add_gradient_noise_arguments(p, _positive_int, _non_negative_int)
    p.set_defaults(run=_gradient_noise.gradient_noise_command)

    doc = _experiments.sparse_ablation_command.__doc__
    p = commands.add_parser("sparse-ablation", help=doc, description=doc)
    _experiments.add_sparse_ablation_arguments(
        p, _positive_int, _non_negative_int, _fraction, _momentum
    )
    p.set_defaults(run=_experiments.sparse_ablation_command)

    doc = _experiments.plot_command.__doc__
    p = commands.add_parser("plot", help=doc, description=doc)
    _experiments.add_plot_arguments(p, _positive_int, _non_negative_int)
    p.set_defaults(run=_experiments.plot_command)

    from .bench import _command as _bench

    doc = _bench.run_command.__doc__
    p = commands.add_parser("bench", help=doc, description=doc)
    _bench.add_arguments(p)
    p.set_defaults(run=_bench.run_command)

    args = parser.parse_args(argv)
    if args.command in ("train", "compare"):
        check_train_arguments(parser, args)
    if args.command == "sparse-ablation":
        if not args.lr > 0:
            parser.error(f"--lr must be positive, got {args.lr}")
        if args.generator_lr is not None and not args.generator_lr > 0:
            parser.error(f"--generator-lr must be positive, got {args.generator_lr}")
    if args.command == "filters":
        if args.steps < 2:
            parser.error(f"--steps must be at least 2, got {args.steps}")
        if args.image_size < 4:
            parser.error(f"--image-size must be at least 4, got {args.image_size}")
        if not 0 < args.rate <= 1:
            parser.error(f"--rate must be in (0, 1], got {args.rate}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
