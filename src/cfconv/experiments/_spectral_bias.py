"""`cfconv spectral-bias`: do Fourier-domain generators escape the spectral bias of MLPs?

Each run fits one target filter with one kernel generator by gradient descent on white
noise images, and measures the error of the learned kernel overall and per band of radial
frequency. The generators: (a) `"fourier"`, a [`cfconv.KernelGenerator`][]; (b)
`"spatial"`, a [`cfconv.SpatialKernelGenerator`][] with the same MLPs; (c)
`"spatial-fourier-features"`, the spatial one on random Fourier features, its MLP widths
adjusted to the same number of trainable parameters.
"""

import dataclasses
import sys
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
from .._generators import DEFAULT_HIDDEN, KernelGenerator
from .._mlp import parameter_count
from .._spatial_generator import SpatialKernelGenerator
from .._spectral import spectral_conv


TARGETS: tuple[str, ...] = ("low-pass", "band-pass", "high-pass", "gabor", "random")
"""The target filters of [`run_spectral_bias`][cfconv.experiments.run_spectral_bias]."""

DOMAINS: tuple[str, ...] = ("fourier", "spatial", "spatial-fourier-features")
"""The kernel generators compared, by the domain their MLPs describe."""

_PARAMETERIZATION = "hw_cin_cout"


