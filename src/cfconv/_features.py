"""Coordinate encodings for kernel generators: random Fourier features, SIREN-style sines."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._errors import check_int


class AbstractFeatures(eqx.Module):
    """A coordinate encoding: maps `n` points of `in_size` coordinates to `out_size` features.

    Encodings are the peers' remedies for the spectral bias of coordinate MLPs: an MLP
    fed $\\gamma(x)$ instead of $x$ fits higher frequencies of $x$. Any encoding works in
    [`cfconv.SpatialKernelGenerator`][]; subclass this to try another.

    Fixed (non-trainable) arrays of an encoding pass through `jax.lax.stop_gradient` in
    `__call__`, so their gradient is zero and optimizers leave them as they are (Adam and
    SGD make no update from a zero gradient). [`cfconv.parameter_count`][] still counts
    them, since they are float arrays; `num_fixed` says how many they are.
    """

    in_size: eqx.AbstractVar[int]
    out_size: eqx.AbstractVar[int]

    @property
    def num_fixed(self) -> int:
        """How many of the encoding's float entries are fixed (not trained)."""
        return 0

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "n in_size"]) -> Float[Array, "n out_size"]:
        """Encode the points `x` (one per row)."""


class RandomFourierFeatures(AbstractFeatures):
    r"""Random Fourier features (Tancik et al., 2020): $\gamma(x) = [\cos 2\pi Bx, \sin 2\pi Bx]$.

    The frequencies $B \in \mathbb{R}^{m \times k}$ are drawn once from
    $\mathcal{N}(0, \sigma^2)$ and stay fixed. With coordinates in $[-1, 1]$, a frequency
    of $b$ cycles per unit completes $2b$ cycles across the axis.
    """

    frequencies: Float[Array, "m in_size"]
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, in_size: int, num: int, scale: float = 1.0, *, key: PRNGKeyArray):
        """**Arguments:**

        - `in_size`: the number of input coordinates `k`.
        - `num`: the number of random frequencies `m`; there are `2 * num` features.
        - `scale`: the standard deviation $\\sigma$ of the frequencies, in cycles per unit
          of the coordinates.
        - `key`: a PRNG key for the frequencies.
        """
        self.in_size = check_int("in_size", in_size)
        num = check_int("num", num)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ValueError(f"`scale` must be a positive number, got {scale!r}")
        self.frequencies = float(scale) * jax.random.normal(key, (num, self.in_size))
        self.out_size = 2 * num

    @property
    def num_fixed(self) -> int:
        return self.frequencies.size

    def __call__(self, x: Float[Array, "n in_size"]) -> Float[Array, "n out_size"]:
        frequencies = jax.lax.stop_gradient(self.frequencies)
        phase = 2 * math.pi * (x @ frequencies.T)
        return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)


class SineFeatures(AbstractFeatures):
    r"""A SIREN-style sine layer (Sitzmann et al., 2020): $\sin(\omega_0 (W x + b))$.

    This is the first layer of a SIREN: trainable $W$ and $b$, initialised uniformly in
    $[-1/k, 1/k]$ and $[-1/\sqrt{k}, 1/\sqrt{k}]$ for `k = in_size`, and a fixed frequency
    factor $\omega_0$ (a static number, never trained). A full SIREN also uses sine
    activations with its own initialisation in the later layers; a generator's MLP
    takes `activation=jnp.sin`, but with Equinox's initialisation.
    """

    weight: Float[Array, "out_size in_size"]
    bias: Float[Array, " out_size"]
    omega: float = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int = eqx.field(static=True)

    def __init__(self, in_size: int, num: int, omega: float = 30.0, *, key: PRNGKeyArray):
        """**Arguments:**

        - `in_size`: the number of input coordinates `k`.
        - `num`: the number of features (sine units).
        - `omega`: the frequency factor $\\omega_0$ (SIREN's default 30).
        - `key`: a PRNG key for the initial weights.
        """
        self.in_size = check_int("in_size", in_size)
        self.out_size = check_int("num", num)
        if isinstance(omega, bool) or not isinstance(omega, (int, float)) or not omega > 0:
            raise ValueError(f"`omega` must be a positive number, got {omega!r}")
        kw, kb = jax.random.split(key)
        k = self.in_size
        self.weight = jax.random.uniform(kw, (self.out_size, k), minval=-1 / k, maxval=1 / k)
        bound = 1 / math.sqrt(k)
        self.bias = jax.random.uniform(kb, (self.out_size,), minval=-bound, maxval=bound)
        self.omega = float(omega)

    def __call__(self, x: Float[Array, "n in_size"]) -> Float[Array, "n out_size"]:
        return jnp.sin(self.omega * (x @ self.weight.T + self.bias[None, :]))
