"""The stored Fourier kernel (the paper's stateful kernel) and its EMA update."""

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float, Int, PRNGKeyArray, Real

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
    - `frequency_weights`: `None` (the default), or a real array of shape
      `(h, w // 2 + 1)`: how a [`cfconv.Sparse`][] strategy with `sampling="stratified"`
      (or another that
      [`needs_frequency_weights`][cfconv.AbstractStrategy.needs_frequency_weights])
      spreads its positions over the kernel's frequencies (see
      [`cfconv.stratified_positions`][] and [`cfconv.frequency_weights`][]). Strategies
      pass it on unchanged; [`cfconv.train.refresh_frequency_weights`][] recomputes it.
    - `residual`: `None` (the default), or a complex array of the kernel's shape: for a
      [`cfconv.Sparse`][] strategy with `error_feedback=True`, the part of past steps'
      kernel gradients that has not reached the generator yet, because those entries were
      not sampled since (see [`with_residual`][cfconv.KernelState.with_residual]).
    """

    kernel: FourierKernel
    frequency_weights: Float[Array, "h wf"] | None = None
    residual: FourierKernel | None = None

    def __check_init__(self):
        kernel = self.kernel
        if hasattr(kernel, "ndim") and hasattr(kernel, "dtype"):
            check_array("kernel", kernel, ndim=4, kind="complex")
        weights = self.frequency_weights
        if weights is not None and hasattr(weights, "ndim") and hasattr(weights, "dtype"):
            check_array("frequency_weights", weights, ndim=2, kind="real")
            if hasattr(kernel, "shape") and weights.shape != tuple(kernel.shape[-2:]):
                raise ValueError(
                    f"`frequency_weights` must have shape {tuple(kernel.shape[-2:])} (the "
                    f"kernel's frequencies), got {weights.shape}"
                )
        residual = self.residual
        if residual is not None and hasattr(residual, "ndim") and hasattr(residual, "dtype"):
            check_array("residual", residual, ndim=4, kind="complex")
            if hasattr(kernel, "shape") and residual.shape != kernel.shape:
                raise ValueError(
                    f"`residual` must have the kernel's shape {kernel.shape}, got {residual.shape}"
                )
            if hasattr(kernel, "dtype") and residual.dtype != kernel.dtype:
                raise ValueError(
                    f"`residual` must have the kernel's dtype {kernel.dtype}, got {residual.dtype}"
                )

    def replace_kernel(self, kernel: FourierKernel) -> "KernelState":
        """This state with another kernel (the same `frequency_weights` and `residual`)."""
        return KernelState(kernel, self.frequency_weights, self.residual)

    def with_residual(self, residual: FourierKernel | None = None) -> "KernelState":
        """This state with a `residual`; by default zeros of the kernel's shape and dtype,
        where error feedback starts."""
        if residual is None:
            residual = jnp.zeros_like(self.kernel)
        return KernelState(self.kernel, self.frequency_weights, residual)

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
    rate = _check_update(state, positions, values, rate)
    kernel = state.kernel
    flat = kernel.reshape(-1)
    old = flat[positions]
    # This form is exact at rate=1 (the sampled entries are overwritten).
    new = (1 - rate) * old + rate * values.astype(kernel.dtype)
    return state.replace_kernel(flat.at[positions].set(new).reshape(kernel.shape))


def _check_update(state, positions, values, rate):
    """Validate the arguments of an EMA update; returns `rate`, checked under `jit` too."""
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
    return rate


class SparseKernel(eqx.Module):
    r"""This step's kernel from a sparse update, with the positions its gradient needs.

    Sparse training's kernel is the stored kernel with fresh values blended in at a few
    positions: `ema_update(stop_gradient(state), positions, values, rate=rate).kernel`.
    Its gradient reaches `values` only, at `num` positions. As a plain array, though, its
    gradient is computed everywhere first: in a convolution over a batch that is a sum
    over the batch of a `(cin, cout, h, w // 2 + 1)` array, of which all but `num`
    entries are then discarded. A `SparseKernel` holds the same kernel as data (without
    gradient) together with the positions and the fresh values, and
    [`cfconv.spectral_conv`][] and [`cfconv.fourier_mix`][] then compute the gradient
    at the sampled positions only ($\text{num} \times \text{batch}$ products instead of
    $C_{in} C_{out} H (W/2+1) \times \text{batch}$).

    Build it with [`cfconv.sparse_update`][]; [`cfconv.Sparse`][] returns one as the
    step's kernel, and [`cfconv.CFConv2d.apply`][] and the models accept it wherever they
    accept a plain kernel. As a function of its fields it is the array

    $$K + \sum_n \text{weights}_n \, (\text{values}_n - \bar v_n) \, e_{\text{positions}_n}$$

    at $\bar v = \text{values}$, i.e. the array `kernel` whose derivative with respect
    to `values[n]` is `weights[n]` at `positions[n]`; [`dense`][cfconv.SparseKernel.dense]
    builds exactly that array, with that gradient, for code that needs a plain array.
    The convolution is a `jax.custom_vjp` (reverse mode, any `jax.vmap`/`jax.jit`); use
    `dense()` for forward-mode differentiation.

    **Fields:**

    - `kernel`: complex array of shape `(cin, cout, h, w // 2 + 1)`, this step's kernel.
    - `positions`: integer array of shape `(num,)`, flat (C-order) indices into `kernel`.
    - `values`: complex array of shape `(num,)`, the fresh values (what the gradient
      reaches).
    - `weights`: real array of shape `(num,)`, the derivative of the kernel entry at
      `positions[n]` with respect to `values[n]`: the EMA `rate` for the occurrence whose
      value was used, `0` for the other occurrences of a repeated position.
    - `dense_gradient`: `False` (default): the convolution computes the gradient at
      `positions` only, and none reaches `kernel`. `True`: it convolves with
      [`dense()`][cfconv.SparseKernel.dense], computing the kernel's gradient at every
      entry, so that a `kernel` that carries gradient gets it (as [`cfconv.Sparse`][]
      with `error_feedback=True` needs).
    """

    kernel: FourierKernel
    positions: Positions
    values: KernelValues
    weights: Float[Array, " num"]
    dense_gradient: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        fields = {"kernel": (4, "complex"), "positions": (1, "int"), "values": (1, "complex"),
                  "weights": (1, "real")}  # fmt: skip
        for name, (ndim, kind) in fields.items():
            value = getattr(self, name)
            if hasattr(value, "ndim") and hasattr(value, "dtype"):
                check_array(name, value, ndim=ndim, kind=kind)
        shapes = {name: getattr(getattr(self, name), "shape", None)
                  for name in ("positions", "values", "weights")}  # fmt: skip
        if len(set(shapes.values())) != 1:
            raise ValueError(
                f"`positions`, `values` and `weights` must have one shape (num,), got {shapes}"
            )

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The kernel grid shape `(cin, cout, h, w // 2 + 1)`."""
        cin, cout, h, wf = self.kernel.shape
        return cin, cout, h, wf

    @property
    def dtype(self):
        """The complex dtype of the kernel."""
        return self.kernel.dtype

    def dense(self) -> FourierKernel:
        """The kernel as a plain array, differentiable in `values` (at the sampled
        positions, scaled by `weights`), as `ema_update` gives it.

        Its value is `kernel`; its gradient is computed everywhere, as for any array.
        """
        values = self.values.astype(self.kernel.dtype)
        delta = self.weights.astype(values.real.dtype) * (values - jax.lax.stop_gradient(values))
        flat = self.kernel.reshape(-1).at[self.positions].add(delta)
        return flat.reshape(self.kernel.shape)


