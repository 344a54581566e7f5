"""`cfconv gradient-noise`: how well one sparse step's generator gradient points where the
exact gradient does."""

import math
import sys
from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._strategies import SAMPLINGS, Chunked, Sparse
from ..models import AbstractModel, CFConvNet
from ..train._sampling import _kernel_gradients, refresh_frequency_weights


def _generator_gradients(model: AbstractModel, kernels, images, labels) -> list[Array]:
    """Per layer, the flattened gradient of the batch loss with respect to its generator."""
    from ..train import loss_and_accuracy

    def loss_fn(model):
        logits = jax.vmap(model, in_axes=(0, None))(images, kernels(model))
        return loss_and_accuracy(logits, labels)[0]

    grads = eqx.filter_grad(loss_fn)(model)
    flat = []
    for layer in grads.layers:
        leaves = jax.tree.leaves(eqx.filter(layer.generator, eqx.is_inexact_array))
        flat.append(jnp.concatenate([leaf.ravel() for leaf in leaves]))
    return flat


def sparse_gradient_agreement(
    model: AbstractModel,
    images: Float[Array, "batch channels h w"],
    labels: Int[Array, " batch"],
    fractions: Sequence[float],
    *,
    repeats: int = 8,
    key: PRNGKeyArray,
    sampling: Literal["uniform", "stratified"] = "uniform",
    weight_batch: tuple[Array, Array] | None = None,
    floor: float = 0.05,
) -> dict[str, list]:
    r"""Compare one sparse step's generator gradients with the exact gradient.

    The stored kernels are set to what the generators give now ($S = K_\theta$), so that
    the only difference between a sparse step and the exact dense gradient is which
    positions pass gradient: with `rate=1` and sampling without replacement, a sparse
    step's gradient is the exact gradient's sum restricted to the sampled positions. For
    each fraction $f$ of every layer's grid, `repeats` draws give gradients $g_1, \dots$;
    the result holds, per layer, their mean cosine similarity with the exact gradient $g$
    (how well one step points the right way), the cosine of their mean $\bar g$, and
    $\lVert \bar g \rVert / (f \lVert g \rVert)$: each draw is an unbiased estimate of
    $f g$, so this is near 1 when the mean has averaged the noise away, and above 1 by the
    noise left in it.

    **Arguments:**

    - `model`: a [`cfconv.models.CFConvNet`][].
    - `images`, `labels`: one batch, already preprocessed.
    - `fractions`: fractions of each layer's kernel grid sampled per step, in `(0, 1]`.
    - `repeats`: draws per fraction.
    - `key`: a PRNG key.
    - `sampling`: `"uniform"` (default) or `"stratified"`: the positions of
      [`cfconv.Sparse`][]'s `sampling`, drawn by `frequency_weights` made from the
      stored kernels' gradient on `weight_batch` (`(images, labels)`, another batch than
      the one measured, as in training, where the weights come from an earlier batch)
      with [`cfconv.train.refresh_frequency_weights`][] and `floor`.

    **Returns:**

    `{"fractions": [...], "cosine": [[per layer] per fraction], "cosine_of_mean": ...,
    "norm_ratio": ..., "zero_frequency_share": [per layer]}`, the last the share of the
    exact kernel gradient's magnitude (summed over the channel pairs) at the zero
    frequency.
    """
    if not isinstance(model, CFConvNet):
        raise TypeError(f"`model` must be a cfconv.models.CFConvNet, got {type(model).__name__}")
    fractions = [float(f) for f in fractions]
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"`fractions` must be non-empty, each in (0, 1], got {fractions}")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"`repeats` must be a positive integer, got {repeats!r}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {sampling!r}")
    if sampling == "stratified" and weight_batch is None:
        raise ValueError("`weight_batch` is required with `sampling='stratified'`")
    image_size = (images.shape[-2], images.shape[-1])
    states = model.init_states(image_size, key=jax.random.key(0))
    states = model.kernels(states, image_size, Chunked())[1]
    kernel_gradients = _kernel_gradients(model, states, images, labels, image_size)
    shares = []
    for gradient in kernel_gradients:
        magnitude = jnp.abs(gradient).sum(axis=(0, 1))
        shares.append(float(magnitude[0, 0] / magnitude.sum()))
    if sampling == "stratified":
        assert weight_batch is not None
        states = refresh_frequency_weights(model, states, *weight_batch, image_size, floor=floor)
    grids = [math.prod(layer.generator.grid_shape(image_size)) for layer in model.layers]

    exact = eqx.filter_jit(_generator_gradients)(
        model, lambda m: m.kernels(states, image_size, Chunked())[0], images, labels
    )

    def cosine(a, b):
        return float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))

    result: dict[str, list] = {"fractions": fractions, "cosine": [], "cosine_of_mean": [],
                               "norm_ratio": [], "zero_frequency_share": shares}  # fmt: skip
    for fraction in fractions:
        nums = [max(1, round(fraction * g)) for g in grids]

        def kernels(model, key, nums=nums):
            keys = jax.random.split(key, len(model.layers))
            return tuple(
                layer.kernel(
                    state,
                    image_size,
                    Sparse(num, rate=1.0, replace=False, sampling=sampling),
                    key=k,
                )[0]  # fmt: skip
                for layer, state, num, k in zip(model.layers, states, nums, keys)
            )

        sparse = eqx.filter_jit(
            lambda model, key, kernels=kernels: _generator_gradients(
                model, lambda m: kernels(m, key), images, labels
            )
        )
        draws = [sparse(model, k) for k in jax.random.split(key, repeats)]
        mean = [jnp.mean(jnp.stack([d[i] for d in draws]), axis=0) for i in range(len(grids))]
        result["cosine"].append(
            [float(np.mean([cosine(d[i], exact[i]) for d in draws])) for i in range(len(grids))]
        )
        result["cosine_of_mean"].append([cosine(m, g) for m, g in zip(mean, exact)])
        sampled = [num / grid for num, grid in zip(nums, grids)]  # the realised fractions
        result["norm_ratio"].append(
            [
                float(jnp.linalg.norm(m) / (f * jnp.linalg.norm(g)))
                for m, g, f in zip(mean, exact, sampled)
            ]  # fmt: skip
        )
    return result


