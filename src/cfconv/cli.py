"""The `cfconv` command line: `cfconv train`, `demo`, `filters`, `spectral-bias`,
`gradient-noise`, `sparse-ablation`, `plot`, `bench`."""

import argparse
import json
import sys
from collections.abc import Sequence

from ._argtypes import (
    fraction as _fraction,
    mesh_shape as _mesh_shape,
    momentum as _momentum,
    non_negative_int as _non_negative_int,
    positive_int as _positive_int,
    unit_interval as _unit_interval,
    widths as _widths,
)


def _add_train_arguments(p: argparse.ArgumentParser) -> None:
    from ._strategies import SAMPLINGS
    from .models import GENERATOR_KINDS, MODEL_NAMES
    from .train import STRATEGY_NAMES

    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        metavar="DIR",
        help="image folder with one subfolder per class (e.g. Microsoft's PetImages with "
        "Cat/ and Dog/); default: scikit-learn's bundled 8x8 digits (no download)",
    )
    data.add_argument(
        "--image-size",
        type=_positive_int,
        help="resize images to SIZE x SIZE (default: 8 for the digits, 150 for --data, as "
        "in the paper)",
    )
    data.add_argument(
        "--val-fraction", type=float, default=0.2, help="validation share (default 0.2)"
    )
    data.add_argument(
        "--max-per-class", type=_positive_int, help="use at most N images of each class"
    )
    data.add_argument(
        "--no-augment",
        action="store_true",
        help="switch off the training augmentation (random flips, shifts, brightness, contrast)",
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default="hw_cin_cout",
        help="spatial: the 3x3 CNN baseline; hw, hw_cin, hw_cout, hw_cin_cout: CF-Conv nets "
        "with the MLP parameterizations of paper Table 1 (default hw_cin_cout, the paper's "
        "single MLP); fourier: the same network with every Fourier kernel entry a "
        "parameter (no MLP; the reference for what the architecture can do)",
    )
    model.add_argument("--width", type=_positive_int, default=32, help="filters per layer (32)")
    model.add_argument("--depth", type=_positive_int, default=6, help="convolution layers (6)")
    model.add_argument(
        "--mlp-hidden",
        type=_widths,
        metavar="W1,W2,...",
        help="hidden widths of the kernel MLPs (default: the paper's for hw and hw_cin_cout)",
    )
    model.add_argument(
        "--generator",
        choices=GENERATOR_KINDS,
        default="sine",
        help="the kernel MLPs' activation and first-layer scales: sine (default; every "
        "channel pair starts with its own kernel) or relu (the paper's; a deep ReLU "
        "generator starts with nearly one kernel for all channel pairs, and the "
        "hw_cin_cout net then stays near chance on the digits)",
    )
    kernel = p.add_argument_group("kernel phase (CF-Conv models)")
    kernel.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default="sparse-vmap",
        help="naive: the whole kernel with plain autodiff; remat: the same, rematerialized; "
        "scan: checkpointed chunks of positions (exact gradient, bounded memory); "
        "sparse-vmap / sparse-scan: the paper's sparse updates, positions evaluated at once "
        "(the backward pass recomputing them in chunks of 32768) or in checkpointed chunks "
        "of --chunk-size (default sparse-vmap: at the paper's size it is the faster, in "
        "the same memory, see docs/benchmarks.md)",
    )
    kernel.add_argument(
        "--positions",
        type=_positive_int,
        default=2**12,
        help="kernel positions sampled per step and layer by the sparse strategies "
        "(default 4096 = 2^12; the paper tried 2^12 to 2^21)",
    )
    kernel.add_argument(
        "--rate",
        type=float,
        default=0.1,
        help="weight of the fresh values in the sparse EMA (default 0.1, the paper's)",
    )
    kernel.add_argument(
        "--write-back",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each optimizer update, blend the updated generators' values into the "
        "stored kernels at the sampled positions (sparse strategies; one more forward "
        "evaluation of the MLPs per step). Default: on; --no-write-back is the paper's step",
    )
    kernel.add_argument(
        "--sampling",
        choices=SAMPLINGS,
        default="stratified",
        help="how the sparse strategies draw positions: stratified, spread over the "
        "kernel's frequencies by the size of the kernel gradient (re-measured on one "
        "batch at the start of every epoch) with the gradient reweighted to stay "
        "unbiased, or uniform (the paper's). Default: stratified",
    )
    kernel.add_argument(
        "--sampling-floor",
        type=_unit_interval,
        default=0.05,
        metavar="F",
        help="with --sampling stratified, the share of each step's positions spread "
        "evenly over the frequencies, in [0, 1] (default 0.05)",
    )
    kernel.add_argument(
        "--state-init",
        choices=("uniform", "generator"),
        default="generator",
        help="start the stored kernels as the generators' kernels, evaluated everywhere "
        "once, or as uniform noise (the paper's). Default: generator",
    )
    kernel.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=2**15,
        help="positions per chunk for scan and sparse-scan (default 32768)",
    )
    run = p.add_argument_group("optimisation and output")
    run.add_argument(
        "--epochs", type=_positive_int, default=10, help="total epochs; --resume continues "
        "up to it (default 10)"
    )  # fmt: skip
    run.add_argument("--batch-size", type=_positive_int, default=32, help="default 32")
    run.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    run.add_argument(
        "--generator-lr",
        type=float,
        default=None,
        help="Adam learning rate of the kernel MLPs (default: --lr); with sparse updates "
        "a generator faster than the stored kernel can follow overshoots",
    )
    run.add_argument(
        "--generator-momentum",
        type=_momentum,
        default=None,
        metavar="B1",
        help="Adam's b1 for the kernel MLPs, in [0, 1) (default: 0 for the sparse "
        "strategies, where momentum adds its own delay to the stored kernel's; 0.9, "
        "Adam's and the paper's, for the others)",
    )
    run.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of every random choice (0)"
    )
    run.add_argument(
        "--checkpoint", metavar="DIR", help="save a checkpoint there after every epoch"
    )
    run.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --checkpoint"
    )
    run.add_argument("--metrics-out", metavar="FILE", help="write per-epoch metrics as JSON")
    devices = p.add_argument_group("devices")
    devices.add_argument(
        "--mesh",
        type=_mesh_shape,
        metavar="DATAxMODEL",
        help="devices along the data axis (batches are split over it) times the model axis "
        "(kernel states are split over it by output channel), e.g. 4x2 (default: every "
        "device on the data axis)",
    )
    devices.add_argument(
        "--distributed",
        metavar="SPEC",
        help="join a multi-process run first (jax.distributed.initialize): 'auto' on "
        "SLURM, Open MPI and other clusters JAX detects, or HOST:PORT,NUM_PROCESSES,"
        "PROCESS_ID",
    )


