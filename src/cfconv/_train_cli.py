"""`cfconv train`'s options, shared with `cfconv compare`: the parser, the data they
name and the training settings they give."""

import argparse

from ._argtypes import (
    layer_positions as _layer_positions,
    mesh_shape as _mesh_shape,
    momentum as _momentum,
    non_negative_float as _non_negative_float,
    non_negative_int as _non_negative_int,
    positive_float as _positive_float,
    positive_int as _positive_int,
    unit_interval as _unit_interval,
    widths as _widths,
)


# `TrainConfig.positions`' default (tests/test_layerwise.py checks that every default of
# `cfconv train` is `TrainConfig`'s); `cfconv demo` shares it.
DEFAULT_POSITIONS = ("all", "20%")


def add_train_arguments(p: argparse.ArgumentParser, *, one_run: bool = True) -> None:
    """Add `cfconv train`'s options to `p`; with `one_run=False` (`cfconv compare`),
    leave out those of a single run: `--seed`, `--checkpoint`, `--resume`,
    `--metrics-out` and `--distributed`."""
    from ._strategies import SAMPLINGS
    from .models import GENERATOR_KINDS, MODEL_NAMES
    from .train import LR_SCHEDULES, STRATEGY_NAMES

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
    model.add_argument(
        "--frequency-scale",
        type=_positive_float,
        metavar="S",
        help="multiplier of the kernel MLPs' initial first-layer weights on the two "
        "frequency coordinates (default: 2 for --generator sine, 1 for relu); a smaller "
        "one starts each kernel smoother across frequencies, so more concentrated in "
        "space",
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
        type=_layer_positions,
        default=DEFAULT_POSITIONS,
        metavar="N or N1,N2,...",
        help="kernel positions sampled per step and layer by the sparse strategies (the "
        "paper tried 2^12 to 2^21) or a share of the layer's grid ('20%%'), or one such "
        "entry per layer, comma-separated, where 'all' samples the layer's whole grid "
        "and the last entry also holds for the layers after it (entries beyond --depth "
        "are not used). Default: all,20%% (the first layer whole, a fifth of the grid in "
        "each of the others: 8192 positions on the digits, 2.3 million at 150x150)",
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
        default="uniform",
        help="how the sparse strategies draw positions: uniform (the paper's), or "
        "stratified, spread over the kernel's frequencies by the size of the kernel "
        "gradient (re-measured on one batch at the start of every epoch) with the "
        "gradient reweighted to stay unbiased. Default: uniform",
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
        "--error-feedback",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the kernel gradient at the entries a sparse step does not sample (a "
        "residual the size of the stored kernel per layer) and pass it to the generators "
        "when those entries are next sampled, instead of dropping it (sparse "
        "strategies). Default: on; --no-error-feedback is the paper's step",
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
    resume = "; --resume continues up to it" if one_run else ""
    run.add_argument(
        "--epochs", type=_positive_int, default=10, help=f"total epochs{resume} (default 10)"
    )
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
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="constant (default, the paper's) or cosine: both learning rates decay to zero "
        "over --epochs along a half cosine",
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
        "--generator-weight-decay",
        type=_non_negative_float,
        default=0.0,
        metavar="WD",
        help="decoupled weight decay (AdamW's) on the kernel MLPs' weight matrices: each "
        "step also subtracts the generator learning rate times WD times the weights "
        "(default 0, none)",
    )
    if one_run:
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
        "device on the data axis; with a single device, no mesh)",
    )
    if one_run:
        devices.add_argument(
            "--distributed",
            metavar="SPEC",
            help="join a multi-process run first (jax.distributed.initialize): 'auto' on "
            "SLURM, Open MPI and other clusters JAX detects, or HOST:PORT,NUM_PROCESSES,"
            "PROCESS_ID",
        )


def load_dataset(args):
    """The data set `args` name (`--data`, `--image-size`, `--max-per-class`), and its
    image size."""
    from .data import load_digits, load_image_folder

    if args.data is None:
        size = args.image_size or 8
        dataset = load_digits(image_size=None if size == 8 else size)
    else:
        size = args.image_size or 150
        dataset = load_image_folder(args.data, image_size=size, max_per_class=args.max_per_class)
    if args.data is None and args.max_per_class is not None:
        keep = _keep_per_class(dataset.labels, args.max_per_class)
        dataset = dataset.subset(keep)
    return size, dataset


def train_config(args, *, image_size: int, seed: int):
    """The [`cfconv.train.TrainConfig`][] of `cfconv train`'s options."""
    from .train import TrainConfig

    return TrainConfig(
        model=args.model,
        strategy=args.strategy,
        positions=args.positions,
        rate=args.rate,
        chunk_size=args.chunk_size,
        image_size=image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        generator_lr=args.generator_lr,
        generator_weight_decay=args.generator_weight_decay,
        lr_schedule=args.lr_schedule,
        write_back=args.write_back,
        generator_momentum=args.generator_momentum,
        sampling=args.sampling,
        sampling_floor=args.sampling_floor,
        error_feedback=args.error_feedback,
        state_init=args.state_init,
        seed=seed,
        width=args.width,
        depth=args.depth,
        mlp_hidden=args.mlp_hidden,
        generator=args.generator,
        frequency_scale=args.frequency_scale,
        augment=not args.no_augment,
    )


def make_train_mesh(args, command: str, models: tuple[str, ...] | None = None):
    """The device mesh of `--mesh` (after `--distributed`, if given), checked against
    `--batch-size` and, if one of `models` (default: `--model`) is a CF-Conv net,
    `--width`; a bad one exits with a message that starts with `command`. `None` (train
    without a mesh) when `--mesh` is not given and there is a single device."""
    from .distributed import initialize, make_mesh

    try:
        if getattr(args, "distributed", None) is not None:
            initialize(args.distributed)
        mesh = make_mesh() if args.mesh is None else make_mesh(*args.mesh)
    except ValueError as error:
        raise SystemExit(f"{command}: {error}")
    if args.mesh is None and mesh.size == 1:
        # One device and no --mesh: the plain step, without the mesh's sharding
        # constraints and per-device programs, which cost time on one CPU device and
        # compute the same to float32 rounding.
        return None
    data_size, model_size = mesh.devices.shape
    convolves = any(m != "spatial" for m in (models or (args.model,)))
    if args.batch_size % data_size or (convolves and args.width % model_size):
        raise SystemExit(
            f"{command}: the mesh {data_size}x{model_size} needs a --batch-size divisible "
            f"by {data_size} and a --width divisible by {model_size}; choose another --mesh"
        )
    return mesh


def check_train_arguments(parser: argparse.ArgumentParser, args) -> None:
    """Reject values of `cfconv train`'s options that argparse's types let through."""
    if not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    if not 0 < args.rate <= 1:
        parser.error(f"--rate must be in (0, 1], got {args.rate}")
    if not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.generator_lr is not None and not args.generator_lr > 0:
        parser.error(f"--generator-lr must be positive, got {args.generator_lr}")


def _keep_per_class(labels, limit: int):
    import numpy as np

    keep = np.concatenate([np.flatnonzero(labels == c)[:limit] for c in np.unique(labels)])
    return np.sort(keep)
