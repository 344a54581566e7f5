"""The command-line glue of `cfconv spectral-bias`, `cfconv sparse-ablation` and `cfconv
plot`: their options, and the functions that run them and print or write the results."""

import json
import pathlib
import platform
import sys
import time
from typing import Any

import jax

from .._strategies import SAMPLINGS
from ._ablation import DEFAULT_VARIANTS, VARIANTS, format_ablation, run_sparse_ablation
from ._plots import plot_checkpoint, plot_spectral_bias
from ._spectral_bias import format_tables, run_spectral_bias
from ._spectral_setup import SpectralBiasConfig


# --- `cfconv spectral-bias` ----------------------------------------------------------------


def spectral_bias_command(args) -> int:
    """Fit low-, band- and high-pass, Gabor and random filters with Fourier- and
    spatial-domain kernel generators; report the error per band of frequency."""
    overrides: dict[str, Any] = {}
    for name in ("image_size", "steps", "batch_size", "lr", "seeds", "hidden", "num_features",
                 "feature_scale", "bands"):  # fmt: skip
        value = getattr(args, name)
        if value is not None:
            overrides[name] = tuple(value) if name == "hidden" else value
    try:
        config = (
            SpectralBiasConfig.quick(**overrides) if args.quick else SpectralBiasConfig(**overrides)
        )
    except ValueError as error:
        print(f"cfconv spectral-bias: {error}", file=sys.stderr)
        return 2
    fits = len(config.targets) * len(config.domains) * config.seeds
    print(f"cfconv spectral-bias: {fits} fits of {config.steps} Adam steps on "
          f"{config.image_size}x{config.image_size} white noise ({jax.default_backend()})",
          flush=True)  # fmt: skip
    start = time.perf_counter()
    result = run_spectral_bias(config, log=sys.stderr)
    seconds = time.perf_counter() - start
    print()
    print(format_tables(result))
    print(f"\n{fits} fits in {seconds:.0f} s")
    if args.figures is not None:
        for path in plot_spectral_bias(result, args.figures):
            print(f"wrote {path}")
    if args.json is not None:
        data = result.to_json()
        data["machine"] = {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "seconds": seconds,
        }
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def add_spectral_bias_arguments(p, positive_int, widths) -> None:
    """The options of `cfconv spectral-bias`."""
    p.add_argument(
        "--quick",
        action="store_true",
        help="a small version: 16x16, 300 steps, 2 seeds, 4 bands (under a minute)",
    )
    p.add_argument("--image-size", type=positive_int, help="image and kernel size (64)")
    p.add_argument("--steps", type=positive_int, help="Adam steps per fit (1000)")
    p.add_argument("--batch-size", type=positive_int, help="white-noise images per step (8)")
    p.add_argument("--lr", type=float, help="Adam learning rate (1e-3)")
    p.add_argument("--seeds", type=positive_int, help="seeds per target and generator (3)")
    p.add_argument(
        "--hidden",
        type=widths,
        metavar="W1,W2,...",
        help="MLP hidden widths (the paper's 32,32,32,16,16,16,8,8,8)",
    )
    p.add_argument(
        "--num-features", type=positive_int, help="random Fourier frequencies of generator (c) (16)"
    )
    p.add_argument(
        "--feature-scale",
        type=float,
        help="their standard deviation, as a fraction of the grid's Nyquist (0.25)",
    )
    p.add_argument("--bands", type=positive_int, help="bands of radial frequency (8)")
    p.add_argument("--json", metavar="FILE", help="write the settings and results as JSON")
    p.add_argument("--figures", metavar="DIR", help="save the figures (PNG) there")  # fmt: skip


# --- `cfconv plot` -------------------------------------------------------------------------


def plot_command(args) -> int:
    """Draw a trained model's kernels (Fourier magnitude and phase, spatial kernel) and one
    step's sparse sampling pattern, from the checkpoint folder of a `cfconv train` run."""
    try:
        paths = plot_checkpoint(args.checkpoint, args.out, layers=args.layers, pairs=args.pairs,
                                source=args.source, seed=args.seed)  # fmt: skip
    except ValueError as error:
        print(f"cfconv plot: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0


def add_plot_arguments(p, positive_int, non_negative_int) -> None:
    """The options of `cfconv plot`."""
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="the checkpoint folder of a `cfconv train` run (or its file)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        default="kernel-plots",
        help="where to write the PNGs (default kernel-plots)",
    )
    p.add_argument(
        "--layers",
        type=non_negative_int,
        nargs="+",
        metavar="N",
        help="the layers to draw, from 0 (default all)",
    )
    p.add_argument(
        "--pairs", type=positive_int, default=4, help="channel pairs drawn per layer (default 4)"
    )
    p.add_argument(
        "--source",
        choices=("stored", "generator"),
        default="stored",
        help="stored: the stored kernels inference uses (default); generator: the "
        "generators materialized densely (CF-Conv nets)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the sampled positions drawn (default 0)")  # fmt: skip


