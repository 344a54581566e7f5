"""Evaluating a kernel generator at many positions with bounded memory: the helpers of
the sparse strategies' `evaluate`."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._custom_types import KernelValues, Positions
from ._generators import KernelGenerator


def chunked(array, chunk: int, fill):
    """`array` padded with `fill` to whole chunks, as `(chunks, chunk, ...)`."""
    num = array.shape[0]
    n_chunks = -(-num // chunk)
    pad = [(0, n_chunks * chunk - num)] + [(0, 0)] * (array.ndim - 1)
    padded = jnp.pad(array, pad, constant_values=fill)
    return padded.reshape((n_chunks, chunk) + array.shape[1:])


def evaluate_remat(
    generator: KernelGenerator, positions: Positions, spatial_shape, chunk_size: int,
    unroll: int,
) -> KernelValues:  # fmt: skip
    """`generator(positions, spatial_shape)`, keeping no activations for the backward
    pass: its vector-Jacobian product re-evaluates `chunk_size` positions at a time."""
    params, static = eqx.partition(generator, eqx.is_inexact_array)
    chunk = min(chunk_size, positions.shape[0])

    def evaluate(params, positions):
        return eqx.combine(params, static)(positions, spatial_shape)

    @jax.custom_vjp
    def values_of(params, positions):
        return evaluate(params, positions)

    def forward(params, positions):
        return evaluate(params, positions), (params, positions)

    def backward(residuals, cotangent):
        params, positions = residuals
        # Padding: position 0 with a zero cotangent adds nothing to the gradient.
        chunks = (chunked(positions, chunk, 0), chunked(cotangent, chunk, 0))

        def body(total, chunk_inputs):
            chunk_positions, chunk_cotangent = chunk_inputs
            _, vjp = jax.vjp(lambda p: evaluate(p, chunk_positions), params)
            (grad,) = vjp(chunk_cotangent)
            return jax.tree.map(jnp.add, total, grad), None

        zeros = jax.tree.map(jnp.zeros_like, params)
        total, _ = jax.lax.scan(body, zeros, chunks, unroll=unroll)
        return total, None

    values_of.defvjp(forward, backward)
    return values_of(params, positions)
