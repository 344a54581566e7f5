"""A spatial-domain continuous kernel (CKConv/FlexConv style): the baseline for CF-Convs."""

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._custom_types import FourierKernel, KernelValues, Positions
from ._errors import check_array, check_int, check_shape
from ._features import AbstractFeatures
from ._generators import BLOCK_LAYOUT, DEFAULT_HIDDEN, PARAMETERIZATIONS, Parameterization
from ._mlp import MLP, stack_apply
from ._positions import axis_coordinate


def offset_coordinates(
    height: int, width: int
) -> tuple[Float[Array, "height width"], Float[Array, "height width"]]:
    """Coordinates of the entries of a circular `height x width` spatial kernel.

    Entry `(row, column)` of a kernel whose origin is at `[0, 0]` (the layout that FFT
    convolution uses) is the offset `(row, column)` modulo the image size. Its coordinates
    are that offset, signed (the lower half wraps to negative offsets) and scaled so that
    the image spans `[-1, 1)`: `d_y = 2 * fftfreq(height)[row]`,
    `d_x = 2 * fftfreq(width)[column]`. These are the same numbers that
    [`cfconv.frequency_coordinates`][] gives the rows of a Fourier grid: the two domains
    are sampled alike.

    **Arguments:**

    - `height`, `width`: the image size.

    **Returns:**

    The pair `(d_y, d_x)` of float32 arrays of shape `(height, width)`.
    """
    h = check_int("height", height)
    w = check_int("width", width)
    dy = (2 * jnp.fft.fftfreq(h)).astype(jnp.float32)
    dx = (2 * jnp.fft.fftfreq(w)).astype(jnp.float32)
    return jnp.broadcast_to(dy[:, None], (h, w)), jnp.broadcast_to(dx[None, :], (h, w))