# --- `cfconv sparse-ablation` --------------------------------------------------------------


def sparse_ablation_command(args) -> int:
    """Split the accuracy gap between sparse and exact training into its causes: train
    the digits net with the exact step, with a sampled gradient only, with a stale
    kernel only, and with the paper's sparse step, and compare."""
    config = dict(epochs=args.epochs, seed=args.seed, width=args.width, depth=args.depth,
                  lr=args.lr, model=args.model, state_init=args.state_init)  # fmt: skip
    if args.generator_lr is not None:
        config["generator_lr"] = args.generator_lr
    print(f"cfconv sparse-ablation: {args.model} net on the digits, {args.epochs} epochs, "
          f"seed {args.seed}; {args.fraction:g} of each layer's grid drawn per step, "
          f"{args.sampling}, rate {args.rate:g}, generator momentum "
          f"{args.generator_momentum:g}, stored kernels from {args.state_init} "
          f"({jax.default_backend()})", flush=True)  # fmt: skip
    try:
        results = run_sparse_ablation(args.variants, fraction=args.fraction, rate=args.rate,
                                      generator_momentum=args.generator_momentum,
                                      sampling=args.sampling, log=sys.stderr,
                                      **config)  # fmt: skip
    except ValueError as error:
        print(f"cfconv sparse-ablation: {error}", file=sys.stderr)
        return 2
    print()
    print(format_ablation(results))
    if args.json:
        print(json.dumps({v: {"val_acc": m["val_acc"], "epochs": m["epochs"],
                              "seconds": m["seconds"]} for v, m in results.items()}))  # fmt: skip
    return 0


def _variants(text: str) -> tuple[str, ...]:
    import argparse

    names = tuple(v.strip() for v in text.split(","))
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown variants {bad}; choose from {tuple(VARIANTS)}")
    return names


def add_sparse_ablation_arguments(p, positive_int, non_negative_int, fraction, momentum
                                  ) -> None:  # fmt: skip
    """The options of `cfconv sparse-ablation`."""
    from ..models import MODEL_NAMES
    from ..train._config import STATE_INITS

    cf_models = [m for m in MODEL_NAMES if m not in ("spatial", "fourier")]
    names = ", ".join(VARIANTS)
    p.add_argument("--variants", type=_variants, default=DEFAULT_VARIANTS,
                   help=f"comma-separated subset of {names} (default: the first four)")  # fmt: skip
    p.add_argument("--fraction", type=fraction, default=0.1,
                   help="draws per step as a share of each layer's grid (0.1)")  # fmt: skip
    p.add_argument("--rate", type=fraction, default=0.1,
                   help="EMA weight of the fresh values (0.1, the paper's)")  # fmt: skip
    p.add_argument("--sampling", choices=SAMPLINGS, default="uniform",
                   help="how positions are drawn: uniform (default, the paper's) or "
                        "stratified by frequency weights (cfconv train's default)")  # fmt: skip
    p.add_argument("--state-init", choices=STATE_INITS, default="uniform",
                   help="the initial stored kernels: uniform noise (default, the paper's) "
                        "or the generators' kernels (cfconv train's default)")  # fmt: skip
    p.add_argument("--model", choices=cf_models, default="hw_cin_cout",
                   help="the CF-Conv parameterization (default hw_cin_cout)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs per variant (10)")
    p.add_argument("--width", type=positive_int, default=32, help="filters per layer (32)")
    p.add_argument("--depth", type=positive_int, default=6, help="convolution layers (6)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    p.add_argument("--generator-lr", type=float, default=None,
                   help="Adam learning rate of the kernel MLPs (default: --lr)")  # fmt: skip
    p.add_argument("--generator-momentum", type=momentum, default=0.9, metavar="B1",
                   help="Adam's b1 for the kernel MLPs (default 0.9, Adam's)")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (0)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
