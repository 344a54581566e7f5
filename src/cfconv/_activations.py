"""A sine for the kernel MLPs that XLA's CPU backend evaluates quickly."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


# 2 pi split in two (Cody and Waite): `_TWO_PI_HI` has 8 significant bits, so `n * _TWO_PI_HI`
# is exact in float32 for |n| < 2**16, and the reduction loses almost nothing to rounding.
_TWO_PI_HI = np.float32(6.28125)
_TWO_PI_LO = np.float32(2 * math.pi - 6.28125)
_INV_TWO_PI = np.float32(1 / (2 * math.pi))
_PI = np.float32(math.pi)
_HALF_PI = np.float32(math.pi / 2)
# Taylor coefficients of sin(r) / r - 1 in r**2, highest first: on |r| <= pi / 2 the
# first omitted term, (pi / 2)**13 / 13!, is below 6e-8.
_COEFFICIENTS = tuple(np.float32((-1) ** k / math.factorial(2 * k + 1)) for k in range(5, 0, -1))


def _reduce(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """`x` minus the nearest multiple of 2 pi: a value in [-pi, pi] with the same sine."""
    n = jnp.round(x * _INV_TWO_PI)
    return (x - n * _TWO_PI_HI) - n * _TWO_PI_LO


def _sin_near_zero(r: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """sin(r) for r in [-pi / 2, pi / 2], by its Taylor polynomial of degree 11."""
    r2 = r * r
    p = jnp.zeros_like(r)
    for c in _COEFFICIENTS:
        p = (p + c) * r2
    return r + r * p


def _sin(x):
    r = _reduce(x)
    # sin(pi - r) = sin(r) and sin(-pi - r) = sin(r) fold [-pi, pi] onto [-pi/2, pi/2].
    r = jnp.where(r > _HALF_PI, _PI - r, jnp.where(r < -_HALF_PI, -_PI - r, r))
    return _sin_near_zero(r)


def _cos(x):
    r = _reduce(x)
    # cos(r) = sin(r + pi/2) for r <= 0 and sin(pi/2 - r) for r > 0: both in [-pi/2, pi/2].
    return _sin_near_zero(jnp.where(r > 0, _HALF_PI - r, r + _HALF_PI))


@jax.custom_jvp
def _fast_sin(x):
    return _sin(x)


@jax.custom_jvp
def _fast_cos(x):
    return _cos(x)


@_fast_sin.defjvp
def _fast_sin_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _fast_sin(x), _fast_cos(x) * t


@_fast_cos.defjvp
def _fast_cos_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _fast_cos(x), -_fast_sin(x) * t


def fast_sin(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    r"""The sine, computed with elementwise arithmetic that XLA vectorises: the default
    activation of the kernel MLPs.

    `jnp.sin` on XLA's CPU backend costs several nanoseconds per element; in a sine-MLP
    generator evaluated at $2^{18}$ positions it takes most of the training step. This
    function reduces its argument modulo $2\pi$ (with $2\pi$ split into two parts, so
    little is lost to rounding), folds it onto $[-\pi/2, \pi/2]$ and evaluates the
    degree-11 Taylor polynomial there (truncation error below $6 \cdot 10^{-8}$): a few
    multiply-adds that XLA fuses and vectorises, several times faster than `jnp.sin` on
    CPU. [Benchmarks](../benchmarks.md) has its effect on a training step.

    Its derivative is computed the same way (a fast cosine), to any order.

    **Accuracy.** For float32 `x` with $|x| \le 10^4$, the absolute error is below
    $10^{-6}$ (tested against NumPy's float64 sine); it grows slowly beyond, with the
    rounding of $x$ itself. Float16 and bfloat16 inputs are computed in float32 and
    rounded back. Float64 inputs use `jnp.sin`, as the polynomial is not accurate to
    float64 precision.

    **Arguments:**

    - `x`: a real floating-point array.

    **Returns:**

    `sin(x)`, with the dtype and shape of `x`.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"`x` must be a real floating-point array, got dtype {x.dtype}")
    if x.dtype == jnp.float64:
        return jnp.sin(x)
    if x.dtype != jnp.float32:
        return _fast_sin(x.astype(jnp.float32)).astype(x.dtype)
    return _fast_sin(x)
