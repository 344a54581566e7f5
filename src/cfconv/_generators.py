"""Kernel generators: the four parameterizations of the paper's Table 1."""

import math
from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._activations import fast_sin
from ._custom_types import FourierKernel, KernelValues, Positions
from ._errors import check_array, check_int, check_positive, check_shape
from ._mlp import MLP, stack_apply, stack_select
from ._positions import (
    COORDINATE_KINDS,
    CoordinateKind,
    axis_coordinate,
    frequency_coordinates,
    unravel_positions,
)


Parameterization = Literal["hw", "hw_cin", "hw_cout", "hw_cin_cout"]
PARAMETERIZATIONS: tuple[str, ...] = ("hw", "hw_cin", "hw_cout", "hw_cin_cout")

DEFAULT_HIDDEN: dict[str, tuple[int, ...]] = {
    "hw": (2,),
    "hw_cin": (16, 16),
    "hw_cout": (16, 16),
    "hw_cin_cout": (32, 32, 32, 16, 16, 16, 8, 8, 8),
}
"""Hidden widths used when none are given: the paper's for `hw` and `hw_cin_cout`."""

# Axes of (cin, cout) that index the MLPs of each parameterization, and the axes that
# each MLP covers (whose channel coordinates it takes as inputs); paper Table 1.
BLOCK_LAYOUT: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "hw": ((0, 1), ()),
    "hw_cin": ((1,), (0,)),
    "hw_cout": ((0,), (1,)),
    "hw_cin_cout": ((), (0, 1)),
}

# Which of (c_in, c_out) each parameterization feeds to its MLPs as coordinates.
_CHANNEL_INPUTS = {
    "hw": (False, False),
    "hw_cin": (True, False),
    "hw_cout": (False, True),
    "hw_cin_cout": (True, True),
}


DEFAULT_CHANNEL_SCALE: float = 2.0
"""Default `channel_scale` of [`cfconv.KernelGenerator`][]."""

DEFAULT_FREQUENCY_SCALE: float = 2.0
"""Default `frequency_scale` of [`cfconv.KernelGenerator`][]."""


def _scale_inputs(mlp: MLP, scales: Sequence[float]) -> MLP:
    """Multiply the first layer's weights on input `j` by `scales[j]` (any stack axes)."""
    if all(scale == 1 for scale in scales):
        return mlp
    weight = mlp.layers[0].weight
    weight = weight * jnp.asarray(scales, weight.dtype).reshape((1,) * (weight.ndim - 1) + (-1,))
    return eqx.tree_at(lambda m: m.layers[0].weight, mlp, weight)


