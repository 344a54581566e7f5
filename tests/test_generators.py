"""Kernel generators: parameter counts, layouts against a numpy reference, chunking."""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cfconv
from helpers import assert_tree_allclose, checker_modes, raises_naming
from strategies import parameterizations, seeds


def _mlp_params(in_size, hidden):
    """Hand count for one scalar-output MLP: weights plus biases of each layer."""
    widths = [in_size, *hidden, 1]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


@pytest.mark.parametrize(
    "parameterization, in_size, num_mlps",
    [("hw", 2, 3 * 5), ("hw_cin", 3, 5), ("hw_cout", 3, 3), ("hw_cin_cout", 4, 1)],
)
@pytest.mark.parametrize("hidden", [(2,), (8, 4), (32, 32, 32, 16, 16, 16, 8, 8, 8)])
def test_parameter_count(parameterization, in_size, num_mlps, hidden):
    generator = cfconv.KernelGenerator(3, 5, parameterization, hidden, key=jax.random.key(0))
    # Real and imaginary MLPs: twice the MLPs of paper Table 1's "# of MLPs" / 2.
    assert cfconv.parameter_count(generator) == 2 * num_mlps * _mlp_params(in_size, hidden)


def test_paper_generator_sizes():
    # The paper's single MLP [32, 32, 32, 16, 16, 16, 8, 8, 8, 1] on 4 coordinates:
    # 4*32+32 + 2*(32*32+32) + 32*16+16 + 2*(16*16+16) + 16*8+8 + 2*(8*8+8) + 8*1+1 = 3633.
    generator = cfconv.KernelGenerator(32, 32, "hw_cin_cout", key=jax.random.key(0))
    assert cfconv.parameter_count(generator) == 2 * 3633
    # The paper's "hw" MLPs [2, 1] on 2 coordinates: 2*2+2 + 2*1+1 = 9 per MLP.
    generator = cfconv.KernelGenerator(3, 32, "hw", key=jax.random.key(0))
    assert cfconv.parameter_count(generator) == 2 * 3 * 32 * 9


def _numpy_mlp(generator_stack, index, x):
    """Evaluate MLP `index` of a stack at points `x` in float64 numpy."""
    layers = generator_stack.layers
    activation = generator_stack.activation
    h = np.asarray(x, np.float64)
    for n, layer in enumerate(layers):
        weight = np.asarray(layer.weight[index], np.float64)
        bias = np.asarray(layer.bias[index], np.float64)
        h = h @ weight.T + bias
        if n < len(layers) - 1:
            h = np.asarray(activation(jnp.asarray(h)), np.float64)
    return h[..., 0]


def _reference_kernel(generator, h, w, kind):
    """Build the kernel entry by entry from the paper's definitions, in numpy."""
    cin, cout = generator.in_channels, generator.out_channels
    wf = w // 2 + 1
    if kind == "frequency":
        fy_axis = 2 * np.fft.fftfreq(h)
        fx_axis = 2 * np.fft.rfftfreq(w)
    else:
        fy_axis = np.linspace(-1, 1, h) if h > 1 else np.zeros(1)
        fx_axis = np.linspace(-1, 1, wf) if wf > 1 else np.zeros(1)
    ci_axis = np.linspace(-1, 1, cin) if cin > 1 else np.zeros(1)
    co_axis = np.linspace(-1, 1, cout) if cout > 1 else np.zeros(1)
    kernel = np.zeros((cin, cout, h, wf), np.complex128)
    p = generator.parameterization
    for i in range(cin):
        for o in range(cout):
            fy, fx = np.meshgrid(fy_axis, fx_axis, indexing="ij")
            ci = np.full_like(fy, ci_axis[i])
            co = np.full_like(fy, co_axis[o])
            if p == "hw":
                index, x = i * cout + o, [fy, fx]
            elif p == "hw_cin":  # one MLP per output channel, conditioned on c_in
                index, x = o, [ci, fy, fx]
            elif p == "hw_cout":  # one MLP per input channel, conditioned on c_out
                index, x = i, [co, fy, fx]
            else:
                index, x = 0, [ci, co, fy, fx]
            x = np.stack(x, axis=-1)
            kernel[i, o] = _numpy_mlp(generator.real, index, x) + 1j * _numpy_mlp(
                generator.imag, index, x
            )
    return kernel


