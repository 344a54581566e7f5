"""The spectral-bias experiment's definition: its settings, the target filters, and the
error measures per band of radial frequency (see `_spectral_bias.py` for the fits)."""

import dataclasses
from typing import Any

import numpy as np

from .._generators import DEFAULT_HIDDEN


TARGETS: tuple[str, ...] = ("low-pass", "band-pass", "high-pass", "gabor", "random")
"""The target filters of [`run_spectral_bias`][cfconv.experiments.run_spectral_bias]."""

DOMAINS: tuple[str, ...] = ("fourier", "spatial", "spatial-fourier-features")
"""The kernel generators compared, by the domain their MLPs describe."""

_PARAMETERIZATION = "hw_cin_cout"


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
