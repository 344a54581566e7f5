"""Convolution in the Fourier domain."""

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from ._custom_types import FourierKernel, Image
from ._errors import check_array


def _check_kernel(kernel, cin: int, h: int, wf: int, *, what: str) -> None:
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
    x_hat: Complex[Array, "cin h wf"], kernel: FourierKernel
) -> Complex[Array, "cout h wf"]:
    r"""Multiply per frequency and sum over input channels (paper Eq. 1).

    $\hat y_o = \sum_i \hat x_i \odot K_{i,o}$ for every output channel $o$. This is
    the convolution itself, for users who keep their activations in the Fourier domain;
    [`cfconv.spectral_conv`][] wraps it in `rfft2` and `irfft2`.

    **Arguments:**

    - `x_hat`: complex array of shape `(cin, h, wf)`, e.g. `jnp.fft.rfft2(x)`.
    - `kernel`: complex array of shape `(cin, cout, h, wf)`.

    **Returns:**

    A complex array of shape `(cout, h, wf)`.
    """
    check_array("x_hat", x_hat, ndim=3, kind="complex")
    cin, h, wf = x_hat.shape
    _check_kernel(kernel, cin, h, wf, what="`x_hat`")
    return jnp.einsum("ihw,iohw->ohw", x_hat, kernel)


def spectral_conv(x: Image, kernel: FourierKernel) -> Float[Array, "cout h w"]:
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
    - `kernel`: complex array of shape `(cin, cout, h, w // 2 + 1)`.

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
    y_hat = jnp.einsum("ihw,iohw->ohw", x_hat, kernel)
    return jnp.fft.irfft2(y_hat, s=(h, w))