@runtime_checkable
class TextLog(Protocol):
    """Anything with `write(str)` and `flush()`: a text file, `sys.stderr`, a `StringIO`."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class SpectralBiasConfig:
    """The settings of a spectral-bias run.

    **Fields:**

    - `image_size`: images and kernels are `image_size x image_size`.
    - `steps`: Adam steps per fit (the same for every generator).
    - `batch_size`: white-noise images per step.
    - `lr`: Adam's learning rate (the same for every generator).
    - `seeds`: fits per target and generator, with seeds `0 .. seeds - 1` (the seed
      draws the generator's initial weights, the images, the random features and the
      `"random"` target).
    - `hidden`: the MLP widths of the Fourier and spatial generators (default the
      paper's `(32, 32, 32, 16, 16, 16, 8, 8, 8)`); the generator with Fourier features
      gets the widths that give it the same number of trainable parameters.
    - `num_features`: random frequencies of the Fourier features (twice as many
      features).
    - `feature_scale`: standard deviation of those frequencies, as a fraction of the
      Nyquist frequency of the kernel grid.
    - `bands`: bands of radial frequency for the per-band errors.
    - `targets`, `domains`: subsets of `TARGETS` and `DOMAINS` to run.
    """

    image_size: int = 64
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    seeds: int = 3
    hidden: tuple[int, ...] = DEFAULT_HIDDEN[_PARAMETERIZATION]
    num_features: int = 16
    feature_scale: float = 0.25
    bands: int = 8
    targets: tuple[str, ...] = TARGETS
    domains: tuple[str, ...] = DOMAINS

    def __post_init__(self):
        for name in ("image_size", "steps", "batch_size", "seeds", "num_features", "bands"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        if self.image_size < 4:
            raise ValueError(f"`image_size` must be at least 4, got {self.image_size}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"`lr` must be positive, got {self.lr!r}")
        if not (isinstance(self.feature_scale, (int, float)) and self.feature_scale > 0):
            raise ValueError(f"`feature_scale` must be positive, got {self.feature_scale!r}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"`hidden` must be non-empty positive widths, got {self.hidden!r}")
        for name, allowed in (("targets", TARGETS), ("domains", DOMAINS)):
            chosen = getattr(self, name)
            if not chosen or any(c not in allowed for c in chosen):
                raise ValueError(
                    f"`{name}` must be a non-empty subset of {allowed}, got {chosen!r}"
                )

    @classmethod
    def quick(cls, **overrides: Any) -> "SpectralBiasConfig":
        """A small version (`cfconv spectral-bias --quick`): 16 x 16, 300 steps, 2 seeds."""
        settings: dict[str, Any] = dict(image_size=16, steps=300, seeds=2, bands=4)
        settings.update(overrides)
        return cls(**settings)


def _frequencies(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cycles per pixel) of the full `size x size` FFT grid."""
    f = np.fft.fftfreq(size)
    return np.meshgrid(f, f, indexing="ij")


def _offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed circular offsets (pixels) of a `size x size` kernel with origin at [0, 0]."""
    d = np.fft.fftfreq(size) * size
    return np.meshgrid(d, d, indexing="ij")


def target_kernel(name: str, size: int, *, seed: int = 0) -> np.ndarray:
    r"""A target filter as a real `size x size` spatial kernel (origin at `[0, 0]`).

    Frequencies $f$ are in cycles per pixel and offsets $d$ in pixels, so a target is
    the same pixel-scale filter at every size; $\rho = |f|$ is the radial frequency.

    - `"low-pass"`: $\exp(-\rho^2 / 2 \cdot 0.1^2)$.
    - `"band-pass"`: $\exp(-(\rho - 0.25)^2 / 2 \cdot 0.05^2)$, a ring.
    - `"high-pass"`: $1 - \exp(-\rho^2 / 2 \cdot 0.1^2)$.
    - `"gabor"`: $\exp(-|d|^2 / 2 \cdot 2^2) \cos(2\pi f_0 \cdot d)$ with $|f_0| = 0.25$
      at 30 degrees, oriented.
    - `"random"`: a $5 \times 5$ kernel of standard normal entries centred on the origin,
      drawn from `seed`.

    **Arguments:**

    - `name`: one of [`TARGETS`][cfconv.experiments.TARGETS].
    - `size`: the image size (at least 5).
    - `seed`: the seed of the `"random"` target (ignored by the others).

    **Returns:**

    A float64 numpy array of shape `(size, size)`, not normalised.
    """
    if name not in TARGETS:
        raise ValueError(f"`name` must be one of {TARGETS}, got {name!r}")
    if size < 5:
        raise ValueError(f"`size` must be at least 5, got {size}")
    fy, fx = _frequencies(size)
    rho = np.hypot(fy, fx)
    if name in ("low-pass", "band-pass", "high-pass"):
        response = {
            "low-pass": lambda: np.exp(-(rho**2) / (2 * 0.1**2)),
            "band-pass": lambda: np.exp(-((rho - 0.25) ** 2) / (2 * 0.05**2)),
            "high-pass": lambda: 1 - np.exp(-(rho**2) / (2 * 0.1**2)),
        }[name]()
        return np.real(np.fft.ifft2(response))  # real and even responses: real kernels
    dy, dx = _offsets(size)
    if name == "gabor":
        angle = np.deg2rad(30.0)
        carrier = 2 * np.pi * 0.25 * (np.cos(angle) * dx + np.sin(angle) * dy)
        return np.exp(-(dy**2 + dx**2) / (2 * 2.0**2)) * np.cos(carrier)
    values = np.random.default_rng(seed).standard_normal((5, 5))
    kernel = np.zeros((size, size))
    kernel[:5, :5] = values
    return np.roll(kernel, (-2, -2), axis=(0, 1))


def band_edges(config: SpectralBiasConfig) -> np.ndarray:
    """Edges of the radial-frequency bands: `bands` equal bands over `[0, 0.5]` cycles
    per pixel; the last band also holds the corners beyond 0.5 (up to 0.707)."""
    return np.linspace(0.0, 0.5, config.bands + 1)


def band_labels(config: SpectralBiasConfig) -> list[str]:
    """The keys of `band_errors`: `"0.000-0.062"` etc. (cycles per pixel)."""
    edges = band_edges(config)
    labels = [f"{a:.3f}-{b:.3f}" for a, b in zip(edges[:-1], edges[1:])]
    labels[-1] = f"{edges[-2]:.3f}-0.707"
    return labels


def kernel_errors(
    learned: np.ndarray, target: np.ndarray, config: SpectralBiasConfig
) -> tuple[float, dict[str, float]]:
    r"""The relative error of a learned spatial kernel, overall and per band.

    With $\Delta = \operatorname{fft2}(k_{learned} - k_{target})$ and
    $T = \operatorname{fft2}(k_{target})$ on the full grid: `rel_error` is
    $\lVert \Delta \rVert / \lVert T \rVert$ (the same in the spatial domain, by
    Parseval), and the error of band $b$ is $\lVert \Delta_b \rVert / \lVert T \rVert$,
    its share of the whole, so that the squares of the band errors add up to the square
    of `rel_error`.

    **Arguments:**

    - `learned`, `target`: real kernels of shape `(size, size)`.
    - `config`: the run's settings (for the bands).

    **Returns:**

    `(rel_error, band_errors)`.
    """
    delta = np.fft.fft2(np.asarray(learned, np.float64) - target)
    norm = np.linalg.norm(np.fft.fft2(target))
    band = _band_index(target.shape[0], config)
    errors = {
        label: float(np.linalg.norm(delta[band == b]) / norm)
        for b, label in enumerate(band_labels(config))
    }
    return float(np.linalg.norm(delta) / norm), errors


def _band_index(size: int, config: SpectralBiasConfig) -> np.ndarray:
    fy, fx = _frequencies(size)
    edges = band_edges(config)
    return np.clip(np.searchsorted(edges, np.hypot(fy, fx), side="right") - 1, 0, config.bands - 1)


def band_shares(target: np.ndarray, config: SpectralBiasConfig) -> dict[str, float]:
    """The target's own norm per band over its total norm (the error of a zero kernel)."""
    return kernel_errors(np.zeros_like(target), target, config)[1]


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
        return KernelGenerator(1, 1, _PARAMETERIZATION, config.hidden, key=key)
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


def _run_command(args) -> int:
    """Fit low-, band- and high-pass, Gabor and random filters with Fourier- and
    spatial-domain kernel generators; report the error per band of frequency."""
    import json
    import pathlib
    import platform

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
        from ._plots import plot_spectral_bias

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


def add_arguments(p, positive_int, widths) -> None:
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
