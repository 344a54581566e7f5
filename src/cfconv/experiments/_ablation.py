"""`cfconv sparse-ablation`: which part of the sparse update costs accuracy.

A sparse step differs from the exact dense step in two ways at once:

1. **The gradient is sampled.** Only the sampled positions pass gradient to the
   generator.
2. **The forward kernel is stale.** The convolution uses the stored kernel, in which
   every unsampled entry is the generator's value from the last time that entry was
   sampled (blended by the EMA), not the generator's value now.

The two strategies here each keep one of the two and undo the other, so that training
the same network with all four (exact, sampled gradient only, stale kernel only, the
paper's sparse step) splits the accuracy gap between the sparse and the exact step into
its two causes. They evaluate the generator everywhere, so they are diagnostics, not
faster training.

Every strategy here draws its positions as `cfconv.Sparse` does with the same
`sampling`: uniformly with replacement (the paper's), or stratified by the states'
`frequency_weights`, with the gradient scales that keep the sampled gradient unbiased.
"""

import dataclasses
import math
import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import equinox as eqx
import jax
import jax.numpy as jnp

from .._errors import check_rate, check_share
from .._generators import KernelGenerator
from .._positions import sample_positions
from .._state import ema_update
from .._strategies import SAMPLINGS, AbstractStrategy, Chunked, Sparse


if TYPE_CHECKING:
    from ..data import Dataset


def _check_fraction(fraction) -> float:
    return check_share("fraction", fraction)


def _check_sampling(sampling) -> None:
    if sampling not in SAMPLINGS:
        raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {sampling!r}")


def _check_weights(strategy, state) -> None:
    """A clear error if `strategy` samples by weights that `state` does not hold."""
    if strategy.sampling == "stratified" and state.frequency_weights is None:
        raise ValueError(
            f"`state` has no `frequency_weights`, which {type(strategy).__name__}"
            "(sampling='stratified') samples by: add them with "
            "`cfconv.train.refresh_frequency_weights`"
        )


def fraction_positions(generator: KernelGenerator, spatial_shape, fraction: float) -> int:
    """How many positions are `fraction` of `generator`'s grid at `spatial_shape` (at
    least one)."""
    return Sparse(None, share=fraction).count(math.prod(generator.grid_shape(spatial_shape)))


class FractionSparse(AbstractStrategy):
    """The paper's sparse step ([`cfconv.Sparse`][]), sampling a `fraction` of each
    layer's grid (uniformly with replacement, or stratified, as `sampling` says) instead
    of a fixed number of positions, so that layers of different sizes are sampled alike.

    **Fields:**

    - `fraction`: draws per step as a share of the layer's grid, in `(0, 1]`.
    - `rate`: the EMA weight of the fresh values.
    - `write_back`, `sampling`: as for [`cfconv.Sparse`][].
    """

    fraction: float = eqx.field(static=True)
    rate: float = 0.1
    write_back: bool = eqx.field(static=True, default=False)
    sampling: Literal["uniform", "stratified"] = eqx.field(static=True, default="uniform")
    needs_key: ClassVar[bool] = True

    def __check_init__(self):
        _check_fraction(self.fraction)
        check_rate(self.rate)
        _check_sampling(self.sampling)

    @property
    def needs_frequency_weights(self) -> bool:
        return self.sampling == "stratified"

    def _sparse(self, generator, spatial_shape) -> Sparse:
        num = fraction_positions(generator, spatial_shape, self.fraction)
        return Sparse(num, self.rate, write_back=self.write_back, sampling=self.sampling)

    def __call__(self, generator, state, spatial_shape, *, key=None):
        _check_weights(self, state)
        return self._sparse(generator, spatial_shape)(generator, state, spatial_shape, key=key)

    def after_update(self, generator, kernel, new_state, spatial_shape, *, state_gradient=None):
        del state_gradient  # no error feedback here
        sparse = self._sparse(generator, spatial_shape)
        return sparse.after_update(generator, kernel, new_state, spatial_shape)