def _load_data(args):
    from .data import load_digits, load_image_folder, train_val_split

    if args.data is None:
        size = args.image_size or 8
        dataset = load_digits(image_size=None if size == 8 else size)
    else:
        size = args.image_size or 150
        dataset = load_image_folder(args.data, image_size=size, max_per_class=args.max_per_class)
    if args.data is None and args.max_per_class is not None:
        keep = _keep_per_class(dataset.labels, args.max_per_class)
        dataset = dataset.subset(keep)
    train, val = train_val_split(dataset, val_fraction=args.val_fraction, seed=args.seed)
    return size, train, val


def _keep_per_class(labels, limit: int):
    import numpy as np

    keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)])
    return np.sort(keep)


def train(args) -> int:
    """Train one of the paper's networks on an image folder or the bundled digits."""
    from .train import NonFiniteLossError, TrainConfig, fit

    if args.resume and args.checkpoint is None:
        raise SystemExit("cfconv train: --resume needs --checkpoint DIR")
    from .distributed import initialize, make_mesh

    try:
        if args.distributed is not None:
            initialize(args.distributed)
        mesh = make_mesh() if args.mesh is None else make_mesh(*args.mesh)
    except ValueError as error:
        raise SystemExit(f"cfconv train: {error}")
    data_size, model_size = mesh.devices.shape
    if args.batch_size % data_size or (args.model != "spatial" and args.width % model_size):
        raise SystemExit(
            f"cfconv train: the mesh {data_size}x{model_size} needs a --batch-size divisible "
            f"by {data_size} and a --width divisible by {model_size}; choose another --mesh"
        )
    size, train_data, val_data = _load_data(args)
    config = TrainConfig(
        model=args.model,
        strategy=args.strategy,
        positions=args.positions,
        rate=args.rate,
        chunk_size=args.chunk_size,
        image_size=size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        generator_lr=args.generator_lr,
        write_back=args.write_back,
        generator_momentum=args.generator_momentum,
        sampling=args.sampling,
        sampling_floor=args.sampling_floor,
        state_init=args.state_init,
        seed=args.seed,
        width=args.width,
        depth=args.depth,
        mlp_hidden=args.mlp_hidden,
        generator=args.generator,
        augment=not args.no_augment,
    )
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
    from .experiments import _ablation, _commands as _experiments, _filters, _gradient_noise

    parser = argparse.ArgumentParser(
        prog="cfconv",
        description="Continuous Fourier Convolutions (CF-Convs) in JAX: train the paper's "
        "networks, run the demo, and small experiments.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("train", help=train.__doc__, description=train.__doc__)
    _add_train_arguments(p)
    p.set_defaults(run=train)

    p = commands.add_parser("demo", help=demo.__doc__, description=demo.__doc__)
    p.add_argument("--epochs", type=_positive_int, default=10, help="epochs per model (10)")
    p.add_argument("--positions", type=_positive_int, default=2**12, help="sparse positions (4096)")
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

    doc = _ablation.sparse_ablation_command.__doc__
    p = commands.add_parser("sparse-ablation", help=doc, description=doc)
    _ablation.add_sparse_ablation_arguments(
        p, _positive_int, _non_negative_int, _fraction, _momentum
    )
    p.set_defaults(run=_ablation.sparse_ablation_command)

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
    if args.command == "train":
        if not 0 < args.val_fraction < 1:
            parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
        if not 0 < args.rate <= 1:
            parser.error(f"--rate must be in (0, 1], got {args.rate}")
        if not args.lr > 0:
            parser.error(f"--lr must be positive, got {args.lr}")
        if args.generator_lr is not None and not args.generator_lr > 0:
            parser.error(f"--generator-lr must be positive, got {args.generator_lr}")
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
