"""Pictures: kernels in both domains, sparse sampling patterns, spectral-bias figures.

Matplotlib is imported only here, inside the functions (`pip install cfconv[plot]`), and
only through its object-oriented API (`matplotlib.figure.Figure`), which renders with
Agg without touching pyplot's global state.
"""

import math
import os
import pathlib

import jax
import numpy as np
from jaxtyping import Array, Complex, Int

from .._positions import sample_positions
from ._trained import load_trained_model


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "cfconv's pictures need matplotlib: `pip install cfconv[plot]`"
        ) from error
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: str | os.PathLike, dpi: int) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _centred(a: np.ndarray) -> np.ndarray:
    """Move the origin (zero offset or frequency) of the last two axes to the middle."""
    return np.fft.fftshift(a, axes=(-2, -1))


def plot_kernels(
    kernel: Complex[Array, "cin cout h wf"] | np.ndarray,
    path: str | os.PathLike,
    *,
    width: int | None = None,
    pairs: int = 4,
    title: str | None = None,
    dpi: int = 80,
) -> pathlib.Path:
    """Draw a Fourier kernel: magnitude and phase of its spectrum, and its spatial kernel.

    One row per (input, output) channel pair, the first `pairs` of them in C order. The
    spectrum is the full `h x w` grid of the real kernel that
    [`cfconv.spectral_conv`][] applies (`irfft2` keeps the Hermitian part), with the
    zero frequency in the middle; the magnitude is on a log scale. The spatial kernel has
    its zero offset in the middle too.

    **Arguments:**

    - `kernel`: complex array of shape `(cin, cout, h, w // 2 + 1)`.
    - `path`: the PNG file to write.
    - `width`: the image width `w` (default `2 * (wf - 1)`, an even width).
    - `pairs`: how many channel pairs to draw.
    - `title`: a title over the figure.
    - `dpi`: the resolution of the PNG.

    **Returns:**

    The path of the PNG.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or not np.iscomplexobj(kernel):
        raise ValueError(
            f"`kernel` must be complex of shape (cin, cout, h, wf), got {kernel.dtype} "
            f"{kernel.shape}"
        )
    cin, cout, h, wf = kernel.shape
    w = 2 * (wf - 1) if width is None else int(width)
    if w // 2 + 1 != wf:
        raise ValueError(f"`width` {width} does not match the grid width {wf} of `kernel`")
    n = max(1, min(int(pairs), cin * cout))
    flat = kernel.reshape(cin * cout, h, wf)[:n]
    spatial = np.fft.irfft2(flat, s=(h, w))
    spectrum = np.fft.fft2(spatial)
    fig = _figure(7.5, 1.9 * n + 0.4)
    axes = fig.subplots(n, 3, squeeze=False)
    extent_f = (-0.5, 0.5, 0.5, -0.5)  # cycles per pixel
    extent_d = (-(w // 2) - 0.5, w - w // 2 - 0.5, h - h // 2 - 0.5, -(h // 2) - 0.5)
    for r in range(n):
        i, o = divmod(r, cout)
        magnitude = np.log10(np.abs(_centred(spectrum[r])) + 1e-6)
        panels = [
            (magnitude, "viridis", f"log10 |K|  ({i}->{o})", extent_f),
            (np.angle(_centred(spectrum[r])), "twilight", "phase of K", extent_f),
            (_centred(spatial[r]), "RdBu_r", "spatial kernel (offsets)", extent_d),
        ]
        for c, (image, cmap, label, extent) in enumerate(panels):
            ax = axes[r, c]
            if cmap == "RdBu_r":
                limit = float(np.abs(image).max()) or 1.0
                shown = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, extent=extent)
            else:
                shown = ax.imshow(image, cmap=cmap, extent=extent)
            ax.set_title(label, fontsize=8)
            ax.tick_params(labelsize=6)
            fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path, dpi)


def plot_sampling(
    grid_shape: tuple[int, int, int, int],
    positions: Int[Array, " num"] | np.ndarray,
    path: str | os.PathLike,
    *,
    pairs: int = 4,
    title: str | None = None,
    dpi: int = 80,
) -> pathlib.Path:
    """Draw the positions one sparse step samples (like the paper's Figure 2).

    One panel per (input, output) channel pair, the first `pairs`: the `h x wf` grid of
    stored Fourier entries (rows: `fftfreq` order, columns: `rfftfreq`), selected
    positions in red, the others in blue.

    **Arguments:**

    - `grid_shape`: the kernel grid `(cin, cout, h, w // 2 + 1)`.
    - `positions`: flat (C-order) indices into it, e.g. from [`cfconv.sample_positions`][].
    - `path`: the PNG file to write.
    - `pairs`: how many channel pairs to draw.
    - `title`: a title over the figure (default: how many positions were drawn).
    - `dpi`: the resolution of the PNG.

    **Returns:**

    The path of the PNG.
    """
    from matplotlib.colors import ListedColormap

    cin, cout, h, wf = (int(d) for d in grid_shape)
    positions = np.asarray(positions)
    selected = np.zeros(cin * cout * h * wf, bool)
    selected[positions] = True
    selected = selected.reshape(cin * cout, h, wf)
    n = max(1, min(int(pairs), cin * cout))
    fig = _figure(1.8 * n + 0.4, 2.6)
    axes = fig.subplots(1, n, squeeze=False)[0]
    colours = ListedColormap(["#3b6fb6", "#d62728"])
    for r, ax in enumerate(axes):
        i, o = divmod(r, cout)
        ax.imshow(selected[r], cmap=colours, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"pair {i}->{o}: {int(selected[r].sum())}/{h * wf}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    size = cin * cout * h * wf
    distinct = int(selected.sum())
    fig.suptitle(
        title
        or f"{positions.size} sampled positions ({distinct} distinct) of {size} "
        f"({100 * distinct / size:.1f}%): red selected, blue not",
        fontsize=9,
    )
    return _save(fig, path, dpi)


def plot_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    layers: list[int] | None = None,
    pairs: int = 4,
    source: str = "stored",
    seed: int = 0,
) -> list[pathlib.Path]:
    """Draw a trained model's kernels, layer by layer, and one step's sparse sampling.

    Writes `kernels-layer{n}.png` ([`plot_kernels`][cfconv.experiments.plot_kernels])
    for each chosen layer and, for models with stored kernels, `sampling-layer{n}.png`
    ([`plot_sampling`][cfconv.experiments.plot_sampling]) with the `positions` of the
    run's configuration, drawn with `seed`.

    **Arguments:**

    - `checkpoint`: the folder given to `cfconv train --checkpoint`, or its file.
    - `out_dir`: where to write the PNGs.
    - `layers`: the layers to draw (0-based; default all).
    - `pairs`: channel pairs per layer.
    - `source`: `"stored"` (default: the stored kernels that inference uses) or
      `"generator"` (the generators materialized densely, CF-Conv nets only).
    - `seed`: the seed of the sampled positions.

    **Returns:**

    The paths written.
    """
    from .._strategies import Sparse
    from ..train._config import layer_positions, share_of

    if source not in ("stored", "generator"):
        raise ValueError(f"`source` must be 'stored' or 'generator', got {source!r}")
    model, states, metadata = load_trained_model(checkpoint)
    config = metadata["config"]
    size = (config["image_size"], config["image_size"])
    if config["model"] == "spatial":
        raise ValueError("`checkpoint` holds the spatial CNN, which has no Fourier kernels")
    if source == "generator":
        if not hasattr(model, "layers"):
            raise ValueError("`source='generator'` needs a CF-Conv net (it has no generators)")
        kernels = tuple(layer.generator.materialize(size) for layer in model.layers)
    else:
        kernels, _ = model.kernels(states, size, "stored")
    chosen = range(len(kernels)) if layers is None else layers
    out = pathlib.Path(out_dir)
    paths = []
    for n in chosen:
        if not 0 <= n < len(kernels):
            raise ValueError(f"`layers` must be in [0, {len(kernels)}), got {n}")
        name = f"{config['model']} layer {n} ({source} kernel, epoch {metadata.get('epoch')})"
        paths.append(plot_kernels(kernels[n], out / f"kernels-layer{n}.png", width=size[1],
                                  pairs=pairs, title=name))  # fmt: skip
        if states:
            shape = kernels[n].shape
            num = layer_positions(config["positions"], n)
            if isinstance(num, str):  # a share such as "20%"
                num = Sparse(None, share=share_of(num)).count(math.prod(shape))
            key = jax.random.fold_in(jax.random.key(seed), n)
            positions = (sample_positions(key, shape, math.prod(shape), replace=False)
                         if num is None else sample_positions(key, shape, num))  # fmt: skip
            paths.append(plot_sampling(shape, positions, out / f"sampling-layer{n}.png",
                                       pairs=pairs))  # fmt: skip
    return paths


# --- the spectral-bias experiment --------------------------------------------------------


def plot_spectral_bias(result, out_dir: str | os.PathLike, *, dpi: int = 72) -> list[pathlib.Path]:
    """Draw a [`run_spectral_bias`][cfconv.experiments.run_spectral_bias] result.

    Writes `spectral-bias-bands.png` (the error per band of radial frequency for every
    target and generator, mean over seeds with the range as error bars, and the target's
    own share in grey) and `spectral-bias-kernels.png` (for seed 0: the targets and the
    learned kernels in the spatial domain, the central 24 x 24 offsets at most, and the
    magnitudes of their spectra on a log scale spanning three decades).

    **Arguments:**

    - `result`: a [`SpectralBiasResult`][cfconv.experiments.SpectralBiasResult].
    - `out_dir`: where to write the PNGs.
    - `dpi`: the resolution of the PNGs.

    **Returns:**

    The paths written.
    """
    from ._spectral_setup import band_edges, band_labels

    config = result.config
    out = pathlib.Path(out_dir)
    labels = band_labels(config)
    edges = band_edges(config)
    centres = (edges[:-1] + edges[1:]) / 2
    colours = {"fourier": "#d62728", "spatial": "#1f77b4", "spatial-fourier-features": "#2ca02c"}
    targets, domains = config.targets, config.domains

    fig = _figure(2.6 * len(targets) + 0.4, 2.8)
    axes = fig.subplots(1, len(targets), squeeze=False, sharey=True)[0]
    for ax, target in zip(axes, targets):
        share = [result.shares[target][b] for b in labels]
        ax.plot(centres, share, color="0.6", linestyle="--", label="target's share")
        for domain in domains:
            runs = [r for r in result.results if r["target"] == target and r["domain"] == domain]
            values = np.array([[r["band_errors"][b] for b in labels] for r in runs])
            mean = values.mean(axis=0)
            spread = np.stack([mean - values.min(axis=0), values.max(axis=0) - mean])
            ax.errorbar(centres, mean, yerr=spread, color=colours.get(domain), marker="o",
                        markersize=3, capsize=2, label=domain)  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(target, fontsize=9)
        ax.set_xlabel("radial frequency (cycles/pixel)", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("error in band / target norm", fontsize=7)
    axes[-1].legend(fontsize=6)
    paths = [_save(fig, out / "spectral-bias-bands.png", dpi)]

    columns = ["target", *domains]
    size = config.image_size
    crop = min(size, 24)  # the centre of the spatial kernels, where the targets live
    window = slice(size // 2 - crop // 2, size // 2 - crop // 2 + crop)
    fig = _figure(1.25 * 2 * len(columns) + 0.4, 1.35 * len(targets) + 0.5)
    axes = fig.subplots(len(targets), 2 * len(columns), squeeze=False)
    for r, target in enumerate(targets):
        images = [result.targets[target]] + [result.kernels[(target, d)] for d in domains]
        limit = float(np.abs(images[0]).max()) or 1.0
        top = float(np.log10(np.abs(np.fft.fft2(images[0])).max() + 1e-6))
        for c, (name, image) in enumerate(zip(columns, images)):
            ax = axes[r, c]
            ax.imshow(_centred(image)[window, window], cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax = axes[r, len(columns) + c]
            magnitude = np.log10(np.abs(_centred(np.fft.fft2(image))) + 1e-6)
            ax.imshow(magnitude, cmap="viridis", vmin=top - 3, vmax=top)
        axes[r, 0].set_ylabel(target, fontsize=8)
    for c, name in enumerate(columns):
        axes[0, c].set_title(f"{name}\nspatial, centre {crop}x{crop}", fontsize=6)
        axes[0, len(columns) + c].set_title(f"{name}\nlog10 |spectrum|", fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    # Noisy log spectra compress poorly: this figure gets 8/9 of the resolution.
    paths.append(_save(fig, out / "spectral-bias-kernels.png", dpi * 8 // 9))
    return paths
