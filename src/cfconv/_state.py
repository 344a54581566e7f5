"""The stored Fourier kernel (the paper's stateful kernel) and its EMA update."""

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, PRNGKeyArray, Real

from ._custom_types import FourierKernel, KernelValues, Positions
from ._errors import check_array, check_int, check_rate


class KernelState(eqx.Module):
    """The stored Fourier kernel of one CF-Conv layer.

    This is the paper's stateful kernel: a complex array in `rfft2` layout that sparse
    training blends new generator values into (see [`cfconv.ema_update`][]), and that
    inference uses directly, without evaluating any MLP. It is an ordinary PyTree: it is
    passed into and returned from pure functions, never mutated.

    **Fields:**

    - `kernel`: complex array of shape `(cin, cout, h, w // 2 + 1)`.
    """

    kernel: FourierKernel

    def __check_init__(self):
        kernel = self.kernel
        if hasattr(kernel, "ndim") and hasattr(kernel, "dtype"):
            check_array("kernel", kernel, ndim=4, kind="complex")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The kernel grid shape `(cin, cout, h, w // 2 + 1)`."""
        cin, cout, h, wf = self.kernel.shape
        return cin, cout, h, wf


def kernel_shape(
    in_channels: int, out_channels: int, height: int, width: int
) -> tuple[int, int, int, int]:
    """The rfft2 kernel grid shape for images of size `height x width`.

    **Arguments:**

    - `in_channels`, `out_channels`: the numbers of input and output channels.
    - `height`, `width`: the spatial size of the images the kernel applies to.

    **Returns:**

    `(in_channels, out_channels, height, width // 2 + 1)`.
    """
    cin = check_int("in_channels", in_channels)
    cout = check_int("out_channels", out_channels)
    h = check_int("height", height)
    w = check_int("width", width)
    return cin, cout, h, w // 2 + 1


def init_kernel_state(
    in_channels: int,
    out_channels: int,
    height: int,
    width: int,
    *,
    key: PRNGKeyArray,
    scale: float = 1.0,
    dtype: jnp.dtype = jnp.complex64,
) -> KernelState:
    """Initialise a [`cfconv.KernelState`][] as the paper does.

    Real and imaginary parts are drawn independently and uniformly from
    `[-scale, scale]`; the paper uses `scale=1`, which gives no position or frequency a
    head start.

    **Arguments:**

    - `in_channels`, `out_channels`: the numbers of input and output channels.
    - `height`, `width`: the spatial size of the images; the grid is
      `(in_channels, out_channels, height, width // 2 + 1)`.
    - `key`: a PRNG key.
    - `scale`: half-width of the uniform distribution (default `1.0`).
    - `dtype`: a complex dtype (default `complex64`).

    **Returns:**

    A new [`cfconv.KernelState`][].

    !!! example

        ```python
        state = cfconv.init_kernel_state(3, 32, 150, 150, key=jax.random.key(0))
        assert state.kernel.shape == (3, 32, 150, 76)
        ```
    """
    shape = kernel_shape(in_channels, out_channels, height, width)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise ValueError(f"`scale` must be a positive number, got {scale!r}")
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"`dtype` must be a complex dtype, got {dtype}")
    real_dtype = jnp.finfo(dtype).dtype
    kr, ki = jax.random.split(key)
    real = jax.random.uniform(kr, shape, real_dtype, -scale, scale)
    imag = jax.random.uniform(ki, shape, real_dtype, -scale, scale)
    return KernelState(jax.lax.complex(real, imag).astype(dtype))


def ema_update(
    state: KernelState,
    positions: Positions,
    values: KernelValues,
    *,
    rate: float | Real[ArrayLike, ""] = 0.1,
) -> KernelState:
    r"""Blend fresh kernel values into the stored kernel at some positions.

    At every flat (C-order) index `p` in `positions`,
    $K_p \leftarrow K_p + \text{rate} \, (v_p - K_p)$; every other entry is unchanged.
    `rate` weighs the *fresh* value, so the paper's "EMA with a decay rate of 0.1" is
    `rate=0.1`, and `rate=1` overwrites the sampled entries.

    The result is differentiable in `values` (with derivative `rate`) and in `state`.
    Sparse training applies it to `jax.lax.stop_gradient(state)`: the resulting kernel's
    gradient then reaches the generator only through the sampled entries.

    A position that occurs several times in `positions` (sampling with replacement) is
    updated once, from the value of one of its occurrences, and only that occurrence
    receives a gradient. Out-of-range positions are a user error; under `jit` they are not
    checked.

    **Arguments:**

    - `state`: the current [`cfconv.KernelState`][].
    - `positions`: integer array of shape `(num,)`, flat indices into `state.kernel`.
    - `values`: array of shape `(num,)`, the fresh values at `positions`.
    - `rate`: weight of the fresh values, in `(0, 1]`. Default `0.1`.

    **Returns:**

    The updated [`cfconv.KernelState`][].

    !!! example

        ```python
        positions = cfconv.sample_positions(key, state.kernel.shape, 4096)
        values = generator(positions, (h, w))
        state = cfconv.ema_update(state, positions, values, rate=0.1)
        ```
    """
    if not isinstance(state, KernelState):
        raise TypeError(f"`state` must be a KernelState, got {type(state).__name__}")
    check_array("positions", positions, ndim=1, kind="int")
    check_array("values", values, ndim=1, kind="complex")
    if values.shape != positions.shape:
        raise ValueError(
            f"`values` must have the same shape as `positions` {positions.shape}, "
            f"got {values.shape}"
        )
    check_rate(rate)
    kernel = state.kernel
    if not isinstance(rate, (int, float)):
        rate = jnp.asarray(rate)
        rate = eqx.error_if(rate, (rate <= 0) | (rate > 1), "`rate` must be in (0, 1]")
    if not isinstance(positions, jax.core.Tracer) and positions.size:
        # Concrete positions (eager, or closed over by a traced function): check on the host.
        host = np.asarray(positions)
        low, high = int(host.min()), int(host.max())
        if low < 0 or high >= kernel.size:
            raise ValueError(
                f"`positions` must lie in [0, {kernel.size}) for a kernel of shape "
                f"{kernel.shape}, got values in [{low}, {high}]"
            )
    flat = kernel.reshape(-1)
    old = flat[positions]
    # This form is exact at rate=1 (the sampled entries are overwritten).
    new = (1 - rate) * old + rate * values.astype(kernel.dtype)
    return KernelState(flat.at[positions].set(new).reshape(kernel.shape))
