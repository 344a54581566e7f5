"""`cfconv spectral-bias`: do Fourier-domain generators escape the spectral bias of MLPs?

Each run fits one target filter with one kernel generator by gradient descent on white
noise images, and measures the error of the learned kernel overall and per band of radial
frequency. The generators: (a) `"fourier"`, a [`cfconv.KernelGenerator`][]; (b)
`"spatial"`, a [`cfconv.SpatialKernelGenerator`][] with the same MLPs; (c)
`"spatial-fourier-features"`, the spatial one on random Fourier features, its MLP widths
adjusted to the same number of trainable parameters.
"""

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._features import RandomFourierFeatures
from .._generators import KernelGenerator
from .._mlp import parameter_count
from .._spatial_generator import SpatialKernelGenerator
from .._spectral import spectral_conv
from ._spectral_setup import (
    _PARAMETERIZATION,
    DOMAINS,
    SpectralBiasConfig,
    band_labels,
    band_shares,
    kernel_errors,
    target_kernel,
)


@runtime_checkable
class TextLog(Protocol):
    """Anything with `write(str)` and `flush()`: a text file, `sys.stderr`, a `StringIO`."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


def _mlp_size(in_size: int, hidden: Sequence[int]) -> int:
    widths = [in_size, *hidden, 1]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def matched_hidden(hidden: Sequence[int], in_size: int, new_in_size: int) -> tuple[int, ...]:
    """Hidden widths for `new_in_size` inputs with the parameters of `hidden` on `in_size`.

    Every width is scaled by one factor (kept at least 1), and the first two are then
    moved by up to 4 each: the widths with the smallest difference in parameters win
    (then the smallest move, then the largest factor). The shape of the MLP (its depth
    and the ratios of its widths) stays, so that a wider input costs width everywhere
    rather than a bottleneck in one layer.
    """
    hidden = tuple(hidden)
    goal = _mlp_size(in_size, hidden)
    best: tuple[tuple[int, int, float], tuple[int, ...]] | None = None
    for step in range(1, 401):
        factor = step / 200  # 0.005 .. 2.0
        base = [max(1, round(h * factor)) for h in hidden]
        moves = range(-4, 5)
        for m0 in moves:
            for m1 in moves if len(hidden) > 1 else [0]:
                widths = list(base)
                widths[0] = max(1, base[0] + m0)
                if len(hidden) > 1:
                    widths[1] = max(1, base[1] + m1)
                diff = abs(_mlp_size(new_in_size, widths) - goal)
                rank = (diff, abs(m0) + abs(m1), -factor)
                if best is None or rank < best[0]:
                    best = (rank, tuple(widths))
    assert best is not None
    return best[1]


def make_generator(domain: str, config: SpectralBiasConfig, *, key: PRNGKeyArray) -> eqx.Module:
    """The kernel generator of `domain` (one input and one output channel).

    **Arguments:**

    - `domain`: one of [`DOMAINS`][cfconv.experiments.DOMAINS].
    - `config`: the run's settings.
    - `key`: a PRNG key (for the weights and the random features).

    **Returns:**

    A [`cfconv.KernelGenerator`][] or [`cfconv.SpatialKernelGenerator`][] with the
    `"hw_cin_cout"` parameterization (the paper's single MLP, real and imaginary).
    """
    if domain == "fourier":
        # ReLU MLPs in both domains (the paper's), so that only the domain differs.
        return KernelGenerator(
            1, 1, _PARAMETERIZATION, config.hidden, jax.nn.relu, channel_scale=None,
            frequency_scale=1.0, key=key,
        )  # fmt: skip
    if domain == "spatial":
        return SpatialKernelGenerator(1, 1, _PARAMETERIZATION, config.hidden, key=key)
    if domain == "spatial-fourier-features":
        k_features, k_mlp = jax.random.split(key)
        nyquist = config.image_size / 4  # cycles per unit of the offsets in [-1, 1)
        features = RandomFourierFeatures(
            2, config.num_features, config.feature_scale * nyquist, key=k_features
        )
        hidden = matched_hidden(config.hidden, 4, 2 + features.out_size)
        return SpatialKernelGenerator(1, 1, _PARAMETERIZATION, hidden, features=features, key=k_mlp)
    raise ValueError(f"`domain` must be one of {DOMAINS}, got {domain!r}")


def trainable_parameters(generator: eqx.Module) -> int:
    """The trained parameters of a generator: its MLPs and trainable encodings."""
    if isinstance(generator, KernelGenerator):
        return parameter_count((generator.real, generator.imag))
    if isinstance(generator, SpatialKernelGenerator):
        features = generator.features
        extra = 0 if features is None else parameter_count(features) - features.num_fixed
        return parameter_count(generator.mlp) + extra
    raise TypeError(f"`generator` must be a kernel generator, got {type(generator).__name__}")


def _spatial_kernel(generator, size: int) -> Float[Array, "h w"]:
    """The real kernel a generator applies (irfft2 keeps the Hermitian part)."""
    return jnp.fft.irfft2(generator.materialize((size, size))[0, 0], s=(size, size))


@eqx.filter_jit
def _fit(generator, target: Float[Array, "h w"], key: PRNGKeyArray, steps: int, batch: int,
         lr: float):  # fmt: skip
    size = target.shape[0]
    target_hat = jnp.fft.rfft2(target)[None, None]
    params, static = eqx.partition(generator, eqx.is_inexact_array)
    optimizer = optax.adam(lr)

    def loss_fn(params, x):
        kernel = eqx.combine(params, static).materialize((size, size))
        y = jax.vmap(spectral_conv, (0, None))(x, kernel)
        y_target = jax.vmap(spectral_conv, (0, None))(x, target_hat)
        return jnp.mean((y - y_target) ** 2)

    def step(carry, key):
        params, opt_state = carry
        x = jax.random.normal(key, (batch, 1, size, size))
        loss, grads = jax.value_and_grad(loss_fn)(params, x)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    carry = (params, optimizer.init(params))
    (params, _), losses = jax.lax.scan(step, carry, jax.random.split(key, steps))
    return eqx.combine(params, static), losses


@dataclasses.dataclass
class SpectralBiasResult:
    """What [`run_spectral_bias`][cfconv.experiments.run_spectral_bias] returns.

    **Fields:**

    - `config`: the settings.
    - `results`: one dict per fit: `target`, `domain`, `seed`, `params` (trainable),
      `rel_error`, `band_errors` (see [`kernel_errors`][cfconv.experiments.kernel_errors]),
      `final_loss` (mean over the last tenth of the steps), `rel_error_2x` (the Fourier
      generator materialized at twice the size against the target there; `None` for the
      spatial generators, whose kernels stretch with the image) and `seconds`.
    - `targets`: the (normalised) target kernels of seed 0, by name.
    - `kernels`: the learned kernels of seed 0, by `(target, domain)`.
    - `shares`: the target's norm per band (seed 0), by target.
    """

    config: SpectralBiasConfig
    results: list[dict[str, Any]]
    targets: dict[str, np.ndarray]
    kernels: dict[tuple[str, str], np.ndarray]
    shares: dict[str, dict[str, float]]

    def to_json(self) -> dict[str, Any]:
        """The settings and the results, as `cfconv spectral-bias --json` writes them."""
        settings = dataclasses.asdict(self.config)
        settings["band_labels"] = band_labels(self.config)
        settings["parameterization"] = _PARAMETERIZATION
        return {"settings": settings, "results": self.results, "target_band_shares": self.shares}


def run_spectral_bias(
    config: SpectralBiasConfig, *, log: TextLog | None = None
) -> SpectralBiasResult:
    """Fit every target with every generator and seed; measure the errors.

    Each fit: a generator from [`make_generator`][cfconv.experiments.make_generator]
    (seeded), `config.steps` Adam steps; each step draws `config.batch_size` white-noise
    images (every frequency weighs the same in the loss) and minimises the mean squared
    difference between the outputs of the generated kernel and of the target (FFT
    convolution). Targets are normalised to unit norm ($\\sum k^2 = 1$).

    **Arguments:**

    - `config`: a [`SpectralBiasConfig`][cfconv.experiments.SpectralBiasConfig].
    - `log`: where to print one line per fit (`None`: silent).

    **Returns:**

    A [`SpectralBiasResult`][cfconv.experiments.SpectralBiasResult].
    """
    size = config.image_size
    results: list[dict[str, Any]] = []
    targets: dict[str, np.ndarray] = {}
    kernels: dict[tuple[str, str], np.ndarray] = {}
    shares: dict[str, dict[str, float]] = {}
    for target_name in config.targets:
        for seed in range(config.seeds):
            raw = target_kernel(target_name, size, seed=seed)
            factor = 1 / np.linalg.norm(raw)
            target = raw * factor
            target_2x = target_kernel(target_name, 2 * size, seed=seed) * factor
            if seed == 0:
                targets[target_name] = target
                shares[target_name] = band_shares(target, config)
            for domain in config.domains:
                k_gen, k_fit = jax.random.split(jax.random.fold_in(jax.random.key(seed), 1))
                generator = make_generator(domain, config, key=k_gen)
                start = time.perf_counter()
                trained, losses = _fit(generator, jnp.asarray(target, jnp.float32), k_fit,
                                       config.steps, config.batch_size, config.lr)  # fmt: skip
                learned = np.asarray(_spatial_kernel(trained, size), np.float64)
                seconds = time.perf_counter() - start
                rel_error, bands = kernel_errors(learned, target, config)
                rel_2x = None
                if domain == "fourier":
                    learned_2x = np.asarray(_spatial_kernel(trained, 2 * size), np.float64)
                    rel_2x = float(
                        np.linalg.norm(learned_2x - target_2x) / np.linalg.norm(target_2x)
                    )
                tail = max(1, config.steps // 10)
                results.append({
                    "target": target_name,
                    "domain": domain,
                    "seed": seed,
                    "params": trainable_parameters(generator),
                    "rel_error": rel_error,
                    "band_errors": bands,
                    "final_loss": float(jnp.mean(losses[-tail:])),
                    "rel_error_2x": rel_2x,
                    "seconds": seconds,
                })  # fmt: skip
                if seed == 0:
                    kernels[(target_name, domain)] = learned
                if log is not None:
                    log.write(f"{target_name:>9} {domain:>24} seed {seed}: relative error "
                              f"{rel_error:.4f} ({seconds:.1f} s)\n")  # fmt: skip
                    log.flush()
    return SpectralBiasResult(config, results, targets, kernels, shares)


def summarize(result: SpectralBiasResult) -> dict[tuple[str, str], dict[str, Any]]:
    """Mean, minimum and maximum over seeds of each (target, domain)'s errors."""
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for target in result.config.targets:
        for domain in result.config.domains:
            runs = [r for r in result.results if r["target"] == target and r["domain"] == domain]
            errors = np.array([r["rel_error"] for r in runs])
            bands = {
                label: float(np.mean([r["band_errors"][label] for r in runs]))
                for label in band_labels(result.config)
            }
            two_x = [r["rel_error_2x"] for r in runs if r["rel_error_2x"] is not None]
            summary[(target, domain)] = {
                "params": runs[0]["params"],
                "mean": float(errors.mean()),
                "min": float(errors.min()),
                "max": float(errors.max()),
                "bands": bands,
                "rel_error_2x": float(np.mean(two_x)) if two_x else None,
            }
    return summary


def format_tables(result: SpectralBiasResult) -> str:
    """Markdown tables: relative error per target and generator, then per band."""
    config = result.config
    summary = summarize(result)
    lines = [
        f"Relative error of the learned kernel (mean over {config.seeds} seeds, "
        "[min, max]; lower is better):",
        "",
        "| target | " + " | ".join(config.domains) + " |",
        "|---|" + "---|" * len(config.domains),
    ]
    for target in config.targets:
        cells = [
            f"{s['mean']:.4f} [{s['min']:.4f}, {s['max']:.4f}]"
            for s in (summary[(target, d)] for d in config.domains)
        ]
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    params = {d: summary[(config.targets[0], d)]["params"] for d in config.domains}
    lines += ["", "Trainable parameters: " + ", ".join(f"{d} {p}" for d, p in params.items())]
    labels = band_labels(config)
    lines += [
        "",
        "Error per band of radial frequency (cycles per pixel), as a share of the target's "
        "norm (mean over seeds); `target` is the target's own share:",
        "",
        "| target | generator | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for target in config.targets:
        share = result.shares[target]
        lines.append(f"| {target} | *target* | " + " | ".join(f"{share[b]:.3f}" for b in labels)
                     + " |")  # fmt: skip
        for domain in config.domains:
            bands = summary[(target, domain)]["bands"]
            lines.append(f"| | {domain} | " + " | ".join(f"{bands[b]:.3f}" for b in labels) + " |")
    if "fourier" in config.domains:
        lines += [
            "",
            f"Fourier generator materialized at {2 * config.image_size} x "
            f"{2 * config.image_size} (trained at {config.image_size} x {config.image_size}), "
            "relative error against the same target there (mean over seeds):",
            "",
            "| target | trained size | twice the size |",
            "|---|---|---|",
        ]
        for target in config.targets:
            s = summary[(target, "fourier")]
            lines.append(f"| {target} | {s['mean']:.4f} | {s['rel_error_2x']:.4f} |")
    return "\n".join(lines)
