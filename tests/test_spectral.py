"""Tests for `cfconv.spectral_conv` and `cfconv.fourier_mix`.

The contract (DESIGN.md): for ANY complex kernel, `spectral_conv(x, kernel)` is the
circular convolution of `x` with the real spatial kernels
`numpy.fft.irfft2(kernel[i, o], s=(h, w))`. The references below build those spatial
kernels with numpy and convolve by a direct float64 sum over all shifts, so they share
no code (and no FFT of the image) with the implementation. Kernels are random in their
real AND imaginary parts everywhere, the DC and Nyquist columns included, so an
implementation that relies on a Hermitian-symmetric kernel is caught.
"""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cfconv
from helpers import assert_tree_allclose, checker_modes, raises_naming
from strategies import image_shapes, out_channels, seeds


# ---------------------------------------------------------------------------------------
# Inputs and independent references


def random_inputs(seed, shape, cout, *, real_dtype=np.float32):
    """A real image `(cin, h, w)` and a complex kernel `(cin, cout, h, w // 2 + 1)` whose
    real and imaginary parts are independent uniforms in [-1, 1] everywhere."""
    rng = np.random.default_rng(seed)
    cin, h, w = shape
    kshape = (cin, cout, h, w // 2 + 1)
    complex_dtype = np.result_type(real_dtype, np.complex64)
    x = rng.standard_normal(shape).astype(real_dtype)
    kernel = (rng.uniform(-1, 1, kshape) + 1j * rng.uniform(-1, 1, kshape)).astype(complex_dtype)
    return x, kernel


def spatial_kernels(kernel, h, w):
    """The real spatial kernels `irfft2(kernel[i, o], s=(h, w))`, in float64, by numpy."""
    return np.fft.irfft2(np.asarray(kernel, np.complex128), s=(h, w), axes=(-2, -1))


def circular_conv(x, k):
    """y[o, p, q] = sum_i sum_{a, b} x[i, a, b] * k[i, o, (p - a) % h, (q - b) % w]."""
    x = np.asarray(x, np.float64)
    cin, h, w = x.shape
    y = np.zeros((k.shape[1], h, w))
    for i in range(cin):
        for a in range(h):
            for b in range(w):
                # np.roll(k, (a, b))[p, q] == k[(p - a) % h, (q - b) % w].
                y += x[i, a, b] * np.roll(k[i], (a, b), axis=(1, 2))
    return y


def circular_corr(c, k):
    """The adjoint of `circular_conv` in `x`:
    g[i, a, b] = sum_o sum_{p, q} c[o, p, q] * k[i, o, (p - a) % h, (q - b) % w]."""
    cin, _, h, w = k.shape
    g = np.zeros((cin, h, w))
    for a in range(h):
        for b in range(w):
            g[:, a, b] = np.sum(c[None] * np.roll(k, (a, b), axis=(2, 3)), axis=(1, 2, 3))
    return g


def reference(x, kernel):
    return circular_conv(x, spatial_kernels(kernel, *np.shape(x)[1:]))


# ---------------------------------------------------------------------------------------
# Against the reference


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_matches_circular_convolution(shape, cout, seed):
    x, kernel = random_inputs(seed, shape, cout)
    y = cfconv.spectral_conv(jnp.asarray(x), jnp.asarray(kernel))
    assert y.shape == (cout, *shape[1:])
    assert y.dtype == jnp.float32
    assert_tree_allclose(y, reference(x, kernel))


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_matches_circular_convolution_float64(shape, cout, seed):
    # In double precision the tolerance is tight enough to catch e.g. a silent cast to
    # complex64, or an approximate treatment of the DC/Nyquist columns.
    x, kernel = random_inputs(seed, shape, cout, real_dtype=np.float64)
    with jax.enable_x64(True):
        y = cfconv.spectral_conv(jnp.asarray(x), jnp.asarray(kernel))
        assert y.dtype == jnp.float64
        assert_tree_allclose(y, reference(x, kernel))


@pytest.mark.parametrize("w", [6, 5])
def test_imaginary_dc_and_nyquist_have_no_effect(w):
    # irfft2 keeps the Hermitian part of the DC column (and of the Nyquist column when w
    # is even); a purely imaginary entry in row 0 of those columns has none, so the
    # spatial kernel, and the output, are exactly zero.
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, w)), jnp.float32)
    kernel = np.zeros((2, 3, 4, w // 2 + 1), np.complex64)
    kernel[:, :, 0, 0] = 1j
    kernel[:, :, 2, 0] = 1j  # row h/2 is its own mirror image too
    if w % 2 == 0:
        kernel[:, :, 0, -1] = 1j
        kernel[:, :, 2, -1] = 1j
    y = cfconv.spectral_conv(x, jnp.asarray(kernel))
    np.testing.assert_allclose(np.asarray(y), 0.0, atol=1e-6)
    # ...whereas a real DC entry of 1 at (0, 0) averages every input channel.
    kernel = np.zeros((2, 3, 4, w // 2 + 1), np.complex64)
    kernel[:, :, 0, 0] = 1.0
    y = cfconv.spectral_conv(x, jnp.asarray(kernel))
    mean = np.asarray(x, np.float64).sum(axis=0).mean()
    np.testing.assert_allclose(np.asarray(y), np.full((3, 4, w), mean), atol=1e-5)


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_fourier_mix_matches_loop(shape, cout, seed):
    rng = np.random.default_rng(seed)
    cin, h, w = shape
    _, kernel = random_inputs(seed, shape, cout)
    wf = w // 2 + 1
    x_hat = (rng.standard_normal((cin, h, wf)) + 1j * rng.standard_normal((cin, h, wf))).astype(
        np.complex64
    )
    expected = np.zeros((cout, h, wf), np.complex128)
    for o in range(cout):
        for i in range(cin):
            expected[o] += x_hat[i].astype(np.complex128) * kernel[i, o]
    y_hat = cfconv.fourier_mix(jnp.asarray(x_hat), jnp.asarray(kernel))
    assert y_hat.dtype == jnp.complex64
    assert_tree_allclose(y_hat, expected)


# ---------------------------------------------------------------------------------------
# Algebraic properties


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_linear_in_x(shape, cout, seed):
    x1, kernel = random_inputs(seed, shape, cout)
    x2, _ = random_inputs(seed + 1, shape, cout)
    kernel = jnp.asarray(kernel)
    a, b = 0.7, -1.3
    lhs = cfconv.spectral_conv(jnp.asarray(a * x1 + b * x2), kernel)
    rhs = a * cfconv.spectral_conv(jnp.asarray(x1), kernel) + b * cfconv.spectral_conv(
        jnp.asarray(x2), kernel
    )
    assert_tree_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_linear_in_kernel(shape, cout, seed):
    x, k1 = random_inputs(seed, shape, cout)
    _, k2 = random_inputs(seed + 1, shape, cout)
    x = jnp.asarray(x)
    a, b = 0.7, -1.3
    lhs = cfconv.spectral_conv(x, jnp.asarray(a * k1 + b * k2))
    rhs = a * cfconv.spectral_conv(x, jnp.asarray(k1)) + b * cfconv.spectral_conv(
        x, jnp.asarray(k2)
    )
    assert_tree_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)


@hypothesis.given(
    shape=image_shapes,
    cout=out_channels,
    seed=seeds,
    shift=st.tuples(st.integers(-9, 9), st.integers(-9, 9)),
)
def test_shift_equivariant(shape, cout, seed, shift):
    x, kernel = random_inputs(seed, shape, cout)
    kernel = jnp.asarray(kernel)
    y = cfconv.spectral_conv(jnp.asarray(x), kernel)
    y_shifted = cfconv.spectral_conv(jnp.asarray(np.roll(x, shift, axis=(1, 2))), kernel)
    assert_tree_allclose(y_shifted, np.roll(np.asarray(y), shift, axis=(1, 2)))


# ---------------------------------------------------------------------------------------
# Transformations


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_vmap_equals_loop(shape, cout, seed):
    xs = np.stack([random_inputs(seed + b, shape, cout)[0] for b in range(3)])
    _, kernel = random_inputs(seed, shape, cout)
    kernel = jnp.asarray(kernel)
    batched = jax.vmap(cfconv.spectral_conv, in_axes=(0, None))(jnp.asarray(xs), kernel)
    looped = [reference(x, kernel) for x in xs]
    assert_tree_allclose(batched, np.stack(looped))


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_jit_matches_reference(shape, cout, seed):
    x, kernel = random_inputs(seed, shape, cout)
    y = jax.jit(cfconv.spectral_conv)(jnp.asarray(x), jnp.asarray(kernel))
    assert_tree_allclose(y, reference(x, kernel))


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_grad_wrt_x_is_correlation(shape, cout, seed):
    # For L(x) = sum(c * y(x)) the gradient is the adjoint of the convolution applied to
    # c: a circular correlation with the same spatial kernels, computed here directly.
    x, kernel = random_inputs(seed, shape, cout)
    c = np.random.default_rng(seed + 1).standard_normal((cout, *shape[1:])).astype(np.float32)

    def functional(x):
        return jnp.sum(jnp.asarray(c) * cfconv.spectral_conv(x, jnp.asarray(kernel)))

    grad = jax.jit(jax.grad(functional))(jnp.asarray(x))
    expected = circular_corr(c.astype(np.float64), spatial_kernels(kernel, *shape[1:]))
    assert_tree_allclose(grad, expected, rtol=1e-4, atol=1e-4)


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_grad_wrt_kernel_directional(shape, cout, seed):
    # L(K) = sum(c * y(K)) is real-linear in K, so its derivative along any complex
    # direction dK is L(dK), computed by the reference. JAX's gradient of a real function
    # of a complex array is dL/dRe - i dL/dIm, so the directional derivative is
    # Re(sum(grad * dK)). This checks the gradient through irfft2 for non-Hermitian
    # kernels (the imaginary DC/Nyquist parts must get zero gradient).
    x, kernel = random_inputs(seed, shape, cout)
    _, direction = random_inputs(seed + 1, shape, cout)
    c = np.random.default_rng(seed + 2).standard_normal((cout, *shape[1:]))

    def functional(kernel):
        return jnp.sum(jnp.asarray(c, jnp.float32) * cfconv.spectral_conv(jnp.asarray(x), kernel))

    grad = np.asarray(jax.grad(functional)(jnp.asarray(kernel)), np.complex128)
    directional = np.real(np.sum(grad * direction))
    expected = np.sum(c * reference(x, direction))
    scale = np.sum(np.abs(grad) * np.abs(direction))
    np.testing.assert_allclose(directional, expected, rtol=1e-4, atol=1e-5 * scale)


def test_jit_does_not_retrace():
    x, kernel = random_inputs(0, (2, 5, 6), 3)

    @jax.jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def conv(x, kernel):
        return cfconv.spectral_conv(x, kernel)

    for seed in range(3):
        x, kernel = random_inputs(seed, (2, 5, 6), 3)
        assert_tree_allclose(conv(jnp.asarray(x), jnp.asarray(kernel)), reference(x, kernel))


# ---------------------------------------------------------------------------------------
# Bad input


X = jnp.ones((2, 5, 6), jnp.float32)
KERNEL = jnp.ones((2, 3, 5, 4), jnp.complex64)


@checker_modes
@pytest.mark.parametrize(
    "x, kernel, names, exception",
    [
        (X[0], KERNEL, "x", ValueError),  # rank 2
        (X[None], KERNEL, "x", ValueError),  # rank 4 (a batch: use vmap)
        (X, KERNEL[0], "kernel", ValueError),  # rank 3
        (X, KERNEL[:1], ("x", "kernel"), ValueError),  # 1 input channel vs 2
        (X, KERNEL[:, :, :4], ("x", "kernel"), ValueError),  # height 4 vs 5
        (X, KERNEL[:, :, :, :3], ("x", "kernel"), ValueError),  # wf 3 vs 6 // 2 + 1
        (X, jnp.ones((2, 3, 5, 6), jnp.complex64), ("x", "kernel"), ValueError),  # full w
        (X, KERNEL.real, "kernel", TypeError),  # not complex
        (X.astype(jnp.complex64), KERNEL, "x", TypeError),  # complex image
        (np.ones((2, 5, 6)).tolist(), KERNEL, "x", TypeError),  # not an array
    ],
    ids=[
        "x-rank-2",
        "x-rank-4",
        "kernel-rank-3",
        "channels",
        "height",
        "width",
        "full-width-kernel",
        "real-kernel",
        "complex-x",
        "list-x",
    ],
)
def test_spectral_conv_bad_input(x, kernel, names, exception, checker):
    with raises_naming(names, exception, checker=checker):
        cfconv.spectral_conv(x, kernel)


@checker_modes
@pytest.mark.parametrize(
    "x_hat, kernel, names, exception",
    [
        (X.astype(jnp.complex64)[:, :, :4], KERNEL[:1], ("x_hat", "kernel"), ValueError),
        (X[:, :, :4], KERNEL, "x_hat", TypeError),  # real x_hat
        (X.astype(jnp.complex64)[:, :, :4], KERNEL.real, "kernel", TypeError),
        (X.astype(jnp.complex64), KERNEL[:, :, :, :3], ("x_hat", "kernel"), ValueError),
    ],
    ids=["channels", "real-x_hat", "real-kernel", "grid"],
)
def test_fourier_mix_bad_input(x_hat, kernel, names, exception, checker):
    with raises_naming(names, exception, checker=checker):
        cfconv.fourier_mix(x_hat, kernel)


# ---------------------------------------------------------------------------------------
# kernel_concentration


def test_kernel_concentration_of_a_known_spatial_kernel():
    """A spatial kernel with nine ones around the origin (wrapping) and a 2 far away:
    9 of its 13 units of energy lie within 3x3, 1 at the origin itself."""
    spatial = np.zeros((2, 3, 8, 6))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            spatial[0, 1, dy % 8, dx % 6] = 1.0
    spatial[0, 1, 4, 3] = 2.0
    kernel = jnp.asarray(np.fft.rfft2(spatial), jnp.complex64)
    got = cfconv.kernel_concentration(kernel, (8, 6))
    np.testing.assert_allclose(got, 9 / 13, rtol=1e-5)
    np.testing.assert_allclose(cfconv.kernel_concentration(kernel, (8, 6), taps=1), 1 / 13,
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(cfconv.kernel_concentration(kernel, (8, 6), taps=5), 9 / 13,
                               rtol=1e-5)  # fmt: skip


@hypothesis.given(shape=image_shapes, cout=out_channels, seed=seeds)
def test_kernel_concentration_matches_numpy(shape, cout, seed):
    cin, h, w = shape
    rng = np.random.default_rng(seed)
    spatial = rng.normal(size=(cin, cout, h, w))
    kernel = jnp.asarray(np.fft.rfft2(spatial), jnp.complex64)
    taps = min(h, w) if min(h, w) % 2 else min(h, w) - 1
    for t in sorted({1, 3, taps}):
        if t > min(h, w):
            continue
        rows = [d % h for d in range(-(t // 2), t // 2 + 1)]
        columns = [d % w for d in range(-(t // 2), t // 2 + 1)]
        energy = spatial**2
        want = energy[..., rows, :][..., columns].sum() / energy.sum()
        got = cfconv.kernel_concentration(kernel, (h, w), taps=t)
        np.testing.assert_allclose(got, want, rtol=1e-4)


@checker_modes
@pytest.mark.parametrize(
    "shape, taps, names, exception",
    [
        ((8, 8), 2, "taps", ValueError),  # even
        ((8, 8), 9, "taps", ValueError),  # wider than the image
        ((8, 8), 0, "taps", ValueError),
        ((8, 6), 3, ("kernel", "spatial_shape"), ValueError),  # the kernel is for 8x8
        ((8,), 3, "spatial_shape", ValueError),
    ],
)
def test_kernel_concentration_bad_input(shape, taps, names, exception, checker):
    kernel = jnp.ones((1, 2, 8, 5), jnp.complex64)
    with raises_naming(names, exception, checker=checker):
        cfconv.kernel_concentration(kernel, shape, taps=taps)
    with raises_naming("kernel", TypeError, checker=checker):  # real, not complex
        cfconv.kernel_concentration(jnp.ones((1, 2, 8, 5)), (8, 8))
