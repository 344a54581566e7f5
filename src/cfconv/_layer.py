"""The CF-Conv layer."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Real

from ._activations import fast_sin
from ._custom_types import FourierKernel, Image
from ._errors import check_array, check_shape
from ._generators import (
    DEFAULT_CHANNEL_SCALE,
    DEFAULT_FREQUENCY_SCALE,
    CoordinateKind,
    KernelGenerator,
    Parameterization,
)
from ._spectral import spectral_conv
from ._state import KernelState, SparseKernel, init_kernel_state
from ._strategies import AbstractStrategy, resolve_strategy


class CFConv2d(eqx.Module):
    """A continuous Fourier convolution layer: a kernel generator and a bias.

    The layer holds parameters only. The stored kernel lives in an explicit
    [`cfconv.KernelState`][] that callers pass in and get back, and a training step has
    two phases:

    1. [`CFConv2d.kernel`][cfconv.CFConv2d.kernel], once per step for the whole batch:
       a strategy turns the generator and the state into this step's kernel and the next
       state;
    2. [`CFConv2d.apply`][cfconv.CFConv2d.apply], per example (under `jax.vmap`):
       `spectral_conv` with that kernel, plus the bias.

    `__call__` does both for one example or a batch.

    !!! example

        ```python
        layer = cfconv.CFConv2d(3, 32, key=k1)
        state = layer.init_state((150, 150), key=k2)
        y, state = layer(x, state, strategy=cfconv.Sparse(num=2**12), key=k3)
        y_inference, _ = layer(x, state, strategy="stored")
        ```
    """

    generator: KernelGenerator
    bias: Float[Array, " cout"] | None

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        parameterization: Parameterization = "hw_cin_cout",
        hidden: Sequence[int] | None = None,
        activation: Callable[[Array], Array] = fast_sin,
        coordinates: CoordinateKind = "frequency",
        use_bias: bool = True,
        channel_scale: float | None = DEFAULT_CHANNEL_SCALE,
        frequency_scale: float = DEFAULT_FREQUENCY_SCALE,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: the numbers of input and output channels.
        - `parameterization`, `hidden`, `activation`, `coordinates`, `channel_scale`,
          `frequency_scale`: passed to [`cfconv.KernelGenerator`][] (its defaults: a
          SIREN-like generator; `activation=jax.nn.relu, channel_scale=None,
          frequency_scale=1.0` is the paper's).
        - `use_bias`: add a learned per-output-channel bias (initialised to zero).
        - `key`: a PRNG key.
        """
        self.generator = KernelGenerator(
            in_channels, out_channels, parameterization, hidden, activation, coordinates,
            channel_scale, frequency_scale, key=key,
        )  # fmt: skip
        self.bias = jnp.zeros((out_channels,)) if use_bias else None

    @property
    def in_channels(self) -> int:
        return self.generator.in_channels

    @property
    def out_channels(self) -> int:
        return self.generator.out_channels

    def init_state(
        self, spatial_shape: tuple[int, int], *, key: PRNGKeyArray, scale: float = 1.0
    ) -> KernelState:
        """A fresh state for images of `spatial_shape`, uniform in `[-scale, scale]`
        (see [`cfconv.init_kernel_state`][])."""
        h, w = check_shape("spatial_shape", spatial_shape, rank=2)
        return init_kernel_state(self.in_channels, self.out_channels, h, w, key=key, scale=scale)

    def kernel(
        self,
        state: KernelState,
        spatial_shape: tuple[int, int],
        strategy: AbstractStrategy | str,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[FourierKernel | SparseKernel, KernelState]:
        """The kernel phase: this step's kernel and the next state.

        **Arguments:**

        - `state`: the layer's [`cfconv.KernelState`][].
        - `spatial_shape`: the image size `(h, w)`.
        - `strategy`: a [`cfconv.AbstractStrategy`][] or the name of one (`"dense"`,
          `"remat"`, `"chunked"`, `"sparse"`, `"stored"`, with default settings).
        - `key`: a PRNG key; required by `"sparse"`.

        **Returns:**

        `(kernel, new_state)`. The kernel is a complex array of shape
        `(cin, cout, h, w // 2 + 1)`, or a [`cfconv.SparseKernel`][] for
        [`cfconv.Sparse`][]; [`apply`][cfconv.CFConv2d.apply] takes either.
        """
        strategy = resolve_strategy(strategy)
        if not isinstance(state, KernelState):
            raise TypeError(f"`state` must be a KernelState, got {type(state).__name__}")
        grid = self.generator.grid_shape(spatial_shape)
        if state.kernel.shape != grid:
            raise ValueError(
                f"`state` holds a kernel of shape {state.kernel.shape}, but this layer "
                f"needs {grid} for images of size {tuple(spatial_shape)}"
            )
        if strategy.needs_key and key is None:
            raise ValueError(f"`key` is required by the {type(strategy).__name__} strategy")
        return strategy(self.generator, state, spatial_shape, key=key)

    def apply(self, x: Image, kernel: FourierKernel | SparseKernel) -> Float[Array, "cout h w"]:
        """The convolution phase for one example: `spectral_conv(x, kernel) + bias`.

        `kernel` comes from [`kernel`][cfconv.CFConv2d.kernel]: a complex array or a
        [`cfconv.SparseKernel`][] (see [`cfconv.spectral_conv`][]).
        """
        y = spectral_conv(x, kernel)
        if self.bias is not None:
            y = y + self.bias[:, None, None].astype(y.dtype)
        return y

    def __call__(
        self,
        x: Real[Array, "*batch cin h w"],
        state: KernelState,
        *,
        strategy: AbstractStrategy | str,
        key: PRNGKeyArray | None = None,
    ) -> tuple[Float[Array, "*batch cout h w"], KernelState]:
        """Both phases: compute the kernel once, then convolve every example.

        **Arguments:**

        - `x`: real input of shape `(cin, h, w)`, or with any leading batch axes.
        - `state`: the layer's [`cfconv.KernelState`][].
        - `strategy`: see [`CFConv2d.kernel`][cfconv.CFConv2d.kernel].
        - `key`: a PRNG key; required by `"sparse"`.

        **Returns:**

        `(y, new_state)` with `y` of shape `(..., cout, h, w)`.
        """
        if not hasattr(x, "ndim") or x.ndim < 3:
            raise ValueError(
                f"`x` must have shape (..., cin, h, w), got {getattr(x, 'shape', x)!r}"
            )
        check_array("x", x, ndim=x.ndim, kind="real")
        if x.shape[-3] != self.in_channels:
            raise ValueError(
                f"`x` has {x.shape[-3]} channels but the layer expects {self.in_channels} "
                f"(x shape {x.shape})"
            )
        spatial_shape = (x.shape[-2], x.shape[-1])
        kernel, new_state = self.kernel(state, spatial_shape, strategy, key=key)
        batch = x.shape[:-3]
        flat = x.reshape((-1,) + x.shape[-3:])
        y = jax.vmap(self.apply, in_axes=(0, None))(flat, kernel)
        return y.reshape(batch + y.shape[1:]), new_state
