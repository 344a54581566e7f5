r"""Initial scales of a CF-Conv network: the stored kernel and the kernel generators.

The variance of a CF-Conv layer
-------------------------------

For one output channel, $y_o = \operatorname{irfft2}(\sum_i \operatorname{rfft2}(x_i)
K_{io})$ is a circular convolution with the real spatial kernels $k_{io} =
\operatorname{irfft2}(K_{io})$. If the entries of $K$ are independent, zero-mean and of
equal power $E|K|^2$, the spatial kernels are white with $E[k_{io}[m]^2] = E|K|^2 / (HW)$,
so for any input (averaging over the kernel draw)

$$E[y_o^2] = C_{in} \, E|K|^2 \, E[x^2].$$

Two corrections come from `irfft2` keeping only the Hermitian part of the DC column (and
of the Nyquist column for even $W$), which halves those columns' power:

- for white input, the gain is $C_{in} E|K|^2 (1 - 1/W)$, a 3% loss at $W = 32$;
- after a ReLU, the input's mean carries $1/\pi$ of its energy, all of it at the zero
  frequency, where the kernel's power is halved: the gain is
  $C_{in} E|K|^2 (1 - \tfrac{1}{2\pi})$, a 16% loss per layer that compounds with depth.

Real and imaginary parts uniform in $[-s, s]$ give $E|K|^2 = 2 s^2 / 3$. A ReLU halves
the second moment of a symmetric pre-activation, so it is preserved through
CF-Conv + ReLU when the pre-activation gain is 2 (He et al., 2015):

$$s = \sqrt{\frac{3}{C_{in} (1 - \frac{1}{2\pi})}}.$$

The paper's $s = 1$ gives a gain of $\tfrac{2}{3} C_{in} (1 - \tfrac{1}{2\pi}) \approx 18$
at $C_{in} = 32$: activations grow about $3\times$ per layer (after the ReLU), more than
$100\times$ over six layers.

The generator
-------------

The formula above assumes that the kernel's entries are independent. A kernel generated
by one smooth MLP is not: most of its power is shared by all channel pairs (under
Equinox's default initialisation, with biases as large as the weights, a deep ReLU MLP's
output is its biases, and the kernel is the same for every channel pair; the MLPs'
He initialisation with zero biases reduces but does not remove the shared part). Its
channels then add coherently, and a generated kernel with the stored kernel's $E|K|^2$
makes activations grow several times per layer. The generators are therefore scaled by
the *gain* they give on white-noise inputs propagated through the network, not by their
power; see `calibrate_generators`.
"""

import math
from collections.abc import Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._generators import BLOCK_LAYOUT
from .._layer import CFConv2d
from .._mlp import MLP
from .._spectral import spectral_conv


GeneratorInit = Literal["gain", "state", "none"]
GENERATOR_INITS: tuple[str, ...] = ("gain", "state", "none")

_RELU_DC_FACTOR = 1.0 - 1.0 / (2.0 * math.pi)
"""The fraction of a post-ReLU input's second moment that a U[-s, s] kernel passes at
full power (the rest, the mean's energy, sits at DC, where the power is halved)."""

CALIBRATION_SHAPE: tuple[int, int] = (16, 16)
"""The image size at which generators are calibrated. Frequency coordinates mean the same
at every resolution, so the calibration carries over to other sizes."""

CALIBRATION_BATCH: int = 4
"""The number of white-noise images used for the calibration."""


def default_state_scale(in_channels: int) -> float:
    r"""The default half-width $s$ of the uniform initial stored kernel of a layer.

    $s = \sqrt{3 / (C_{in} (1 - \frac{1}{2\pi}))}$: the kernel's expected gain
    ([`expected_gain`][cfconv.models.expected_gain]) is then 2, so the second moment of
    the activations is preserved through each CF-Conv + ReLU (He initialisation, with
    the correction for the mean of post-ReLU inputs that `irfft2` passes at half power).

    **Arguments:**

    - `in_channels`: the layer's number of input channels $C_{in}$.

    **Returns:**

    A Python `float`, e.g. `1.09` for 3 input channels and `0.334` for 32.
    """
    return math.sqrt(3.0 / (in_channels * _RELU_DC_FACTOR))


def expected_gain(in_channels: int, scale: float | Float[Array, ""]) -> float | Float[Array, ""]:
    r"""The expected second-moment gain $E[y^2] / E[x^2]$ of a CF-Conv layer.

    For a stored kernel with real and imaginary parts uniform in $[-s, s]$, so that
    $E|K|^2 = 2 s^2 / 3$, and post-ReLU inputs:
    $C_{in} \cdot \tfrac{2}{3} s^2 \cdot (1 - \tfrac{1}{2\pi})$.

    **Arguments:**

    - `in_channels`: the layer's number of input channels $C_{in}$.
    - `scale`: the half-width $s$ of the uniform distribution.

    **Returns:**

    A Python `float`; `2.0` for `scale=default_state_scale(in_channels)`.
    """
    return in_channels * 2.0 * scale**2 / 3.0 * _RELU_DC_FACTOR


def _scale_last_layer(mlp: MLP, factor: Float[Array, " mlps"]) -> MLP:
    """Scale the output of every MLP of a stack (leading axis `mlps`) by `factor`."""
    last = mlp.layers[-1]
    assert last.bias is not None  # `cfconv.MLP` layers always have one
    return eqx.tree_at(
        lambda m: (m.layers[-1].weight, m.layers[-1].bias),
        mlp,
        (last.weight * factor[:, None, None], last.bias * factor[:, None]),
    )