@hypothesis.given(
    parameterization=parameterizations,
    seed=seeds,
    spatial=st.sampled_from([(4, 5), (5, 4), (3, 3)]),
    kind=st.sampled_from(["frequency", "index"]),
)
def test_materialize_matches_reference(parameterization, seed, spatial, kind):
    generator = cfconv.KernelGenerator(
        2, 3, parameterization, (6, 5), coordinates=kind, key=jax.random.key(seed)
    )
    kernel = generator.materialize(spatial)
    assert kernel.shape == (2, 3, spatial[0], spatial[1] // 2 + 1)
    assert kernel.dtype == jnp.complex64
    expected = _reference_kernel(generator, *spatial, kind)
    np.testing.assert_allclose(np.asarray(kernel), expected, rtol=1e-5, atol=1e-5)


@hypothesis.given(parameterization=parameterizations, seed=seeds)
def test_pointwise_evaluation_matches_materialize(parameterization, seed):
    key_generator, key_positions = jax.random.split(jax.random.key(seed))
    generator = cfconv.KernelGenerator(2, 3, parameterization, (6,), key=key_generator)
    kernel = generator.materialize((6, 5))
    positions = cfconv.sample_positions(key_positions, kernel.shape, 40)
    values = generator(positions, (6, 5))
    assert values.shape == (40,)
    assert_tree_allclose(values, kernel.reshape(-1)[positions])


@pytest.mark.parametrize("parameterization", ["hw", "hw_cin", "hw_cout", "hw_cin_cout"])
@pytest.mark.parametrize("chunk_size, unroll", [(1, 1), (7, 2), (64, 1), (10_000, 3)])
def test_chunked_materialize_matches_dense(parameterization, chunk_size, unroll):
    generator = cfconv.KernelGenerator(2, 3, parameterization, (5,), key=jax.random.key(1))
    dense = generator.materialize((5, 6))
    chunked = generator.materialize((5, 6), chunk_size=chunk_size, unroll=unroll)
    assert_tree_allclose(dense, chunked)

    def loss(g, **kwargs):
        k = g.materialize((5, 6), **kwargs)
        return jnp.sum(jnp.cos(jnp.real(k)) * jnp.imag(k))

    dense_grad = eqx.filter_grad(loss)(generator)
    chunked_grad = eqx.filter_grad(loss)(generator, chunk_size=chunk_size, unroll=unroll)
    assert_tree_allclose(dense_grad, chunked_grad, rtol=1e-4, atol=1e-5)


def test_other_resolution():
    generator = cfconv.KernelGenerator(1, 2, key=jax.random.key(0))
    small = generator.materialize((8, 8))
    large = generator.materialize((16, 16))
    # Physical frequency coordinates: frequency k/8 of the 8x8 grid is frequency 2k/16 of
    # the 16x16 grid (every other row and column there), and gets the same value.
    assert_tree_allclose(small, large[:, :, ::2, ::2])


def test_mlp_widths_and_stack():
    mlp = cfconv.MLP(4, (3, 2), key=jax.random.key(0))
    assert [layer.weight.shape for layer in mlp.layers] == [(3, 4), (2, 3), (1, 2)]
    assert mlp(jnp.ones(4)).shape == ()
    stack = cfconv.MLP.stack(5, 4, (3, 2), key=jax.random.key(0))
    assert [layer.weight.shape for layer in stack.layers] == [(5, 3, 4), (5, 2, 3), (5, 1, 2)]
    assert cfconv.parameter_count(stack) == 5 * cfconv.parameter_count(mlp)
    # The stacked MLPs are independent draws.
    assert not np.allclose(stack.layers[0].weight[0], stack.layers[0].weight[1])


def test_mlp_init():
    """He: hidden weights of variance 2 / fan_in, output 1 / fan_in, zero biases.
    Equinox: uniform in +-1 / sqrt(fan_in), biases included."""
    fan_in = 400
    he = cfconv.MLP(fan_in, (300, 300), key=jax.random.key(1))
    for layer, variance in zip(he.layers, [2 / fan_in, 2 / 300, 1 / 300]):
        w = np.asarray(layer.weight, np.float64)
        # A mean of n uniform squares: relative standard error sqrt(0.8 / n) < 0.1 here.
        np.testing.assert_allclose(np.mean(w**2), variance, rtol=0.25)
        assert np.all(np.abs(w) <= np.sqrt(3 * variance) * (1 + 1e-6))
        assert not np.any(np.asarray(layer.bias))
    eqx_init = cfconv.MLP(fan_in, (300,), init="equinox", key=jax.random.key(1))
    w, b = (np.asarray(a, np.float64) for a in (eqx_init.layers[0].weight, eqx_init.layers[0].bias))
    np.testing.assert_allclose(np.mean(w**2), 1 / (3 * fan_in), rtol=0.25)
    assert np.max(np.abs(b)) <= 1 / np.sqrt(fan_in) and np.any(b)


def test_activation_is_used():
    key = jax.random.key(3)
    default = cfconv.KernelGenerator(1, 1, "hw", (8,), key=key).materialize((6, 6))
    tanh = cfconv.KernelGenerator(1, 1, "hw", (8,), jnp.tanh, key=key).materialize((6, 6))
    assert not np.allclose(default, tanh)


@pytest.mark.parametrize(
    "parameterization, columns",
    [("hw", ()), ("hw_cin", (3,)), ("hw_cout", (5,)), ("hw_cin_cout", (3, 5))],
)
def test_first_layer_scales(parameterization, columns):
    # The scales multiply the first layer's initial weights column by column (channel
    # coordinates by channel_scale * (n - 1) / 2, then fy and fx by frequency_scale) and
    # change nothing else.
    key = jax.random.key(4)
    plain = cfconv.KernelGenerator(
        3, 5, parameterization, (4, 4), channel_scale=None, frequency_scale=1.0, key=key
    )  # the weights as initialised
    scaled = cfconv.KernelGenerator(
        3, 5, parameterization, (4, 4), channel_scale=3.0, frequency_scale=0.5, key=key
    )
    expected = [3.0 * (n - 1) / 2 for n in columns] + [0.5, 0.5]
    for part in ("real", "imag"):
        a, b = getattr(plain, part), getattr(scaled, part)
        np.testing.assert_allclose(
            np.asarray(b.layers[0].weight), np.asarray(a.layers[0].weight) * expected, rtol=1e-6
        )
        rest = lambda m: (m.layers[0].bias, m.layers[1:])  # noqa: E731
        assert_tree_allclose(rest(b), rest(a))


def _shared_energy(kernel, h, w):
    """The fraction of the spatial kernels' energy in their mean over channel pairs."""
    spatial = np.fft.irfft2(np.asarray(kernel, np.complex128), s=(h, w))
    flat = spatial.reshape(-1, h * w)
    return flat.shape[0] * np.sum(flat.mean(axis=0) ** 2) / np.sum(flat**2)


@pytest.mark.parametrize("seed", [0, 1])
def test_channel_pairs_start_distinct(seed):
    # KernelGenerator's "Initialisation": the paper's deep ReLU MLP starts with most of
    # the kernel shared by every channel pair; the default sine MLP with scaled channel
    # coordinates starts with a kernel of its own for every pair.
    key = jax.random.key(seed)
    relu = cfconv.KernelGenerator(
        32, 32, activation=jax.nn.relu, channel_scale=None, frequency_scale=1.0, key=key
    )
    sine = cfconv.KernelGenerator(32, 32, key=key)
    assert _shared_energy(relu.materialize((16, 16)), 16, 16) > 0.5
    kernel = sine.materialize((16, 16))
    assert _shared_energy(kernel, 16, 16) < 0.05
    # ... and starts mostly within the 3x3 neighbourhood of the origin.
    energy = np.fft.irfft2(np.asarray(kernel, np.complex128), s=(16, 16)) ** 2
    near = energy[..., [0, 1, 15], :][..., [0, 1, 15]]
    assert np.sum(near) > 0.5 * np.sum(energy)


_KEY = jax.random.key(0)


@checker_modes
@pytest.mark.parametrize(
    "make, name, exception",
    [
        (
            lambda: cfconv.KernelGenerator(2, 2, "hw_cout_cin", key=_KEY),
            "parameterization",
            ValueError,
        ),
        (
            lambda: cfconv.KernelGenerator(2, 2, coordinates="polar", key=_KEY),
            "coordinates",
            ValueError,
        ),
        (lambda: cfconv.KernelGenerator(2, 2, hidden=(4, 0), key=_KEY), "hidden", ValueError),
        (lambda: cfconv.KernelGenerator(0, 2, key=_KEY), "in_channels", ValueError),
        (
            lambda: cfconv.KernelGenerator(2, 2, channel_scale=0.0, key=_KEY),
            "channel_scale",
            ValueError,
        ),
        (
            lambda: cfconv.KernelGenerator(2, 2, frequency_scale="2", key=_KEY),  # pyright: ignore
            "frequency_scale",
            TypeError,
        ),
        (
            lambda: cfconv.KernelGenerator(2, 2, key=_KEY).materialize((4,)),
            "spatial_shape",
            ValueError,
        ),
        (
            lambda: cfconv.KernelGenerator(2, 2, key=_KEY).materialize((4, 4), chunk_size=0),
            "chunk_size",
            ValueError,
        ),
        (
            lambda: cfconv.KernelGenerator(2, 2, key=_KEY)(jnp.zeros(3), (4, 4)),
            "positions",
            TypeError,
        ),
        (lambda: cfconv.MLP(2, (3,), activation=None, key=_KEY), "activation", TypeError),
        (lambda: cfconv.MLP(2, (3,), init="xavier", key=_KEY), "init", ValueError),  # pyright: ignore
    ],  # fmt: skip
    ids=[
        "parameterization",
        "coordinates",
        "hidden",
        "channels",
        "channel_scale",
        "frequency_scale",
        "spatial_shape",
        "chunk_size",
        "float-positions",
        "activation",
        "init",
    ],  # fmt: skip
)
def test_bad_arguments(make, name, exception, checker):
    with raises_naming(name, exception, checker=checker):
        make()