def _generate_and_sample(strategy, generator, state, spatial_shape, key):
    """The generator's whole kernel, `strategy.fraction` of its grid's positions drawn
    by `strategy.sampling`, and their gradient scales (1 for uniform positions)."""
    if key is None:
        name = type(strategy).__name__
        raise ValueError(f"`key` is required by {name} (it samples positions)")
    kernel = Chunked(strategy.chunk_size)(generator, state, spatial_shape)[0]
    num = fraction_positions(generator, spatial_shape, strategy.fraction)
    if strategy.sampling == "uniform":
        positions = sample_positions(key, kernel.shape, num)
        return kernel, positions, jnp.ones(positions.shape, jnp.float32)
    _check_weights(strategy, state)
    # As `Sparse(num, sampling="stratified")` samples.
    sparse = Sparse(num, sampling="stratified")
    positions, scales = sparse.sample_stratified(generator, state, spatial_shape, key=key)
    return kernel, positions, scales


class SampledGradient(AbstractStrategy):
    """Fresh kernel, sampled gradient: the exact step's forward pass (the generator's
    kernel everywhere), with gradient passed to the generator only at the positions a
    sparse step would sample.

    Against the exact step, only the sampling of the gradient differs; against the sparse
    step, only the staleness of the forward kernel. (The sparse step's gradient is also
    scaled by its `rate`, this one's is not: Adam, `cfconv train`'s optimizer, is nearly
    invariant to that scale, other optimizers are not.) With `sampling="stratified"`
    each sampled position's gradient is multiplied by its scale, as in
    [`cfconv.Sparse`][]. The new state is the generated kernel, as for the dense
    strategies.

    **Fields:**

    - `fraction`: draws per step as a share of the layer's grid, in `(0, 1]`.
    - `chunk_size`: positions per chunk of the generator's evaluation.
    - `sampling`: `"uniform"` (default) or `"stratified"`, as for [`cfconv.Sparse`][].
    """

    fraction: float = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True, default=2**15)
    sampling: Literal["uniform", "stratified"] = eqx.field(static=True, default="uniform")
    needs_key: ClassVar[bool] = True
    generates_state: ClassVar[bool] = True

    def __check_init__(self):
        _check_fraction(self.fraction)
        _check_sampling(self.sampling)

    @property
    def needs_frequency_weights(self) -> bool:
        return self.sampling == "stratified"

    def __call__(self, generator, state, spatial_shape, *, key=None):
        kernel, positions, scales = _generate_and_sample(self, generator, state, spatial_shape,
                                                         key)  # fmt: skip
        # A repeated uniform position passes its gradient once, as in the sparse step.
        weight = jnp.zeros(kernel.size, jnp.float32).at[positions].set(scales)
        fixed = jax.lax.stop_gradient(kernel)
        weight = weight.reshape(kernel.shape).astype(kernel.real.dtype)
        return fixed + weight * (kernel - fixed), state.replace_kernel(fixed)