def _per_mlp_rms(values: Float[Array, "cin cout h wf"], parameterization: str) -> Array:
    # The grid axes one MLP covers: a mean over them gives one number per MLP, in the
    # order of the generator's stack.
    covered = BLOCK_LAYOUT[parameterization][1] + (2, 3)
    mean_square = jnp.mean(jnp.square(values), axis=covered)
    return jnp.sqrt(mean_square.reshape(-1))


def _safe_ratio(target: Array | float, value: Array) -> Array:
    # An MLP whose output is exactly zero cannot be scaled to anything: leave it.
    return jnp.where(value > 0, target / jnp.where(value > 0, value, 1.0), 1.0)


def _per_mlp_factor(
    factor: Float[Array, " mlps"], parameterization: str, cin: int, cout: int
) -> Float[Array, "_cin _cout 1 1"]:
    """Spread one factor per MLP over the kernel grid it generates (to broadcast)."""
    shape = {"hw": (cin, cout), "hw_cin": (1, cout), "hw_cout": (cin, 1), "hw_cin_cout": (1, 1)}
    return factor.reshape(shape[parameterization] + (1, 1))


@eqx.filter_jit
def _calibrate_layer(
    layer: CFConv2d,
    x: Float[Array, "batch cin h w"],
    scale: Float[Array, ""],
    mode: str,
) -> tuple[CFConv2d, Float[Array, "batch cout h w"]]:
    shape = (x.shape[-2], x.shape[-1])
    generator = layer.generator
    p, cin, cout = generator.parameterization, generator.in_channels, generator.out_channels
    kernel = generator.materialize(shape)
    # 1. Every MLP (real and imaginary) gets the stored kernel's power per part, s^2 / 3.
    target = scale / math.sqrt(3.0)  # traced: layers that differ only in scale share a compile
    factor_real = _safe_ratio(target, _per_mlp_rms(kernel.real, p))
    factor_imag = _safe_ratio(target, _per_mlp_rms(kernel.imag, p))
    if mode == "gain":
        # 2. One factor per layer, so that on this layer's actual input (white noise
        # propagated through the calibrated layers before it) the post-ReLU gain is the
        # stored kernel's: half its expected gain, as its pre-activations are symmetric.
        # A generated kernel's need not be (its DC term can push most units below zero),
        # so the gain is measured after the ReLU; relu(c y) = c relu(y) for c > 0.
        kernel = jax.lax.complex(
            kernel.real * _per_mlp_factor(factor_real, p, cin, cout),
            kernel.imag * _per_mlp_factor(factor_imag, p, cin, cout),
        )
        y = jax.nn.relu(jax.vmap(spectral_conv, in_axes=(0, None))(x, kernel))
        gain = jnp.mean(jnp.square(y)) / jnp.mean(jnp.square(x))
        target_gain = expected_gain(cin, scale) / 2
        factor = _safe_ratio(jnp.sqrt(target_gain), jnp.sqrt(gain))
        factor_real, factor_imag = factor_real * factor, factor_imag * factor
    generator = eqx.tree_at(
        lambda g: (g.real, g.imag),
        generator,
        (_scale_last_layer(generator.real, factor_real),
         _scale_last_layer(generator.imag, factor_imag)),
    )  # fmt: skip
    layer = eqx.tree_at(lambda m: m.generator, layer, generator)
    y = jax.vmap(layer.apply, in_axes=(0, None))(x, generator.materialize(shape))
    return layer, jax.nn.relu(y)


def calibrate_generators(
    layers: Sequence[CFConv2d],
    scales: Sequence[float],
    mode: GeneratorInit = "gain",
    *,
    key: PRNGKeyArray,
) -> tuple[CFConv2d, ...]:
    r"""Scale the last layer of every generator MLP so that generated kernels start on the
    scale of the stored ones.

    Scaling the weight and bias of an MLP's output layer scales its output exactly, so
    this changes the generated kernel's scale and nothing else.

    - `mode="state"`: each MLP (real and imaginary, each of a stack) is scaled so that
      its output's mean square over its block of the grid is $s^2 / 3$, that of a
      $U[-s, s]$ part: the generated kernel has the stored kernel's $E|K|^2$.
    - `mode="gain"` (the models' default): the same, followed by one factor per layer
      (applied to both parts), chosen so that on white noise propagated through the
      network's generated kernels, each layer's second-moment gain is the stored kernel's
      [`expected_gain`][cfconv.models.expected_gain]. This is LSUV initialisation
      (Mishkin & Matas, 2016) on noise, at `CALIBRATION_SHAPE`. For generators whose
      channels add coherently (`hw_cin`, `hw_cin_cout`) it gives a smaller $E|K|^2$ than
      the stored kernel's; for `hw`, whose MLPs are independent, about the same.
    - `mode="none"`: leave the generators as built.

    **Arguments:**

    - `layers`: the CF-Conv layers, first to last.
    - `scales`: the half-width $s$ of each layer's stored kernel.
    - `mode`: `"gain"`, `"state"` or `"none"`.
    - `key`: a PRNG key for the white-noise input.

    **Returns:**

    The calibrated layers.
    """
    if mode not in GENERATOR_INITS:
        raise ValueError(f"`generator_init` must be one of {GENERATOR_INITS}, got {mode!r}")
    if mode == "none" or not layers:
        return tuple(layers)
    shape = (CALIBRATION_BATCH, layers[0].in_channels) + CALIBRATION_SHAPE
    x = jax.random.normal(key, shape)
    calibrated = []
    for layer, scale in zip(layers, scales, strict=True):
        layer, x = _calibrate_layer(layer, x, jnp.asarray(scale, jnp.float32), mode)
        calibrated.append(layer)
    return tuple(calibrated)
