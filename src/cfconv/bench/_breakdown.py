"""The sparse training step in pieces: MLP evaluation, sampling and EMA scatter, FFTs,
channel mixing. Each piece is jitted alone at the step's shapes, forward and backward
(where the step differentiates it), for all layers at once."""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


BREAKDOWN_PIECES: dict[str, str] = {
    "mlp": "MLP evaluation (coordinates and both MLPs at the sampled positions), forward "
    "and backward to the MLP parameters",
    "ema": "sampling the positions and the EMA scatter into the stored kernel "
    "(`cfconv.sparse_update`; its gradient to the fresh values comes from the mixing)",
    "fft": "rfft2 of each layer's input and irfft2 of its output, forward and backward",
    "mix": "the complex channel mixing (sum over input channels per frequency), forward "
    "and backward to the activations and to the fresh values at the sampled positions",
}
"""What each `breakdown-*` row times; `breakdown-rest` is the step minus their sum
(bias, ReLU, pooling, head, loss, optimizer, and whatever fusing the pieces saves or
costs)."""


def _vjp(f: Callable, primal: Any, cotangent: Any):
    out, pullback = jax.vjp(f, primal)
    return out, pullback(cotangent)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], complex_: bool = False):
    # numpy, not jax.random: drawing needs no compilation.
    if complex_:
        pair = rng.standard_normal((2, *shape), dtype=np.float32)
        return jnp.asarray(pair[0] + 1j * pair[1])
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32))


def make_pieces(
    model: Any,
    images: jax.Array,
    image_size: tuple[int, int],
    num: int,
    rate: float,
    *,
    seed: int = 0,
) -> dict[str, Callable[[Any, Any], Any]]:
    """The pieces of a sparse step with `num` positions, as functions
    `piece(model, states) -> outputs` (jitted; block on the outputs to time them).

    The model and states are arguments, not captured, so that the pieces can share the
    buffers a training step keeps replacing. Every other input (positions, activations,
    cotangents) is drawn here once, distinct for every layer so that XLA cannot merge
    the layers' work, and passed as an argument (not folded into the program).
    """
    from .. import KernelState, Sparse, fourier_mix, sample_positions, sparse_update

    h, w = image_size
    wf = w // 2 + 1
    batch = images.shape[0]
    layers = model.layers
    n = len(layers)
    rng = np.random.default_rng(seed)
    grids = tuple(layer.generator.grid_shape(image_size) for layer in layers)
    positions = [jnp.asarray(rng.integers(0, math.prod(g), num, dtype=np.int32)) for g in grids]
    values = [_normal(rng, (num,), True) for _ in range(n)]
    # act[i]: layer i's output (as a cotangent) and layer i+1's input; spec[i]: layer i's
    # spectrum before irfft2, and the cotangent of layer i+1's rfft2 output.
    act = [_normal(rng, (batch, layer.out_channels, h, w)) for layer in layers]
    spec = [_normal(rng, (batch, layer.out_channels, h, wf), True) for layer in layers]
    spec_in = _normal(rng, (batch, layers[0].in_channels, h, wf), True)
    sample_keys = jax.random.split(jax.random.key(seed), n)

    # The MLP evaluation as the sparse-vmap step does it (its default rematerialization).
    evaluate = Sparse(num=num, rate=rate).evaluate

    @eqx.filter_jit
    def mlp(model, positions, values):
        out = []
        for layer, p, ct in zip(model.layers, positions, values):
            v, pullback = eqx.filter_vjp(lambda g, p=p: evaluate(g, p, image_size),
                                         layer.generator)  # fmt: skip
            out.append((v, pullback(ct)))
        return out

    @jax.jit
    def ema(states, sample_keys, values):
        out = []
        for k, grid, state, v in zip(sample_keys, grids, states, values):
            p = sample_positions(k, grid, num)
            out.append(sparse_update(state, p, v, rate=rate).kernel)
        return out

    @jax.jit
    def fft(images, act, spec):
        out: list[Any] = [jnp.fft.rfft2(images)]  # the images need no gradient
        for i in range(n):
            if i > 0:
                out.append(_vjp(jnp.fft.rfft2, act[i - 1], spec[i - 1]))
            out.append(_vjp(lambda y: jnp.fft.irfft2(y, s=(h, w)), spec[i], act[i]))
        return out

    mix_one = jax.vmap(fourier_mix, in_axes=(0, None))

    # The step's kernels, built once: the mixing's backward gives the values' gradient.
    step_kernels = [
        jax.jit(sparse_update)(KernelState(_normal(rng, grid, True)), p, v, rate=rate)
        for grid, p, v in zip(grids, positions, values)
    ]

    def with_values(kernel, v):
        return eqx.tree_at(lambda k: k.values, kernel, v)

    @jax.jit
    def mix(step_kernels, spec_in, spec):
        out = []
        for i, kernel in enumerate(step_kernels):
            if i == 0:
                f = lambda v, k=kernel: mix_one(spec_in, with_values(k, v))  # noqa: E731
                out.append(_vjp(f, kernel.values, spec[0]))
            else:
                g = lambda xv, k=kernel: mix_one(xv[0], with_values(k, xv[1]))  # noqa: E731
                out.append(_vjp(g, (spec[i - 1], kernel.values), spec[i]))
        return out

    return {
        "mlp": lambda model, states: mlp(model, positions, values),
        "ema": lambda model, states: ema(states, sample_keys, values),
        "fft": lambda model, states: fft(images, act, spec),
        "mix": lambda model, states: mix(step_kernels, spec_in, spec),
    }
