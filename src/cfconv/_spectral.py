"""Convolution in the Fourier domain."""

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Complex, Float

from ._custom_types import FourierKernel, Image
from ._errors import check_array
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


def _einsum_mix(x_hat, kernel):
    return jnp.einsum("ihw,iohw->ohw", x_hat, kernel)


def _mix(x_hat, kernel):
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


def _sparse_mix_fwd(x_hat, kernel, positions, values, weights):
    out = _einsum_mix(x_hat.value, kernel.value)
    for_x = kernel.value if x_hat.perturbed else None
    for_kernel = x_hat.value if kernel.perturbed else None
    for_values = None
    if values.perturbed:
        for_values = (x_hat.value, positions.value, values.value, weights.value)
    return out, (for_x, for_kernel, for_values)


def _sparse_mix_bwd(residuals, ct):
    for_x, for_kernel, for_values = residuals
    if isinstance(ct, SymbolicZero):
        return None, None, None, None, None
    ct_x = None if for_x is None else jnp.einsum("ohw,iohw->ihw", ct, for_x)
    ct_kernel = None if for_kernel is None else jnp.einsum("ihw,ohw->iohw", for_kernel, ct)
    ct_values = None
    if for_values is not None:
        x_hat, positions, values, weights = for_values
        cin, h, wf = x_hat.shape
        cout = ct.shape[0]
        plane = positions % (h * wf)  # (row, column) as one flat index
        i = positions // (cout * h * wf)
        o = (positions // (h * wf)) % cout
        product = x_hat.reshape(-1)[i * (h * wf) + plane] * ct.reshape(-1)[o * (h * wf) + plane]
        ct_values = (weights * product).astype(values.dtype)
    return ct_x, ct_kernel, None, ct_values, None


_sparse_mix.defvjp(_sparse_mix_fwd, _sparse_mix_bwd, symbolic_zeros=True)