class KernelGenerator(eqx.Module):
    r"""A continuous Fourier kernel: MLPs that map coordinates to kernel values.

    The kernel value at input channel $i$, output channel $o$ and frequency $(f_y, f_x)$
    is $\Phi^R(\cdot) + j\,\Phi^I(\cdot)$, with separate real and imaginary MLPs (a split
    kernel). The parameterization (paper Table 1) decides which coordinates the MLPs see
    and how many there are:

    | `parameterization` | MLP inputs | MLPs (real + imaginary) |
    |---|---|---|
    | `"hw"` | $(f_y, f_x)$ | $2 \cdot C_{in} C_{out}$ |
    | `"hw_cin"` | $(c_{in}, f_y, f_x)$ | $2 \cdot C_{out}$ |
    | `"hw_cout"` | $(c_{out}, f_y, f_x)$ | $2 \cdot C_{in}$ |
    | `"hw_cin_cout"` | $(c_{in}, c_{out}, f_y, f_x)$ | $2$ (the paper's choice) |

    Each group of MLPs is one [`cfconv.MLP`][] stack with a leading axis. The generator
    holds no resolution: it can be evaluated for any image size.

    **Initialisation.** The paper's MLPs use ReLU. A deep ReLU MLP maps nearby inputs to
    nearly equal outputs (with He initialisation, the correlation between two inputs'
    hidden representations tends to one with depth), so a `"hw_cin_cout"` generator
    starts with most of its kernel shared by every channel pair: at 32 channels, more than
    half of the spatial kernels' energy is their mean over channel pairs (tested in
    `tests/test_generators.py`), and every output
    channel computes nearly the same feature. Trained, such networks stay at chance on
    the digits, densely as well as with sparse updates. By default the MLPs are
    instead SIREN-like (Sitzmann et al., 2020): sine activations, He-scaled weights
    (variance $2 / \text{fan-in}$, as SIREN's hidden layers), and a first layer whose
    weights on the channel coordinates are multiplied by `channel_scale` $(n - 1) / 2$ and
    on the frequencies by `frequency_scale`. Neighbouring channels then start with nearly
    independent kernels (the shared energy is below 5%, tested likewise), and each spatial
    kernel starts with most of its energy within a 3x3 neighbourhood (tested), like a
    random 3x3 convolution's.
    `activation=jax.nn.relu, channel_scale=None, frequency_scale=1.0` is the paper's MLP.
    """

    real: MLP
    imag: MLP
    parameterization: str = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    coordinates: str = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        parameterization: Parameterization = "hw_cin_cout",
        hidden: Sequence[int] | None = None,
        activation: Callable[[Array], Array] = fast_sin,
        coordinates: CoordinateKind = "frequency",
        channel_scale: float | None = DEFAULT_CHANNEL_SCALE,
        frequency_scale: float = DEFAULT_FREQUENCY_SCALE,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: the numbers of input and output channels.
        - `parameterization`: one of `"hw"`, `"hw_cin"`, `"hw_cout"`, `"hw_cin_cout"`.
        - `hidden`: hidden-layer widths of every MLP; the output layer (width 1) is added.
          Default: `DEFAULT_HIDDEN[parameterization]` (the paper's `(2,)` for `"hw"` and
          `(32, 32, 32, 16, 16, 16, 8, 8, 8)` for `"hw_cin_cout"`).
        - `activation`: the hidden activation: [`cfconv.fast_sin`][] (default; the sine,
          to float32 precision, several times faster than `jnp.sin` on CPU) or, as in
          the paper, `jax.nn.relu`; see "Initialisation" above.
        - `coordinates`: `"frequency"` (physical frequencies, default) or `"index"` (the
          paper's grid-index coordinates); see [`cfconv.frequency_coordinates`][].
        - `channel_scale`: the first layer's initial weights on a channel coordinate of an
          axis of $n$ channels are multiplied by `channel_scale * (n - 1) / 2`, so that
          neighbouring channels are `channel_scale` apart in the units of the other
          inputs, whatever $n$ (default 2); `None` leaves them as initialised (with
          `jax.nn.relu` and `frequency_scale=1.0`, the paper's MLP).
        - `frequency_scale`: the first layer's initial weights on the two frequency
          coordinates are multiplied by this (default 2; `1.0` for the paper's MLP).
        - `key`: a PRNG key.
        """
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"`parameterization` must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        if coordinates not in COORDINATE_KINDS:
            raise ValueError(
                f"`coordinates` must be one of {COORDINATE_KINDS}, got {coordinates!r}"
            )
        cin = check_int("in_channels", in_channels)
        cout = check_int("out_channels", out_channels)
        if channel_scale is not None:
            channel_scale = check_positive("channel_scale", channel_scale)
        frequency_scale = check_positive("frequency_scale", frequency_scale)
        hidden = DEFAULT_HIDDEN[parameterization] if hidden is None else tuple(hidden)
        use_cin, use_cout = _CHANNEL_INPUTS[parameterization]
        # One multiplier per input column, in the order of `_inputs`: channels, then fy, fx.
        scales = [1.0 if channel_scale is None else channel_scale * (c - 1) / 2
                  for c, use in ((cin, use_cin), (cout, use_cout)) if use]  # fmt: skip
        scales = [*scales, frequency_scale, frequency_scale]
        num = {"hw": cin * cout, "hw_cin": cout, "hw_cout": cin, "hw_cin_cout": 1}
        kr, ki = jax.random.split(key)
        n = num[parameterization]
        self.real = _scale_inputs(MLP.stack(n, len(scales), hidden, activation, key=kr), scales)
        self.imag = _scale_inputs(MLP.stack(n, len(scales), hidden, activation, key=ki), scales)
        self.parameterization = parameterization
        self.in_channels = cin
        self.out_channels = cout
        self.coordinates = coordinates

    def grid_shape(self, spatial_shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """The kernel grid `(cin, cout, h, w // 2 + 1)` for images of `spatial_shape`."""
        h, w = check_shape("spatial_shape", spatial_shape, rank=2)
        return self.in_channels, self.out_channels, h, w // 2 + 1

    def _inputs(
        self, i: Int[Array, " n"], o: Int[Array, " n"], row: Int[Array, " n"],
        column: Int[Array, " n"], h: int, w: int,
    ) -> Float[Array, "n k"]:  # fmt: skip
        fy, fx = frequency_coordinates(row, column, h, w, self.coordinates)  # pyright: ignore
        use_cin, use_cout = _CHANNEL_INPUTS[self.parameterization]
        columns = []
        if use_cin:
            columns.append(axis_coordinate(i, self.in_channels))
        if use_cout:
            columns.append(axis_coordinate(o, self.out_channels))
        return jnp.stack([*columns, fy, fx], axis=-1)

    def _mlp_index(self, i: Int[Array, " n"], o: Int[Array, " n"]) -> Int[Array, " n"]:
        p = self.parameterization
        if p == "hw":
            return i * self.out_channels + o
        if p == "hw_cin":
            return o
        if p == "hw_cout":
            return i
        return jnp.zeros_like(i)

    def __call__(self, positions: Positions, spatial_shape: tuple[int, int]) -> KernelValues:
        """Evaluate the kernel at flat positions of its grid (sparse evaluation).

        **Arguments:**

        - `positions`: flat (C-order) indices into the grid
          `(cin, cout, h, w // 2 + 1)`, shape `(num,)`, e.g. from
          [`cfconv.sample_positions`][].
        - `spatial_shape`: the image size `(h, w)`.

        **Returns:**

        The complex kernel values at `positions`, shape `(num,)`.
        """
        check_array("positions", positions, ndim=1, kind="int")
        shape = self.grid_shape(spatial_shape)
        h, w = spatial_shape
        i, o, row, column = unravel_positions(positions, shape)
        x = self._inputs(i, o, row, column, h, w)
        index = self._mlp_index(i, o)
        return jax.lax.complex(stack_select(self.real, index, x), stack_select(self.imag, index, x))

    def _block_layout(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Axes of `(cin, cout)` that index MLPs, and the axes that each MLP covers."""
        return BLOCK_LAYOUT[self.parameterization]

    def materialize(
        self,
        spatial_shape: tuple[int, int],
        *,
        chunk_size: int | None = None,
        unroll: int = 1,
    ) -> FourierKernel:
        """Evaluate the generator everywhere: the whole Fourier kernel.

        Each MLP is evaluated on the block of the grid it owns (no per-position parameter
        gathers). With `chunk_size`, the block is processed `chunk_size` positions at a
        time in a `jax.lax.scan` whose body is checkpointed, so that evaluation and its
        gradient need memory proportional to `chunk_size`, not to the grid.

        Call it under `jax.jit` (or `equinox.filter_jit`) for large grids: evaluated
        eagerly, every operation of every MLP layer writes out its whole intermediate
        array, and at the paper's size that is many times slower than the fused,
        compiled evaluation.

        **Arguments:**

        - `spatial_shape`: the image size `(h, w)`; any size, e.g. other than the one
          trained at.
        - `chunk_size`: positions per MLP evaluated together; `None` (default) evaluates
          everything at once.
        - `unroll`: how many chunks each scan iteration processes (`jax.lax.scan`'s
          `unroll`); only used with `chunk_size`.

        **Returns:**

        A complex array of shape `(cin, cout, h, w // 2 + 1)`.
        """
        cin, cout, h, wf = self.grid_shape(spatial_shape)
        w = spatial_shape[1]
        mlp_axes, block_axes = self._block_layout()
        channel_dims = (cin, cout)
        block_dims = tuple(channel_dims[a] for a in block_axes) + (h, wf)
        block = math.prod(block_dims)

        def evaluate(j: Int[Array, " n"]) -> tuple[Float[Array, "m n"], Float[Array, "m n"]]:
            coords = [jnp.zeros_like(j)] * 2
            rest = j
            for axis, dim in zip(reversed(block_axes + (2, 3)), reversed(block_dims)):
                if axis < 2:
                    coords[axis] = rest % dim
                else:
                    coords.append(rest % dim)
                rest = rest // dim
            i, o, column, row = coords  # spatial indices were appended last-axis first
            x = self._inputs(i, o, row, column, h, w)
            return stack_apply(self.real, x), stack_apply(self.imag, x)

        if chunk_size is None:
            real, imag = evaluate(jnp.arange(block, dtype=jnp.int32))
        else:
            chunk = check_int("chunk_size", chunk_size)
            unroll = check_int("unroll", unroll)
            chunk = min(chunk, block)
            n_chunks = -(-block // chunk)
            starts = jnp.arange(n_chunks, dtype=jnp.int32) * chunk

            @jax.checkpoint
            def body(_, start):
                j = jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), block - 1)
                return None, evaluate(j)

            _, (real, imag) = jax.lax.scan(body, None, starts, unroll=unroll)
            # (chunks, mlps, chunk) -> (mlps, chunks * chunk) -> drop the padding.
            real, imag = (jnp.moveaxis(a, 0, 1).reshape(a.shape[1], -1)[:, :block]
                          for a in (real, imag))  # fmt: skip
        values = jax.lax.complex(real, imag)
        # (mlp axes..., block axes..., h, wf) -> (cin, cout, h, wf)
        values = values.reshape(tuple(channel_dims[a] for a in mlp_axes) + block_dims)
        order = mlp_axes + block_axes
        return jnp.transpose(values, tuple(order.index(a) for a in (0, 1)) + (2, 3))