class StaleKernel(AbstractStrategy):
    """Stale kernel, full gradient: the sparse step's forward kernel (the stored kernel,
    a sampled `fraction` of it blended towards the generator at `rate`), with the
    gradient of every position passed to the generator as if the kernel were the
    generator's own (a straight-through estimator).

    Against the sparse step, only the sampling of the gradient differs; against the exact
    step, only the staleness of the forward kernel. The new state is the blended kernel,
    as for [`cfconv.Sparse`][].

    **Fields:**

    - `fraction`: draws per step as a share of the layer's grid, in `(0, 1]`.
    - `rate`: the EMA weight of the fresh values.
    - `chunk_size`: positions per chunk of the generator's evaluation.
    - `sampling`: how the blended positions are drawn, `"uniform"` (default) or
      `"stratified"`, as for [`cfconv.Sparse`][].
    """

    fraction: float = eqx.field(static=True)
    rate: float = 0.1
    chunk_size: int = eqx.field(static=True, default=2**15)
    sampling: Literal["uniform", "stratified"] = eqx.field(static=True, default="uniform")
    needs_key: ClassVar[bool] = True

    def __check_init__(self):
        _check_fraction(self.fraction)
        check_rate(self.rate)
        _check_sampling(self.sampling)

    @property
    def needs_frequency_weights(self) -> bool:
        return self.sampling == "stratified"

    def __call__(self, generator, state, spatial_shape, *, key=None):
        kernel, positions, _ = _generate_and_sample(self, generator, state, spatial_shape, key)
        fresh = jax.lax.stop_gradient(kernel).reshape(-1)[positions]
        stale = ema_update(jax.lax.stop_gradient(state), positions, fresh, rate=self.rate)
        # The stale kernel's value, the generated kernel's gradient.
        return kernel + jax.lax.stop_gradient(stale.kernel - kernel), stale


VARIANTS: dict[str, str] = {
    "exact": "fresh kernel, exact gradient (the dense step)",
    "sampled-gradient": "fresh kernel, sampled gradient",
    "stale-kernel": "stale kernel, exact gradient",
    "sparse": "stale kernel, sampled gradient (the paper's sparse step)",
    "write-back": "stale kernel, sampled gradient, updated values written back",
}
"""The variants of [`run_sparse_ablation`][cfconv.experiments.run_sparse_ablation]: what
each one's forward kernel and gradient are. `"write-back"` is the sparse step with
[`cfconv.Sparse`][]'s `write_back=True`, the remedy for the stale kernel."""

DEFAULT_VARIANTS: tuple[str, ...] = ("exact", "sampled-gradient", "stale-kernel", "sparse")
"""The variants trained by default: the two causes of the gap, and the two ends."""


def ablation_strategy(
    variant: str, fraction: float, rate: float, sampling: str = "uniform"
) -> AbstractStrategy:
    """The kernel strategy of one of the [`VARIANTS`][cfconv.experiments.VARIANTS],
    drawing its positions by `sampling` (`"uniform"` or `"stratified"`)."""
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {tuple(VARIANTS)}, got {variant!r}")
    _check_sampling(sampling)
    how = cast(Literal["uniform", "stratified"], sampling)
    if variant == "exact":
        return Chunked()
    if variant == "sampled-gradient":
        return SampledGradient(fraction, sampling=how)
    if variant == "stale-kernel":
        return StaleKernel(fraction, rate, sampling=how)
    return FractionSparse(fraction, rate, write_back=variant == "write-back", sampling=how)


