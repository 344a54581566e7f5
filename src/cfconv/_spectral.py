"""Convolution in the Fourier domain."""

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Complex, Float

from ._custom_types import FourierKernel, Image
from ._errors import check_array, check_int, check_shape
from ._state import SparseKernel


def _check_kernel(kernel, cin: int, h: int, wf: int, *, what: str) -> None:
    if isinstance(kernel, SparseKernel):
        kernel = kernel.kernel
    check_array("kernel", kernel, ndim=4, kind="complex")
    kcin, _, kh, kwf = kernel.shape
    if kcin != cin:
        raise ValueError(
            f"`kernel` has {kcin} input channels but {what} has {cin} (kernel shape {kernel.shape})"
        )
    if (kh, kwf) != (h, wf):
        raise ValueError(
            f"`kernel` has spatial grid {(kh, kwf)} but {what} needs {(h, wf)} "
            f"(kernel shape {kernel.shape})"
        )


def fourier_mix(
    x_hat: Complex[Array, "cin h wf"], kernel: FourierKernel | SparseKernel
) -> Complex[Array, "cout h wf"]:
    r"""Multiply per frequency and sum over input channels (paper Eq. 1).

    $\hat y_o = \sum_i \hat x_i \odot K_{i,o}$ for every output channel $o$. This is
    the convolution itself, for users who keep their activations in the Fourier domain;
    [`cfconv.spectral_conv`][] wraps it in `rfft2` and `irfft2`.

    **Arguments:**

    - `x_hat`: complex array of shape `(cin, h, wf)`, e.g. `jnp.fft.rfft2(x)`.
    - `kernel`: complex array of shape `(cin, cout, h, wf)`, or a
      [`cfconv.SparseKernel`][] (whose gradient is then computed at its positions only).

    **Returns:**

    A complex array of shape `(cout, h, wf)`.
    """
    check_array("x_hat", x_hat, ndim=3, kind="complex")
    cin, h, wf = x_hat.shape
    _check_kernel(kernel, cin, h, wf, what="`x_hat`")
    return _mix(x_hat, kernel)