class SpatialKernelGenerator(eqx.Module):
    r"""A continuous *spatial* kernel: MLPs over spatial offsets generate a real kernel.

    This is the spatial-domain baseline of CF-Convs, as CKConv and FlexConv build their
    kernels: the kernel is as large as the image, its entry at offset $(d_y, d_x)$ (see
    [`cfconv.offset_coordinates`][]) is an MLP's output there, and it is applied by FFT
    (circular) convolution. [`materialize`][cfconv.SpatialKernelGenerator.materialize]
    returns the `rfft2` of the real kernel in the layout of [`cfconv.KernelGenerator`][],
    so [`cfconv.spectral_conv`][], [`cfconv.Dense`][] and [`cfconv.Chunked`][] use it as
    they use a Fourier generator.

    **Equal parameters.** A Fourier generator has a real and an imaginary MLP for each
    MLP of its parameterization (paper Table 1). Here the kernel is the sum of `branches`
    MLPs (default 2) of the same widths: with the same `parameterization` and `hidden`,
    the two generators have exactly the same parameters, the same widths and depths, and
    differ only in the domain their MLPs describe. A sum of two MLPs is one MLP with
    twice the hidden width and block-diagonal weights. `branches=1` is CKConv's single
    MLP (half the parameters).

    **Output scale.** The MLP outputs are divided by $\sqrt{HW}$ (the orthonormal DFT's
    factor): by Parseval, MLP outputs of a given root mean square then make a kernel of
    the same energy in both domains, so the two generators start on the same scale and
    fit targets of the same size. At another resolution the kernel spans the same
    fraction of the image (the offsets are relative to the image size).

    Optional input `features` (random Fourier features or a SIREN-style sine layer, see
    [`cfconv.AbstractFeatures`][]) encode the two offset coordinates; channel
    coordinates stay as they are.
    """

    mlp: MLP
    features: AbstractFeatures | None
    parameterization: str = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    branches: int = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        parameterization: Parameterization = "hw_cin_cout",
        hidden: Sequence[int] | None = None,
        activation: Callable[[Array], Array] = jax.nn.relu,
        features: AbstractFeatures | None = None,
        branches: int = 2,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: the numbers of input and output channels.
        - `parameterization`: `"hw"`, `"hw_cin"`, `"hw_cout"` or `"hw_cin_cout"`, with
          the same meaning as for [`cfconv.KernelGenerator`][] (spatial offsets instead
          of frequencies).
        - `hidden`: hidden widths of every MLP; default
          `DEFAULT_HIDDEN[parameterization]`, as for the Fourier generators.
        - `activation`: the hidden activation (default ReLU).
        - `features`: an encoding of the offsets `(d_y, d_x)` with `in_size=2`, or `None`
          (default) to feed the offsets themselves.
        - `branches`: how many MLPs are summed into each kernel (default 2, the real and
          imaginary MLPs of a Fourier generator).
        - `key`: a PRNG key.
        """
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"`parameterization` must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        cin = check_int("in_channels", in_channels)
        cout = check_int("out_channels", out_channels)
        branches = check_int("branches", branches)
        if features is not None:
            if not isinstance(features, AbstractFeatures):
                raise TypeError(
                    f"`features` must be an AbstractFeatures or None, got {type(features).__name__}"
                )
            if features.in_size != 2:
                raise ValueError(
                    f"`features` must encode 2 coordinates (d_y, d_x), got in_size="
                    f"{features.in_size}"
                )
        hidden = DEFAULT_HIDDEN[parameterization] if hidden is None else tuple(hidden)
        mlp_axes, block_axes = BLOCK_LAYOUT[parameterization]
        num = math.prod((cin, cout)[a] for a in mlp_axes)
        in_size = (2 if features is None else features.out_size) + len(block_axes)
        self.mlp = MLP.stack(num * branches, in_size, hidden, activation, key=key)
        self.features = features
        self.parameterization = parameterization
        self.in_channels = cin
        self.out_channels = cout
        self.branches = branches

    def grid_shape(self, spatial_shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """The Fourier grid `(cin, cout, h, w // 2 + 1)` of `materialize` for `spatial_shape`."""
        h, w = check_shape("spatial_shape", spatial_shape, rank=2)
        return self.in_channels, self.out_channels, h, w // 2 + 1

    def _inputs(self, index: Int[Array, " n"], h: int, w: int) -> Float[Array, "n k"]:
        """MLP inputs for flat indices into one MLP's block `(block channels..., h, w)`."""
        _, block_axes = BLOCK_LAYOUT[self.parameterization]
        column = index % w
        row = (index // w) % h
        rest = index // (h * w)
        channel = {}
        for axis in reversed(block_axes):
            size = (self.in_channels, self.out_channels)[axis]
            channel[axis] = rest % size
            rest = rest // size
        dy = (2 * jnp.fft.fftfreq(h)).astype(jnp.float32)[row]
        dx = (2 * jnp.fft.fftfreq(w)).astype(jnp.float32)[column]
        offsets = jnp.stack([dy, dx], axis=-1)
        if self.features is not None:
            offsets = self.features(offsets)
        columns = [
            axis_coordinate(channel[a], (self.in_channels, self.out_channels)[a])[:, None]
            for a in sorted(channel)
        ]
        return jnp.concatenate([*columns, offsets], axis=-1)

    def _evaluate(self, index: Int[Array, " n"], h: int, w: int) -> Float[Array, "mlps n"]:
        values = stack_apply(self.mlp, self._inputs(index, h, w))
        return values.reshape(-1, self.branches, values.shape[-1]).sum(axis=1)

    def kernel(
        self,
        spatial_shape: tuple[int, int],
        *,
        chunk_size: int | None = None,
        unroll: int = 1,
    ) -> Float[Array, "cin cout h w"]:
        """The real spatial kernel, with its origin at `[0, 0]` (circular layout).

        **Arguments:**

        - `spatial_shape`: the image size `(h, w)`, any size.
        - `chunk_size`: offsets per MLP evaluated together in a checkpointed
          `jax.lax.scan` (memory proportional to `chunk_size`); `None` (default)
          evaluates everything at once.
        - `unroll`: chunks per scan iteration; only used with `chunk_size`.

        **Returns:**

        A real array of shape `(cin, cout, h, w)`: `kernel[i, o, y, x]` weighs the input
        `x_i` at offset `(y, x)` (modulo the image size) in output `o`.
        """
        cin, cout, h, _ = self.grid_shape(spatial_shape)
        w = spatial_shape[1]
        mlp_axes, block_axes = BLOCK_LAYOUT[self.parameterization]
        channel_dims = (cin, cout)
        block_dims = tuple(channel_dims[a] for a in block_axes) + (h, w)
        block = math.prod(block_dims)
        if chunk_size is None:
            values = self._evaluate(jnp.arange(block, dtype=jnp.int32), h, w)
        else:
            chunk = min(check_int("chunk_size", chunk_size), block)
            unroll = check_int("unroll", unroll)
            n_chunks = -(-block // chunk)
            starts = jnp.arange(n_chunks, dtype=jnp.int32) * chunk

            @jax.checkpoint
            def body(_, start):
                index = jnp.minimum(start + jnp.arange(chunk, dtype=jnp.int32), block - 1)
                return None, self._evaluate(index, h, w)

            _, values = jax.lax.scan(body, None, starts, unroll=unroll)
            # (chunks, mlps, chunk) -> (mlps, chunks * chunk) -> drop the padding.
            values = jnp.moveaxis(values, 0, 1).reshape(values.shape[1], -1)[:, :block]
        values = values * (1 / math.sqrt(h * w))
        values = values.reshape(tuple(channel_dims[a] for a in mlp_axes) + block_dims)
        order = mlp_axes + block_axes
        return jnp.transpose(values, tuple(order.index(a) for a in (0, 1)) + (2, 3))

    def materialize(
        self,
        spatial_shape: tuple[int, int],
        *,
        chunk_size: int | None = None,
        unroll: int = 1,
    ) -> FourierKernel:
        """The Fourier kernel: `rfft2` of [`kernel`][cfconv.SpatialKernelGenerator.kernel].

        With it, `spectral_conv(x, generator.materialize((h, w)))` is the circular
        convolution of `x` with the spatial kernel.

        **Arguments:**

        - `spatial_shape`, `chunk_size`, `unroll`: as for
          [`kernel`][cfconv.SpatialKernelGenerator.kernel].

        **Returns:**

        A complex array of shape `(cin, cout, h, w // 2 + 1)`.
        """
        return jnp.fft.rfft2(self.kernel(spatial_shape, chunk_size=chunk_size, unroll=unroll))

    def __call__(self, positions: Positions, spatial_shape: tuple[int, int]) -> KernelValues:
        """Fourier kernel values at flat positions of the grid `(cin, cout, h, w // 2 + 1)`.

        Every Fourier entry depends on the whole spatial kernel, so this materializes the
        kernel and gathers: it lets sampling strategies such as [`cfconv.Sparse`][] run,
        but saves nothing.

        **Arguments:**

        - `positions`: flat (C-order) indices, shape `(num,)`.
        - `spatial_shape`: the image size `(h, w)`.

        **Returns:**

        The complex values at `positions`, shape `(num,)`.
        """
        check_array("positions", positions, ndim=1, kind="int")
        return self.materialize(spatial_shape).reshape(-1)[positions]