def run_sparse_ablation(
    variants=DEFAULT_VARIANTS,
    *,
    fraction: float = 0.1,
    rate: float = 0.1,
    generator_momentum: float = 0.9,
    sampling: str = "uniform",
    train_data: "Dataset | None" = None,
    val_data: "Dataset | None" = None,
    log=sys.stderr,
    **config: Any,
) -> dict[str, dict[str, Any]]:
    """Train a CF-Conv net once per variant and return each run's metrics.

    Every run has the same data split, initialisation, batches and sampling keys (all
    from `seed`); only the kernel strategy differs (see
    [`VARIANTS`][cfconv.experiments.VARIANTS]).

    **Arguments:**

    - `variants`: which of `VARIANTS` to train (default `DEFAULT_VARIANTS`).
    - `fraction`: draws per step as a share of each layer's grid.
    - `rate`: the EMA weight of the sparse and stale-kernel variants.
    - `generator_momentum`: Adam's $\beta_1$ for the generator MLPs (default 0.9, the
      paper's Adam; `cfconv train` defaults to 0).
    - `sampling`: how every sampling variant draws its positions: `"uniform"` (default,
      the paper's, with replacement) or `"stratified"` (`cfconv train`'s default; by
      frequency weights that [`cfconv.train.fit`][] refreshes every epoch, with the
      `sampling_floor` of the configuration).
    - `train_data`, `val_data`: [`cfconv.data.Dataset`][]s (both or neither); default:
      the bundled digits, split 80/20 by `seed` as `cfconv train` does.
    - `log`: where the training progress goes (`None`: silent).
    - `**config`: further fields of [`cfconv.train.TrainConfig`][] (e.g. `epochs`,
      `seed`, `width`, `depth`, `model`, `sampling_floor`; `state_init` defaults to
      `"uniform"` here, the paper's initial stored kernels, unlike `cfconv train`).

    **Returns:**

    `{variant: metrics}`, with the metrics of [`cfconv.train.fit`][], plus `"seconds"`
    and `"strategy"` (the strategy's repr).
    """
    from ..data import load_digits, train_val_split
    from ..train import TrainConfig, fit

    _check_fraction(fraction)
    check_rate(rate)
    _check_sampling(sampling)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"`variants` must be a non-empty subset of {tuple(VARIANTS)}, got "
                         f"{tuple(variants)}")  # fmt: skip
    ignored = sorted(set(config) & {"strategy", "positions", "chunk_size", "write_back"})
    if sampling == "uniform" and "sampling_floor" in config:
        ignored.append("sampling_floor")
    if ignored:
        raise ValueError(f"{ignored} would be ignored: each variant sets its own strategy "
                         f"(`variants`, `fraction`, `rate`, `sampling`; `sampling_floor` "
                         f"only with `sampling='stratified'`)")  # fmt: skip
    # The stored kernels start as the paper's noise unless `state_init` says otherwise.
    train_config = TrainConfig(**{"rate": rate, "generator_momentum": generator_momentum,
                                  "state_init": "uniform", **config,
                                  "sampling": sampling})  # fmt: skip
    if train_config.model in ("spatial", "fourier"):
        raise ValueError(f"`model` must be a CF-Conv net, got {train_config.model!r}")
    if (train_data is None) != (val_data is None):
        raise ValueError("give both `train_data` and `val_data`, or neither (the digits)")
    if train_data is None or val_data is None:
        size = train_config.image_size
        dataset = load_digits(image_size=None if size == 8 else size)
        train_data, val_data = train_val_split(dataset, val_fraction=0.2, seed=train_config.seed)
    results = {}
    for variant in variants:
        if log is not None:
            log.write(f"{variant}: {VARIANTS[variant]}\n")
        strategy = ablation_strategy(variant, fraction, rate, sampling)
        # The recorded configuration says whether the variant wrote back.
        variant_config = dataclasses.replace(train_config, write_back=variant == "write-back")
        start = time.perf_counter()
        metrics = fit(variant_config, train_data, val_data, log=log, strategy=strategy)
        metrics["seconds"] = time.perf_counter() - start
        metrics["strategy"] = repr(strategy)
        results[variant] = metrics
    return results


def format_ablation(results: dict[str, dict[str, Any]]) -> str:
    """The result of [`run_sparse_ablation`][cfconv.experiments.run_sparse_ablation] as a
    markdown table."""
    lines = [
        "| variant | forward kernel, gradient | final val accuracy | training loss by epoch "
        "| kernel lag (mean over layers) |",
        "|---|---|---|---|---|",
    ]
    for variant, metrics in results.items():
        epochs = metrics["epochs"]
        losses = ", ".join(f"{e['train_loss']:.2f}" for e in epochs)
        lag = epochs[-1].get("kernel_lag") if epochs else None
        lag_text = "" if not lag else f"{sum(lag) / len(lag):.3f}"
        lines.append(f"| {variant} | {VARIANTS[variant]} | {metrics['val_acc']:.4f} | "
                     f"{losses} | {lag_text} |")  # fmt: skip
    return "\n".join(lines)
