"""The spatial-domain kernel baseline, coordinate encodings, and kernels at other sizes."""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cfconv
from helpers import assert_tree_allclose, checker_modes, raises_naming
from strategies import seeds


def _mlp_params(in_size, hidden):
    widths = [in_size, *hidden, 1]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def _numpy_mlp(stack, index, x):
    """MLP `index` of a stack at the points `x` (last axis: inputs), in float64 numpy."""
    h = np.asarray(x, np.float64)
    for n, layer in enumerate(stack.layers):
        h = h @ np.asarray(layer.weight[index], np.float64).T + np.asarray(
            layer.bias[index], np.float64
        )
        if n < len(stack.layers) - 1:
            h = np.maximum(h, 0.0)  # ReLU, the default activation
    return h[..., 0]


def _count(tree):
    """Float entries of a shape-only PyTree (from `eqx.filter_eval_shape`): building the
    shapes compiles nothing."""
    leaves = jax.tree.leaves(tree)
    return sum(
        int(np.prod(x.shape))
        for x in leaves
        if isinstance(x, jax.ShapeDtypeStruct) and jnp.issubdtype(x.dtype, jnp.inexact)
    )


def _signed_offsets(n):
    """Offsets 0, 1, ..., then negative ones, of a circular axis of length n, over n/2."""
    return np.array([k if k < (n + 1) // 2 else k - n for k in range(n)]) / (n / 2)


def _reference_kernel(generator, h, w, rff=None):
    """The spatial kernel entry by entry from the definitions, in numpy float64."""
    cin, cout = generator.in_channels, generator.out_channels
    dy, dx = np.meshgrid(_signed_offsets(h), _signed_offsets(w), indexing="ij")
    offsets = np.stack([dy, dx], axis=-1)
    if rff is not None:
        phase = 2 * np.pi * offsets @ np.asarray(rff, np.float64).T
        offsets = np.concatenate([np.cos(phase), np.sin(phase)], axis=-1)
    ci_axis = np.linspace(-1, 1, cin) if cin > 1 else np.zeros(1)
    co_axis = np.linspace(-1, 1, cout) if cout > 1 else np.zeros(1)
    kernel = np.zeros((cin, cout, h, w))
    for i in range(cin):
        for o in range(cout):
            ci = np.full((h, w, 1), ci_axis[i])
            co = np.full((h, w, 1), co_axis[o])
            index, channels = {
                "hw": (i * cout + o, []),
                "hw_cin": (o, [ci]),  # one MLP per output channel, conditioned on c_in
                "hw_cout": (i, [co]),  # one MLP per input channel, conditioned on c_out
                "hw_cin_cout": (0, [ci, co]),
            }[generator.parameterization]
            x = np.concatenate([*channels, offsets], axis=-1)
            for b in range(generator.branches):
                kernel[i, o] += _numpy_mlp(generator.mlp, index * generator.branches + b, x)
    return kernel / np.sqrt(h * w)


def _circular_conv(x, kernel):
    """y[o, p] = sum_i sum_q kernel[i, o, q] x[i, p - q], indices modulo the image size."""
    _, h, w = x.shape
    y = np.zeros((kernel.shape[1], h, w))
    for qy in range(h):
        for qx in range(w):
            shifted = np.roll(x, (qy, qx), axis=(1, 2))  # shifted[i, p] = x[i, p - q]
            y += np.einsum("io,ihw->ohw", kernel[:, :, qy, qx], shifted)
    return y


@pytest.mark.parametrize(
    "parameterization, in_size, num_mlps",
    [("hw", 2, 3 * 5), ("hw_cin", 3, 5), ("hw_cout", 3, 3), ("hw_cin_cout", 4, 1)],
)
def test_parameter_count_matches_fourier_generator(parameterization, in_size, num_mlps):
    key = jax.random.key(0)
    shapes = eqx.filter_eval_shape
    spatial = shapes(cfconv.SpatialKernelGenerator, 3, 5, parameterization, (4,), key=key)
    fourier = shapes(cfconv.KernelGenerator, 3, 5, parameterization, (4,), key=key)
    expected = 2 * num_mlps * _mlp_params(in_size, (4,))
    # The Fourier generator's trainable parameters are its real and imaginary MLPs.
    assert _count(spatial) == _count((fourier.real, fourier.imag)) == expected


def test_parameter_count_of_variants():
    key = jax.random.key(0)
    hidden = (8, 4)
    shapes = eqx.filter_eval_shape
    single = shapes(cfconv.SpatialKernelGenerator, 3, 5, "hw_cin", hidden, branches=1, key=key)
    assert _count(single) == 5 * _mlp_params(3, hidden)
    rff = cfconv.RandomFourierFeatures(2, 6, key=key)
    encoded = shapes(cfconv.SpatialKernelGenerator, 3, 5, "hw_cin", hidden, features=rff, key=key)
    # 12 features replace the 2 offsets; the 6 x 2 fixed frequencies are float arrays too.
    assert rff.num_fixed == 12
    assert _count(encoded) == 2 * 5 * _mlp_params(1 + 12, hidden) + 12


def test_offset_coordinates():
    dy, dx = cfconv.offset_coordinates(5, 4)
    assert dy.shape == dx.shape == (5, 4)
    np.testing.assert_allclose(dy[:, 0], [0, 0.4, 0.8, -0.8, -0.4], atol=1e-7)
    np.testing.assert_allclose(dx[0], [0, 0.5, -1, -0.5], atol=1e-7)
    np.testing.assert_array_equal(dy[:, 1:], np.broadcast_to(dy[:, :1], (5, 3)))


@pytest.mark.parametrize(
    "parameterization, spatial",
    [("hw", (4, 5)), ("hw_cin", (5, 4)), ("hw_cout", (3, 3)), ("hw_cin_cout", (4, 4))],
)
@hypothesis.settings(max_examples=1)
@hypothesis.given(seed=seeds)
def test_kernel_matches_reference(parameterization, spatial, seed):
    generator = cfconv.SpatialKernelGenerator(
        2, 3, parameterization, (6, 5), key=jax.random.key(seed)
    )
    kernel = generator.kernel(spatial)
    assert kernel.shape == (2, 3, *spatial)
    np.testing.assert_allclose(kernel, _reference_kernel(generator, *spatial), rtol=1e-5, atol=1e-6)


@hypothesis.settings(max_examples=2)
@hypothesis.given(seed=seeds, spatial=st.sampled_from([(4, 5), (6, 6)]))
def test_kernel_with_fourier_features_matches_reference(seed, spatial):
    k_features, k_mlp = jax.random.split(jax.random.key(seed))
    rff = cfconv.RandomFourierFeatures(2, 4, scale=2.0, key=k_features)
    generator = cfconv.SpatialKernelGenerator(2, 2, "hw_cin_cout", (6,), features=rff, key=k_mlp)
    expected = _reference_kernel(generator, *spatial, rff=rff.frequencies)
    np.testing.assert_allclose(generator.kernel(spatial), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("parameterization", ["hw", "hw_cin_cout"])
@pytest.mark.parametrize("shape", [(2, 5, 6), (1, 4, 3)])
def test_materialize_is_circular_convolution(parameterization, shape):
    # The requirement: FFT convolution with the materialized kernel is a direct
    # circular convolution with the generator's spatial kernel.
    cin, h, w = shape
    k_gen, k_x = jax.random.split(jax.random.key(7))
    generator = cfconv.SpatialKernelGenerator(cin, 3, parameterization, (6, 4), key=k_gen)
    kernel = generator.materialize((h, w))
    assert kernel.shape == generator.grid_shape((h, w)) == (cin, 3, h, w // 2 + 1)
    x = jax.random.normal(k_x, shape)
    y = cfconv.spectral_conv(x, kernel)
    expected = _circular_conv(np.asarray(x, np.float64), _reference_kernel(generator, h, w))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_chunked_and_pointwise_match_dense():
    generator = cfconv.SpatialKernelGenerator(2, 3, "hw_cout", (5,), key=jax.random.key(1))
    dense = generator.kernel((5, 6))
    assert_tree_allclose(dense, generator.kernel((5, 6), chunk_size=7, unroll=2))

    def loss(g, **kwargs):
        return jnp.sum(jnp.cos(g.kernel((5, 6), **kwargs)))

    assert_tree_allclose(
        eqx.filter_grad(loss)(generator),
        eqx.filter_grad(loss)(generator, chunk_size=7),
        rtol=1e-4,
        atol=1e-6,
    )
    kernel = generator.materialize((5, 6))
    positions = jnp.array([0, 5, 17, 89, kernel.size - 1])
    assert_tree_allclose(generator(positions, (5, 6)), kernel.reshape(-1)[positions])


def test_drop_in_kernel_source_for_the_layer():
    # With the generator swapped in, the layer's dense strategies convolve with the
    # spatial kernel (plus the bias).
    k_layer, k_gen, k_x = jax.random.split(jax.random.key(3), 3)
    layer = cfconv.CFConv2d(2, 3, hidden=(4,), key=k_layer)
    generator = cfconv.SpatialKernelGenerator(2, 3, "hw_cin", (6,), key=k_gen)
    layer = eqx.tree_at(lambda m: m.generator, layer, generator)
    layer = eqx.tree_at(lambda m: m.bias, layer, jnp.array([0.5, -1.0, 2.0]))
    state = layer.init_state((5, 4), key=k_x)
    x = jax.random.normal(k_x, (2, 2, 5, 4))
    expected = [
        _circular_conv(np.asarray(xi, np.float64), _reference_kernel(generator, 5, 4))
        + np.array([0.5, -1.0, 2.0])[:, None, None]
        for xi in x
    ]
    # Chunked passes `chunk_size` and `unroll` to `materialize`; Dense calls it plainly.
    y, new_state = layer(x, state, strategy=cfconv.Chunked(chunk_size=8))
    np.testing.assert_allclose(y, np.stack(expected), rtol=1e-4, atol=1e-5)
    assert_tree_allclose(new_state.kernel, generator.materialize((5, 4)))


def test_random_fourier_features():
    key = jax.random.key(0)
    rff = cfconv.RandomFourierFeatures(3, 5, scale=4.0, key=key)
    x = jax.random.uniform(jax.random.key(1), (7, 3), minval=-1, maxval=1)
    features = rff(x)
    assert features.shape == (7, 10) and rff.out_size == 10
    b = np.asarray(rff.frequencies, np.float64)
    phase = 2 * np.pi * np.asarray(x, np.float64) @ b.T
    np.testing.assert_allclose(
        features, np.concatenate([np.cos(phase), np.sin(phase)], -1), atol=2e-5
    )
    # The scale is the standard deviation of the frequencies (60 draws: loose bounds).
    big = cfconv.RandomFourierFeatures(2, 30, scale=4.0, key=key).frequencies
    assert 2.5 < float(jnp.std(big)) < 5.5


def test_fixed_frequencies_are_not_trained():
    rff = cfconv.RandomFourierFeatures(2, 4, key=jax.random.key(0))
    generator = cfconv.SpatialKernelGenerator(1, 1, "hw", (4,), features=rff,
                                              key=jax.random.key(1))  # fmt: skip

    def loss(g):
        return jnp.sum(g.kernel((4, 4)) ** 2)

    grads = eqx.filter_grad(loss)(generator)
    assert grads.features is not None
    np.testing.assert_array_equal(grads.features.frequencies, 0.0)
    assert float(jnp.abs(grads.mlp.layers[0].weight).max()) > 0
    optimizer = optax.adam(0.1)
    params = eqx.filter(generator, eqx.is_inexact_array)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    trained = eqx.apply_updates(generator, updates)
    np.testing.assert_array_equal(trained.features.frequencies, rff.frequencies)
    assert not np.allclose(trained.mlp.layers[0].weight, generator.mlp.layers[0].weight)


def test_sine_features():
    sine = cfconv.SineFeatures(2, 6, omega=30.0, key=jax.random.key(0))
    assert np.all(np.abs(np.asarray(sine.weight)) <= 0.5)
    x = jax.random.uniform(jax.random.key(1), (9, 2), minval=-1, maxval=1)
    w, b = np.asarray(sine.weight, np.float64), np.asarray(sine.bias, np.float64)
    expected = np.sin(30.0 * (np.asarray(x, np.float64) @ w.T + b))
    np.testing.assert_allclose(sine(x), expected, atol=1e-4)
    generator = cfconv.SpatialKernelGenerator(2, 2, "hw_cin_cout", (4,), features=sine,
                                              key=jax.random.key(2))  # fmt: skip
    # 6 sine units replace the 2 offsets; W and b (2*6 + 6) are trained.
    assert cfconv.parameter_count(generator) == 2 * _mlp_params(2 + 6, (4,)) + 18


# Resolution change: a Fourier generator with physical frequency coordinates is the same
# pixel-scale filter at any size. On an image that repeats with period (h, w), the kernel
# materialized at (2h, 2w) gives exactly the output of the (h, w) kernel, repeated: the
# (h, w) frequencies are every other (2h, 2w) frequency, where both kernels agree.


@pytest.mark.parametrize("size", [(6, 6), (5, 4)])
def test_physical_coordinates_keep_outputs_at_twice_the_size(size):
    h, w = size
    k_gen, k_x = jax.random.split(jax.random.key(4))
    generator = cfconv.KernelGenerator(2, 2, "hw_cin_cout", (16, 16), key=k_gen)
    x = jax.random.normal(k_x, (2, h, w))
    y_small = cfconv.spectral_conv(x, generator.materialize((h, w)))
    tiled = jnp.tile(x, (1, 2, 2))
    y_large = cfconv.spectral_conv(tiled, generator.materialize((2 * h, 2 * w)))
    assert_tree_allclose(y_large, jnp.tile(y_small, (1, 2, 2)), rtol=1e-4, atol=1e-5)


def test_index_coordinates_change_the_filter_at_twice_the_size():
    # The paper's index coordinates spread each grid over [-1, 1]: at another size the
    # same coordinate is another frequency, and the outputs differ.
    k_gen, k_x = jax.random.split(jax.random.key(4))
    generator = cfconv.KernelGenerator(2, 2, "hw_cin_cout", (16, 16), coordinates="index",
                                       key=k_gen)  # fmt: skip
    x = jax.random.normal(k_x, (2, 6, 6))
    y_small = cfconv.spectral_conv(x, generator.materialize((6, 6)))
    y_large = cfconv.spectral_conv(jnp.tile(x, (1, 2, 2)), generator.materialize((12, 12)))
    difference = jnp.linalg.norm(y_large[:, :6, :6] - y_small) / jnp.linalg.norm(y_small)
    assert float(difference) > 0.01


def test_spatial_generator_stretches_with_the_image():
    # Offsets are relative to the image: at twice the size, every other entry of the kernel
    # is the smaller kernel's entry, with values halved by the 1/sqrt(hw) scale.
    generator = cfconv.SpatialKernelGenerator(1, 2, "hw_cin_cout", (8,), key=jax.random.key(5))
    small = generator.kernel((6, 4))
    large = generator.kernel((12, 8))
    assert_tree_allclose(large[:, :, ::2, ::2], small / 2)


_KEY = jax.random.key(0)


@checker_modes
@pytest.mark.parametrize(
    "make, name, exception",
    [
        (
            lambda: cfconv.SpatialKernelGenerator(2, 2, "hw_x", key=_KEY),  # pyright: ignore[reportArgumentType]
            "parameterization",
            ValueError,
        ),
        (lambda: cfconv.SpatialKernelGenerator(0, 2, key=_KEY), "in_channels", ValueError),
        (
            lambda: cfconv.SpatialKernelGenerator(2, 2, hidden=(4,), branches=0, key=_KEY),
            "branches",
            ValueError,
        ),
        (
            lambda: cfconv.SpatialKernelGenerator(
                2, 2, features=cfconv.RandomFourierFeatures(3, 2, key=_KEY), key=_KEY
            ),
            "features",
            ValueError,
        ),
        (
            lambda: cfconv.SpatialKernelGenerator(2, 2, hidden=(4,), key=_KEY).kernel((4,)),  # pyright: ignore[reportArgumentType]
            "spatial_shape",
            ValueError,
        ),
        (
            lambda: cfconv.SpatialKernelGenerator(2, 2, hidden=(4,), key=_KEY).kernel(
                (4, 4), chunk_size=0
            ),
            "chunk_size",
            ValueError,
        ),
        (lambda: cfconv.RandomFourierFeatures(2, 4, scale=-1.0, key=_KEY), "scale", ValueError),
        (lambda: cfconv.SineFeatures(2, 0, key=_KEY), "num", ValueError),
        (lambda: cfconv.offset_coordinates(0, 3), "height", ValueError),
    ],  # fmt: skip
    ids=[
        "parameterization",
        "in_channels",
        "branches",
        "features",
        "spatial_shape",
        "chunk_size",
        "scale",
        "num",
        "height",
    ],  # fmt: skip
)
def test_bad_arguments(make, name, exception, checker):
    with raises_naming(name, exception, checker=checker):
        make()