def spectral_conv(x: Image, kernel: FourierKernel | SparseKernel) -> Float[Array, "cout h w"]:
    r"""Convolve one image with a Fourier-domain kernel.

    $y_o = \operatorname{irfft2}\big(\sum_i \operatorname{rfft2}(x_i) \odot K_{i,o}\big)$,
    for a single example with channels first (as `equinox.nn.Conv2d`); batch with
    `jax.vmap`.

    This equals the *circular* convolution of `x` with the real spatial kernels
    `irfft2(kernel[i, o], s=(h, w))`, for any complex `kernel`: `irfft2` keeps only the
    Hermitian part of the DC column (and of the Nyquist column when `w` is even), and for a
    real input that is the same as using the Hermitian part of the kernel. Pad `x` yourself
    if you want a linear (non-wrapping) convolution.

    **Arguments:**

    - `x`: real array of shape `(cin, h, w)`.
    - `kernel`: complex array of shape `(cin, cout, h, w // 2 + 1)`, or a
      [`cfconv.SparseKernel`][] (a sparse training step's kernel: the same values and
      gradients, with the kernel's gradient computed at its positions only).

    **Returns:**

    A real array of shape `(cout, h, w)`, in the real dtype matching `kernel`.

    !!! example

        ```python
        y = cfconv.spectral_conv(x, state.kernel)                   # one image
        ys = jax.vmap(cfconv.spectral_conv, (0, None))(xs, kernel)  # a batch
        ```
    """
    check_array("x", x, ndim=3, kind="real")
    cin, h, w = x.shape
    _check_kernel(kernel, cin, h, w // 2 + 1, what="`x`")
    x_hat = jnp.fft.rfft2(x.astype(jnp.finfo(kernel.dtype).dtype))
    return jnp.fft.irfft2(_mix(x_hat, kernel), s=(h, w))


def kernel_concentration(
    kernel: FourierKernel, spatial_shape: tuple[int, int], taps: int = 3
) -> Float[Array, ""]:
    r"""How much of a layer's spatial kernels lies within `taps x taps` of the origin.

    The spatial kernels are `irfft2(kernel[i, o], s=spatial_shape)`, the real kernels
    [`cfconv.spectral_conv`][] convolves with (circularly). This is the share of their
    energy, summed over all channel pairs, in the `taps x taps` offsets centred on
    offset `(0, 0)` (wrapping around, as the convolution does):
    $\sum_{i,o} \sum_{|d_y|, |d_x| \le r} k_{i,o}[d]^2 \,/\, \sum_{i,o} \sum_d
    k_{i,o}[d]^2$ with $r = \lfloor \text{taps} / 2 \rfloor$. A 3x3 convolution's
    kernel gives 1 for `taps=3`; a kernel spread evenly over an `h x w` image gives
    `taps**2 / (h * w)`. It is 0/0 (NaN) for an all-zero kernel.

    **Arguments:**

    - `kernel`: complex array of shape `(cin, cout, h, w // 2 + 1)`.
    - `spatial_shape`: the image size `(h, w)` the kernel is for.
    - `taps`: the odd width of the window (default 3), at most `min(h, w)`.

    **Returns:**

    A scalar in `[0, 1]`.
    """
    check_array("kernel", kernel, ndim=4, kind="complex")
    h, w = check_shape("spatial_shape", spatial_shape, rank=2)
    if kernel.shape[2:] != (h, w // 2 + 1):
        raise ValueError(
            f"`kernel` has spatial grid {kernel.shape[2:]} but `spatial_shape` {(h, w)} "
            f"needs {(h, w // 2 + 1)}"
        )
    taps = check_int("taps", taps)
    if taps % 2 == 0 or taps > min(h, w):
        raise ValueError(f"`taps` must be odd and at most {min(h, w)}, got {taps}")
    energy = jnp.fft.irfft2(kernel, s=(h, w)) ** 2
    offsets = jnp.arange(taps) - taps // 2
    window = energy[..., offsets % h, :][..., offsets % w]
    return window.sum() / energy.sum()


# The mixing is, per frequency, a (cin,) x (cin, cout) product; under `jax.vmap` over a
# batch it becomes one small (batch, cin) x (cin, cout) matmul per frequency. Written
# with the frequency axis leading (transposes of the flattened grid, which XLA does
# quickly), XLA's CPU backend ran those matmuls about 1.4x faster in a microbenchmark
# than the same einsum with the frequency axes trailing (a batch of 32 images at
# 150x150, 32 channels). The kernel's transpose is not batched: it is done once per
# step, not per example.
def _frequency_major(kernel: FourierKernel) -> Complex[Array, "hwf cin cout"]:
    cin, cout, h, wf = kernel.shape
    return kernel.reshape(cin * cout, h * wf).T.reshape(h * wf, cin, cout)


def _mix_frequency_major(x_hat, kernel_fm, transpose: bool = False):
    """`x_hat` (c, h, wf) times the per-frequency matrices `kernel_fm` (hwf, cin, cout):
    summing over cin (giving cout channels), or with `transpose` over cout."""
    c, h, wf = x_hat.shape
    x_fm = x_hat.reshape(c, h * wf).T
    y = jnp.einsum("fo,fio->fi" if transpose else "fi,fio->fo", x_fm, kernel_fm)
    return y.T.reshape(y.shape[1], h, wf)


def _einsum_mix(x_hat, kernel):
    return _mix_frequency_major(x_hat, _frequency_major(kernel))


def _mix(x_hat, kernel):
    if isinstance(kernel, SparseKernel) and kernel.dense_gradient:
        return _einsum_mix(x_hat, kernel.dense())
    if isinstance(kernel, SparseKernel):
        x_hat, dense, values = _same_varying(x_hat, kernel.kernel, kernel.values)
        return _sparse_mix(x_hat, dense, kernel.positions, values, kernel.weights)
    return _einsum_mix(x_hat, kernel)


def _varying(array) -> frozenset:
    aval = jax.typeof(array)
    manual = getattr(aval, "manual_axis_type", None)  # JAX >= 0.10; `vma` before
    return frozenset(getattr(aval, "vma", ())) if manual is None else manual.varying


def _to_varying(array, axes: tuple):
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(array, axes, to="varying")
    return getattr(jax.lax, "pvary")(array, axes)  # JAX < 0.10


def _same_varying(*arrays):
    """Under `jax.shard_map`, let every array vary over the mesh axes that any of them
    varies over. A custom VJP's cotangents must have their inputs' types; the cotangent
    of a replicated input (a kernel's `values`) computed from one device's examples
    varies, and the transpose of this cast sums it over the devices."""
    axes = frozenset().union(*(_varying(a) for a in arrays))
    if not axes:
        return arrays
    return tuple(
        _to_varying(a, tuple(sorted(axes - _varying(a)))) if axes - _varying(a) else a
        for a in arrays
    )  # fmt: skip


# The channel mixing with a SparseKernel: its value is the einsum with `kernel`; its
# gradient with respect to `values[n]` is `weights[n]` times the einsum's kernel gradient
# at `positions[n]`, i.e. x_hat[i, r, c] * ct[o, r, c], computed for those entries only.
# (JAX cotangents of complex linear maps are plain transposes, without conjugation, as
# for the einsum's.) Under `jax.vmap` over examples with the kernel unbatched, JAX sums
# the per-example cotangents of the unbatched arguments over the batch.
# With `symbolic_zeros`, only the cotangents of perturbed arguments are computed: a
# perturbed `kernel` (not the case in training, where it carries no gradient) gets the
# full einsum gradient, so the function is right for any use.
@jax.custom_vjp
def _sparse_mix(x_hat, kernel, positions, values, weights):
    return _einsum_mix(x_hat, kernel)


def _split_positions(positions, cout: int, h: int, wf: int):
    """Flat kernel positions -> flat indices into `x_hat` (cin, h, wf) and into the
    output's cotangent (cout, h, wf)."""
    plane = positions % (h * wf)  # (row, column) as one flat index
    i = positions // (cout * h * wf)
    o = (positions // (h * wf)) % cout
    return i * (h * wf) + plane, o * (h * wf) + plane


def _sparse_mix_fwd(x_hat, kernel, positions, values, weights):
    out = _mix_frequency_major(x_hat.value, _frequency_major(kernel.value))
    # The residuals: the kernel itself (the same buffer as the next state, so it costs
    # no memory; its transpose is redone in the backward pass) ...
    for_x = kernel.value if x_hat.perturbed else None
    for_kernel = x_hat.value if kernel.perturbed else None
    for_values = None
    if values.perturbed:
        # ... and, for the values' gradient, `x_hat` at the sampled entries only, when
        # there are fewer of them than entries of `x_hat`.
        cin, h, wf = x_hat.value.shape
        at_x, _ = _split_positions(positions.value, kernel.value.shape[1], h, wf)
        gathered = positions.value.shape[0] < cin * h * wf
        x_part = x_hat.value.reshape(-1)[at_x] if gathered else x_hat.value
        for_values = (x_part, positions.value, values.value, weights.value)
    return out, (for_x, for_kernel, for_values)


def _sparse_mix_bwd(residuals, ct):
    for_x, for_kernel, for_values = residuals
    if isinstance(ct, SymbolicZero):
        return None, None, None, None, None
    ct_x = None
    if for_x is not None:
        ct_x = _mix_frequency_major(ct, _frequency_major(for_x), transpose=True)
    ct_kernel = None if for_kernel is None else jnp.einsum("ihw,ohw->iohw", for_kernel, ct)
    ct_values = None
    if for_values is not None:
        x_part, positions, values, weights = for_values
        cout, h, wf = ct.shape
        at_x, at_ct = _split_positions(positions, cout, h, wf)
        if x_part.ndim > 1:  # x_hat itself, not yet gathered
            x_part = x_part.reshape(-1)[at_x]
        ct_values = (weights * x_part * ct.reshape(-1)[at_ct]).astype(values.dtype)
    return ct_x, ct_kernel, None, ct_values, None


_sparse_mix.defvjp(_sparse_mix_fwd, _sparse_mix_bwd, symbolic_zeros=True)