def format_agreement(result: dict[str, list]) -> str:
    """The result of [`cfconv.experiments.sparse_gradient_agreement`][] as a markdown table."""
    lines = [
        "| fraction sampled | cosine to the exact gradient, per layer (one step) | "
        "mean over layers | cosine of the mean of the draws (mean over layers) |",
        "|---|---|---|---|",
    ]
    for f, cos, cos_mean in zip(result["fractions"], result["cosine"], result["cosine_of_mean"]):
        per_layer = " ".join(f"{c:.2f}" for c in cos)
        lines.append(f"| {f:g} | {per_layer} | {np.mean(cos):.3f} | {np.mean(cos_mean):.3f} |")
    return "\n".join(lines)


def gradient_noise_command(args) -> int:
    """Measure how well one sparse step's generator gradient agrees with the exact
    gradient, for several fractions of the kernel grid sampled per step."""
    from ..data import batches, load_digits, train_val_split
    from ..models import make_model
    from ..train._step import standardizer

    dataset = load_digits()
    train_data, _ = train_val_split(dataset, val_fraction=0.2, seed=args.seed)
    key = jax.random.key(args.seed)
    k_model, k_draws = jax.random.split(key)
    try:
        model = make_model(args.model, in_channels=train_data.channels,
                           num_classes=train_data.num_classes, width=args.width,
                           depth=args.depth, generator=args.generator, key=k_model)  # fmt: skip
    except ValueError as error:
        print(f"cfconv gradient-noise: {error}", file=sys.stderr)
        return 2
    if not isinstance(model, CFConvNet):
        print(f"cfconv gradient-noise: --model {args.model} has no kernel generators",
              file=sys.stderr)  # fmt: skip
        return 2
    data = iter(batches(train_data, min(args.batch_size, len(train_data)), shuffle=True,
                        seed=args.seed))  # fmt: skip
    standardize = standardizer(train_data)
    images, labels = next(data)
    images = standardize(images)
    weight_images, weight_labels = next(data, (images, labels))  # the next batch, if any
    weight_batch = (standardize(weight_images), weight_labels)
    print(f"cfconv gradient-noise: {args.model} net (width {args.width}, depth {args.depth}, "
          f"{args.generator} generators) at initialisation, one batch of {len(labels)} digits, "
          f"{args.repeats} draws per fraction; sparse steps with rate 1, "
          + ("without replacement" if args.sampling == "uniform" else
             f"positions stratified by the kernel gradient of the next batch "
             f"(floor {args.sampling_floor})"),
          flush=True)  # fmt: skip
    try:
        result = sparse_gradient_agreement(model, images, labels, args.fractions,
                                           repeats=args.repeats, key=k_draws,
                                           sampling=args.sampling, weight_batch=weight_batch,
                                           floor=args.sampling_floor)  # fmt: skip
    except ValueError as error:
        print(f"cfconv gradient-noise: {error}", file=sys.stderr)
        return 2
    shares = " ".join(f"{share:.2f}" for share in result["zero_frequency_share"])
    print(f"share of each layer's kernel gradient at the zero frequency: {shares}")
    print()
    print(format_agreement(result))
    return 0


def _fractions(text: str) -> tuple[float, ...]:
    import argparse

    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}")
    if not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"each fraction must be in (0, 1], got {text!r}")
    return values


def add_gradient_noise_arguments(p, positive_int, non_negative_int) -> None:
    """The options of `cfconv gradient-noise`."""
    from .._argtypes import unit_interval
    from ..models import GENERATOR_KINDS, MODEL_NAMES

    cf_models = [m for m in MODEL_NAMES if m not in ("spatial", "fourier")]
    p.add_argument("--model", choices=cf_models, default="hw_cin_cout",
                   help="the CF-Conv parameterization (default hw_cin_cout)")  # fmt: skip
    p.add_argument("--generator", choices=GENERATOR_KINDS, default="sine",
                   help="the generator MLPs (default sine)")  # fmt: skip
    p.add_argument("--width", type=positive_int, default=32, help="filters per layer (32)")
    p.add_argument("--depth", type=positive_int, default=6, help="convolution layers (6)")
    p.add_argument(
        "--fractions",
        type=_fractions,
        default=(0.02, 0.1, 0.4, 1.0),
        metavar="F1,F2,...",
        help="fractions of each kernel grid sampled per step (0.02,0.1,0.4,1)",
    )
    p.add_argument("--repeats", type=positive_int, default=8, help="draws per fraction (8)")
    p.add_argument("--sampling", choices=SAMPLINGS, default="uniform",
                   help="positions drawn uniformly without replacement (default), or "
                   "stratified over the frequencies by the kernel gradient of the next "
                   "batch (cfconv train --sampling stratified)")  # fmt: skip
    p.add_argument(
        "--sampling-floor",
        type=unit_interval,
        default=0.05,
        metavar="F",
        help="with --sampling stratified, the share spread evenly (0.05)",
    )
    p.add_argument("--batch-size", type=positive_int, default=32, help="digits in the batch (32)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (0)")