def written_occurrence(index, shape: tuple[int, ...]) -> Int[Array, " num"]:
    """For each of `num` scatter indices, the occurrence whose value a scatter keeps.

    `index` is what `array.at[index]` takes for an array of `shape`: flat positions, or
    a tuple of per-axis index arrays. A scatter of several values to one entry keeps one
    of them, unspecified which (it may differ between backends); this scatters the
    occurrence numbers themselves to find out, so that the value written and the
    occurrence that gets the gradient agree, as they do for `jax.numpy` scatters under
    autodiff.
    """
    num = (index[0] if isinstance(index, tuple) else index).shape[0]
    occurrence = jnp.arange(num, dtype=jnp.int32)
    return jnp.full(shape, -1, jnp.int32).at[index].set(occurrence)[index]


def blend(kernel, index, values, rate) -> tuple[Complex[Array, "..."], Float[Array, " num"]]:
    """The EMA at `index` (as for `kernel.at[index]`), each entry from the occurrence a
    scatter keeps: the new kernel (without gradient), and the derivative of each
    occurrence's entry with respect to its value (`rate` or `0`)."""
    kernel = jax.lax.stop_gradient(kernel)
    values = jax.lax.stop_gradient(values).astype(kernel.dtype)
    rate = jax.lax.stop_gradient(rate)
    kept = written_occurrence(index, kernel.shape)
    # Every occurrence of a position writes the kept occurrence's value: deterministic.
    new = (1 - rate) * kernel[index] + rate * values[kept]
    used = kept == jnp.arange(kept.shape[0], dtype=kept.dtype)
    real = jnp.finfo(kernel.dtype).dtype
    weights = jnp.where(used, jnp.asarray(rate, real), jnp.zeros((), real))
    return kernel.at[index].set(new), weights


def sparse_update(
    state: KernelState,
    positions: Positions,
    values: KernelValues,
    *,
    rate: float | Real[ArrayLike, ""] = 0.1,
) -> SparseKernel:
    """[`cfconv.ema_update`][] of a state without gradient, as a
    [`cfconv.SparseKernel`][]: this step's kernel in sparse training.

    The kernel is that of `ema_update(stop_gradient(state), positions, values,
    rate=rate)`, and convolving with the result gives the same values and gradients
    (with respect to `values` and the input) as convolving with that plain array, but
    the convolution's gradient is computed at `positions` only. A repeated position is
    updated once, from the value of one of its occurrences, and only that occurrence
    receives a gradient, as in `ema_update`. No gradient reaches `state` or `rate`.

    **Arguments:**

    - `state`: the current [`cfconv.KernelState`][].
    - `positions`: integer array of shape `(num,)`, flat indices into `state.kernel`.
    - `values`: complex array of shape `(num,)`, the fresh values at `positions`.
    - `rate`: weight of the fresh values, in `(0, 1]`. Default `0.1`.

    **Returns:**

    A [`cfconv.SparseKernel`][]; `state.replace_kernel(result.kernel)` is the next state.

    !!! example

        ```python
        positions = cfconv.sample_positions(key, state.kernel.shape, 4096)
        step = cfconv.sparse_update(state, positions, generator(positions, (h, w)))
        ys = jax.vmap(cfconv.spectral_conv, (0, None))(xs, step)
        state = state.replace_kernel(step.kernel)
        ```
    """
    rate = _check_update(state, positions, values, rate)
    kernel = state.kernel
    flat, weights = blend(kernel.reshape(-1), positions, values, rate)
    return SparseKernel(flat.reshape(kernel.shape), positions, values, weights)
