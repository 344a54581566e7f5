"""The paper's networks: parameter counts, the two-phase interface, initial scales, training."""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cfconv
import cfconv.models
from helpers import assert_tree_allclose, checker_modes, raises_naming


SMALL = (16, 16)  # image size of the behaviour tests
WIDTH = 8


def _small(name, *, num_classes=2, depth=3, seed=0, **kwargs) -> Any:
    # `Any`: the tests use attributes of the concrete classes (`layers`, `state_scales`).
    return cfconv.models.make_model(
        name, num_classes=num_classes, width=WIDTH, depth=depth, key=jax.random.key(seed),
        **kwargs,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------
# Parameter counts at the paper's size, against arithmetic written out here.


def _linear(n_in, n_out):
    return n_in * n_out + n_out


def _mlp(n_in, hidden):
    widths = [n_in, *hidden, 1]
    return sum(_linear(a, b) for a, b in zip(widths[:-1], widths[1:]))


# Head: global average pooling over 32 channels, Dense 128, Dense 64, one output logit.
HEAD = (32 * 128 + 128) + (128 * 64 + 64) + (64 * 1 + 1)
BIASES = 6 * 32  # one bias per output channel of each CF-Conv
PAIRS = 3 * 32 + 5 * 32 * 32  # (input, output) channel pairs over the six layers
PAPER_MLP = (32, 32, 32, 16, 16, 16, 8, 8, 8)

EXPECTED_COUNTS = {
    # 3x3 convolutions with bias, 3 -> 32 then five times 32 -> 32.
    "spatial": (3 * 3 * 3 * 32 + 32) + 5 * (3 * 3 * 32 * 32 + 32) + HEAD,
    # Per pair, a real and an imaginary MLP [2, 1] on (f_y, f_x): 2 * (2*2+2 + 2+1) = 18.
    "hw": 2 * ((2 * 2 + 2) + (2 * 1 + 1)) * PAIRS + BIASES + HEAD,
    # Per output channel, two MLPs [8, 8, 1] on (c_in, f_y, f_x): 3*8+8 + 8*8+8 + 8+1 = 113.
    "hw_cin": 2 * 6 * 32 * ((3 * 8 + 8) + (8 * 8 + 8) + (8 + 1)) + BIASES + HEAD,
    # Per input channel (3 in the first layer, 32 in the others), two MLPs of 113.
    "hw_cout": 2 * (3 + 5 * 32) * 113 + BIASES + HEAD,
    # Per layer, two MLPs [32, 32, 32, 16, 16, 16, 8, 8, 8, 1] on 4 inputs.
    "hw_cin_cout": 6 * 2 * 3633 + BIASES + HEAD,
}


def test_hand_arithmetic():
    # The numbers quoted in the `cfconv.models` docstring, and one MLP written out.
    assert HEAD == 12_545
    assert _mlp(4, PAPER_MLP) == 3633 == (
        (4 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 16 + 16) + 2 * (16 * 16 + 16)
        + (16 * 8 + 8) + 2 * (8 * 8 + 8) + (8 + 1)
    )  # fmt: skip
    assert _mlp(3, (8, 8)) == 113
    assert EXPECTED_COUNTS == {
        "spatial": 59_681,
        "hw": 106_625,
        "hw_cin": 56_129,
        "hw_cout": 49_575,
        "hw_cin_cout": 56_333,
    }
    # Same to the thousand as the paper's Table 4, except hw_cin_cout (56.3K against 59K).
    for name, paper in cfconv.models.PAPER_PARAMETER_COUNTS.items():
        if name != "hw_cin_cout":
            assert round(EXPECTED_COUNTS[name], -3) == paper


@pytest.fixture(scope="module")
def paper_model():
    return cfconv.models.CFConvNet(key=jax.random.key(0))


# The discrete Fourier reference is counted in `test_fourier_reference_model`.
@pytest.mark.parametrize("name", [n for n in cfconv.models.MODEL_NAMES if n != "fourier"])
def test_parameter_counts_at_paper_size(name, paper_model):
    if name == "hw_cin_cout":
        model = paper_model
    else:
        # The count does not depend on the initial scales: skip their calibration.
        kwargs: dict[str, Any] = {} if name == "spatial" else {"generator_init": "none"}
        model = cfconv.models.make_model(name, key=jax.random.key(0), **kwargs)
    assert cfconv.parameter_count(model) == EXPECTED_COUNTS[name]
    # The stored kernels are state, not parameters.
    assert not any(isinstance(leaf, cfconv.KernelState) for leaf in jax.tree.leaves(
        model, is_leaf=lambda x: isinstance(x, cfconv.KernelState)))  # fmt: skip


def test_sizes_are_arguments():
    model = cfconv.models.CFConvNet(
        in_channels=1, num_classes=5, width=4, depth=2, head=(6,), parameterization="hw",
        mlp_hidden=(3,), generator_init="none", key=jax.random.key(0),
    )  # fmt: skip
    generator_mlp = (2 * 3 + 3) + (3 + 1)
    expected = 2 * generator_mlp * (1 * 4 + 4 * 4) + 2 * 4 + (4 * 6 + 6) + (6 * 5 + 5)
    assert cfconv.parameter_count(model) == expected
    assert len(model.layers) == 2 and model.num_outputs == 5
    spatial = cfconv.models.SpatialCNN(1, 5, width=4, depth=2, head=(), key=jax.random.key(0))
    assert cfconv.parameter_count(spatial) == (9 * 4 + 4) + (9 * 16 + 4) + (4 * 5 + 5)


# ---------------------------------------------------------------------------------------
# The two-phase interface.


@eqx.filter_jit
def _batched(model, x, kernels):
    return jax.vmap(model, in_axes=(0, None))(x, kernels)


@pytest.mark.parametrize("name", ["spatial", "hw_cin_cout"])
@pytest.mark.parametrize("num_classes", [2, 10])
def test_output_shapes(name, num_classes):
    model = _small(name, num_classes=num_classes)
    assert model.num_outputs == (1 if num_classes == 2 else num_classes)
    assert model.num_classes == num_classes
    states = model.init_states(SMALL, key=jax.random.key(1))
    kernels, _ = model.kernels(states, SMALL, "stored")
    x = jax.random.normal(jax.random.key(2), (3, 3) + SMALL)
    logits = _batched(model, x, kernels)
    assert logits.shape == (3, model.num_outputs)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))


def test_spatial_cnn_has_no_kernel_phase():
    model = _small("spatial")
    states = model.init_states(SMALL, key=jax.random.key(0))
    assert states == ()
    kernels, new_states = model.kernels(states, SMALL, cfconv.Sparse(num=4))
    assert kernels == () and new_states == ()
    x = jax.random.normal(jax.random.key(1), (3,) + SMALL)
    assert_tree_allclose(model(x, ()), model(x))


@pytest.mark.parametrize("parameterization", ["hw", "hw_cin_cout"])
def test_kernels_per_layer(parameterization):
    model = _small(parameterization)
    states = model.init_states(SMALL, key=jax.random.key(1))
    grids = [(3, WIDTH, 16, 9), (WIDTH, WIDTH, 16, 9), (WIDTH, WIDTH, 16, 9)]
    assert [s.kernel.shape for s in states] == grids

    # Stored: the states' kernels, and the states unchanged.
    kernels, new_states = model.kernels(states, SMALL, cfconv.Stored())
    assert all(n is s for n, s in zip(new_states, states))
    assert all(k is s.kernel for k, s in zip(kernels, states))

    # Sparse: one kernel per layer, each layer sampling its own positions.
    sparse = cfconv.Sparse(num=64, rate=1.0, replace=False)
    kernels, new_states = eqx.filter_jit(model.kernels)(
        states, SMALL, sparse, key=jax.random.key(2)
    )
    assert all(isinstance(k, cfconv.SparseKernel) for k in kernels)
    assert [k.shape for k in kernels] == grids
    assert [k.dtype for k in kernels] == [jnp.complex64] * 3
    changed = [np.asarray(k.kernel != s.kernel) for k, s in zip(kernels, states)]
    assert [np.count_nonzero(c) for c in changed] == [64] * 3
    assert not np.array_equal(changed[1], changed[2])
    assert_tree_allclose(tuple(s.kernel for s in new_states), tuple(k.kernel for k in kernels))

    # Dense: the generators' kernels.
    kernels, _ = model.kernels(states, SMALL, "dense")
    assert_tree_allclose(kernels, tuple(layer.generator.materialize(SMALL)
                                        for layer in model.layers))  # fmt: skip


@pytest.mark.parametrize("name", ["spatial", "hw", "hw_cin_cout"])
def test_vmap_equals_loop(name):
    model = _small(name)
    states = model.init_states(SMALL, key=jax.random.key(1))
    kernels, _ = model.kernels(states, SMALL, cfconv.Sparse(num=256), key=jax.random.key(2))
    x = jax.random.normal(jax.random.key(3), (4, 3) + SMALL)
    batched = _batched(model, x, kernels)
    single = eqx.filter_jit(model)
    looped = jnp.stack([single(xi, kernels) for xi in x])
    assert_tree_allclose(batched, looped)
    # The examples are not mixed: different inputs give different logits.
    assert not np.allclose(np.asarray(batched[0]), np.asarray(batched[1]))


def test_phase_two_is_the_layers_then_the_head():
    model = _small("hw", num_classes=3)
    states = model.init_states(SMALL, key=jax.random.key(1))
    kernels, _ = model.kernels(states, SMALL, "stored")
    # A non-zero bias everywhere, so that the test sees it.
    model = eqx.tree_at(lambda m: [layer.bias for layer in m.layers], model,
                        [jnp.linspace(-0.3, 0.3, WIDTH)] * 3)  # fmt: skip
    x = np.asarray(jax.random.normal(jax.random.key(2), (3,) + SMALL), np.float64)
    h = x
    for layer, state in zip(model.layers, states):
        spectrum = np.einsum("ihw,iohw->ohw", np.fft.rfft2(h), np.asarray(state.kernel))
        h = np.fft.irfft2(spectrum, s=SMALL) + np.asarray(layer.bias)[:, None, None]
        h = np.maximum(h, 0)
    features = h.mean(axis=(1, 2))
    for i, linear in enumerate(model.head.layers):
        features = np.asarray(linear.weight) @ features + np.asarray(linear.bias)
        if i < len(model.head.layers) - 1:
            features = np.maximum(features, 0)
    assert_tree_allclose(model(jnp.asarray(x, jnp.float32), kernels),
                         features.astype(np.float32), rtol=1e-4, atol=1e-5)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Initial scales.


@pytest.mark.parametrize("cin, scale", [(3, 1.0), (32, 1.0), (32, 0.3)])
def test_variance_of_a_cf_conv(cin, scale):
    """E[y^2] = C_in E|K|^2 E[x^2] for kernels with independent entries, where
    E|K|^2 = 2 s^2 / 3 for parts uniform in [-s, s], except that irfft2 halves the power
    of the DC and Nyquist columns: a factor (1 - 1/W) for white input, and for post-ReLU
    input, whose mean carries 1/pi of its energy at DC, about (1 - 1/2pi)."""
    h = w = 32
    k_state, k_x = jax.random.split(jax.random.key(cin))
    kernel = cfconv.init_kernel_state(cin, 64, h, w, key=k_state, scale=scale).kernel
    conv = jax.jit(jax.vmap(cfconv.spectral_conv, in_axes=(0, None)))
    power = 2 * scale**2 / 3
    x = jax.random.normal(k_x, (16, cin, h, w))
    white = float(jnp.mean(jnp.square(conv(x, kernel))))
    assert white == pytest.approx(cin * power * (1 - 1 / w), rel=0.03)

    relu = jax.nn.relu(x)
    gain = float(jnp.mean(jnp.square(conv(relu, kernel))) / jnp.mean(jnp.square(relu)))
    dc = 1 / math.pi  # the mean's share of E[relu(x)^2]: (1 / 2pi) / (1 / 2)
    assert gain == pytest.approx(cin * power * ((1 - dc) * (1 - 1 / w) + dc / 2), rel=0.04)
    # `expected_gain` keeps the DC term, which matters (a factor 1.19), not the 1/W one.
    assert gain == pytest.approx(cfconv.models.expected_gain(cin, scale), rel=0.06)
    assert gain < 0.9 * cin * power


def test_default_state_scale():
    for cin in (1, 3, 32):
        s = cfconv.models.default_state_scale(cin)
        assert s == pytest.approx(math.sqrt(3 / (cin * (1 - 1 / (2 * math.pi)))))
        assert cfconv.models.expected_gain(cin, s) == pytest.approx(2.0)
    model = _small("hw")
    assert model.state_scales == (cfconv.models.default_state_scale(3),) + (
        cfconv.models.default_state_scale(WIDTH),) * 2  # fmt: skip
    states = model.init_states(SMALL, key=jax.random.key(0))
    for state, s in zip(states, model.state_scales):
        parts = np.stack([np.asarray(state.kernel.real), np.asarray(state.kernel.imag)])
        assert np.abs(parts).max() <= s and np.abs(parts).max() > 0.95 * s
    paper = _small("hw", state_scale=1.0)
    assert paper.state_scales == (1.0, 1.0, 1.0)


@eqx.filter_jit
def _activation_stds(model, x, kernels):
    """The std of the activations after each CF-Conv + ReLU, for a batch `x`."""
    stds = []
    h = x
    for layer, kernel in zip(model.layers, kernels):
        h = jax.nn.relu(jax.vmap(layer.apply, in_axes=(0, None))(h, kernel))
        stds.append(jnp.std(h))
    return jnp.stack(stds)


@eqx.filter_jit
def _kernels(model, states, size, strategy):
    # Jitted: materialising the paper-size generators eagerly, op by op, takes 30x longer.
    return model.kernels(states, size, strategy)[0]


def _stds(model, strategy, size=(32, 32)):
    states = model.init_states(size, key=jax.random.key(10))
    kernels = _kernels(model, states, size, strategy)
    x = jax.random.normal(jax.random.key(11), (4, 3) + size)
    return np.asarray(_activation_stds(model, x, kernels)) / float(jnp.std(x))


@pytest.mark.parametrize("strategy", ["stored", "dense"])
def test_default_init_keeps_activation_scale(paper_model, strategy):
    """At the paper's size (6 layers, 32 filters), with the default initialisation, the
    activations keep their scale through every layer, on both the stored-kernel and the
    generated path (for 32x32 images, though the generators are calibrated at 16x16)."""
    stds = _stds(paper_model, strategy)
    assert stds.shape == (6,)
    assert np.all((stds > 0.3) & (stds < 3)), stds


def test_paper_init_makes_activations_grow():
    """The paper's state, uniform in [-1, 1]: ~3x per layer after the first."""
    model = cfconv.models.CFConvNet(state_scale=1.0, key=jax.random.key(0))
    stds = _stds(model, "stored")
    assert np.all(np.diff(stds[1:]) > 0), stds
    assert stds[-1] > 30, stds


def test_generator_power_matches_state():
    """`generator_init="state"`: every MLP's output has the state's power per part,
    s^2 / 3, on the calibration grid. For the paper's ReLU hw_cin_cout generator that is
    not enough: its generated kernel's channels add coherently, and activations grow on
    the generated path."""
    for parameterization, per_mlp_axes in [("hw", (2, 3)), ("hw_cout", (1, 2, 3))]:
        model = _small(parameterization, generator_init="state")
        for layer, s in zip(model.layers, model.state_scales):
            kernel = layer.generator.materialize((16, 16))
            for part in (np.asarray(kernel.real), np.asarray(kernel.imag)):
                rms = np.sqrt(np.mean(part**2, axis=per_mlp_axes))
                np.testing.assert_allclose(rms, s / np.sqrt(3), rtol=1e-3)
    # The paper's ReLU generator: most of the kernel is shared by every channel pair.
    coherent = _small("hw_cin_cout", generator_init="state", generator="relu")
    assert _stds(coherent, "dense", size=SMALL)[-1] > 3  # at the paper's size, > 100
    # The default sine generator's channel pairs are nearly independent: no growth.
    sine = _stds(_small("hw_cin_cout", generator_init="state"), "dense", size=SMALL)
    assert np.all(sine < 2), sine
    calibrated = _stds(_small("hw_cin_cout"), "dense", size=SMALL)
    assert np.all((calibrated > 0.5) & (calibrated < 2)), calibrated


def test_generator_init_none_keeps_the_mlp_init():
    model = _small("hw_cin_cout", generator_init="none")
    calibrated = _small("hw_cin_cout")
    layer_key = jax.random.split(jax.random.key(0), 3 + 2)[0]  # depth + 2 keys
    assert_tree_allclose(model.layers[0], cfconv.CFConv2d(3, WIDTH, key=layer_key))
    # Calibration changes only the output layers of the MLPs.
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b),
                           eqx.filter(model.layers, eqx.is_array),
                           eqx.filter(calibrated.layers, eqx.is_array))  # fmt: skip
    for layer in changed:
        assert not layer.bias
        for stack in (layer.generator.real, layer.generator.imag):
            assert [linear.weight for linear in stack.layers] == [False] * 9 + [True]
            # He initialisation: zero biases, which a scale leaves at zero.
            assert [linear.bias for linear in stack.layers] == [False] * 10
    for stack in (model.layers[0].generator.real, calibrated.layers[0].generator.imag):
        assert all(not np.any(np.asarray(linear.bias)) for linear in stack.layers)


# ---------------------------------------------------------------------------------------
# Training.


def _stripes(key, n):
    """A translation-invariant toy task (the models are circular and pool globally):
    label 1 for vertical stripes, 0 for horizontal ones, plus noise."""
    k_label, k_values, k_noise = jax.random.split(key, 3)
    labels = jax.random.bernoulli(k_label, 0.5, (n,))
    values = jax.random.normal(k_values, (n, 3, SMALL[0]))
    vertical = jnp.broadcast_to(values[:, :, None, :], (n, 3) + SMALL)
    horizontal = jnp.broadcast_to(values[:, :, :, None], (n, 3) + SMALL)
    x = jnp.where(labels[:, None, None, None], vertical, horizontal)
    return x + 0.2 * jax.random.normal(k_noise, x.shape), labels.astype(jnp.float32)


def _loss(model, states, x, labels, strategy, key):
    kernels, new_states = model.kernels(states, SMALL, strategy, key=key)
    logits = jax.vmap(model, in_axes=(0, None))(x, kernels)
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits[:, 0], labels)), new_states


@pytest.mark.parametrize("name", ["spatial", "hw_cin_cout"])
def test_a_model_trains(name):
    model = _small(name, depth=3, seed=1)
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    states = model.init_states(SMALL, key=jax.random.key(2))
    strategy = cfconv.Sparse(num=1024)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def step(model, states, opt_state, key):
        k_data, k_kernel = jax.random.split(key)
        x, labels = _stripes(k_data, 32)
        grad_fn = eqx.filter_value_and_grad(_loss, has_aux=True)
        (loss, states), grads = grad_fn(model, states, x, labels, strategy, k_kernel)
        updates, opt_state = optimizer.update(grads, opt_state)
        return eqx.apply_updates(model, updates), states, opt_state, loss

    @eqx.filter_jit
    def evaluate(model, states, x, labels):
        return _loss(model, states, x, labels, cfconv.Stored(), None)[0]

    x_test, y_test = _stripes(jax.random.key(100), 128)
    initial_model, initial_states = model, states
    before = float(evaluate(model, states, x_test, y_test))
    for i in range(40):
        model, states, opt_state, _ = step(model, states, opt_state, jax.random.key(i))
    after = float(evaluate(model, states, x_test, y_test))
    assert after < 0.5 * before and after < 0.3, (before, after)
    # Most of that is the head's doing (a frozen random CF-Conv does about as well on
    # this task), so check that the generators learned and the states moved too.
    if isinstance(model, cfconv.models.CFConvNet):
        assert isinstance(initial_model, cfconv.models.CFConvNet)
        for new, old in zip(model.layers, initial_model.layers):
            for mlp_new, mlp_old in [(new.generator.real, old.generator.real),
                                     (new.generator.imag, old.generator.imag)]:  # fmt: skip
                for a, b in zip(mlp_new.layers, mlp_old.layers):
                    assert not np.allclose(np.asarray(a.weight), np.asarray(b.weight))
        for new, old in zip(states, initial_states):
            moved = np.mean(np.asarray(new.kernel) != np.asarray(old.kernel))
            assert moved > 0.9, moved  # 40 steps of 1024 samples, on <= 9216 entries


# ---------------------------------------------------------------------------------------
# Bad input.


def test_unknown_model_name():
    with pytest.raises(ValueError, match="`name`") as info:
        cfconv.models.make_model("resnet", key=jax.random.key(0))
    assert "'resnet'" in str(info.value)
    assert all(name in str(info.value) for name in cfconv.models.MODEL_NAMES)


@checker_modes
def test_bad_arguments(checker):
    key = jax.random.key(0)
    with raises_naming("num_classes", ValueError, checker=checker):
        cfconv.models.SpatialCNN(num_classes=1, key=key)
    with raises_naming("width", ValueError, checker=checker):
        cfconv.models.make_model("hw", width=0, key=key)
    with raises_naming("parameterization", ValueError, checker=checker):
        cfconv.models.CFConvNet(parameterization="hw_h", key=key)  # pyright: ignore[reportArgumentType]
    with raises_naming("state_scale", ValueError, checker=checker):
        cfconv.models.CFConvNet(state_scale=-1.0, key=key)
    with raises_naming("generator_init", ValueError, checker=checker):
        cfconv.models.CFConvNet(generator_init="he", key=key)  # pyright: ignore[reportArgumentType]
    with raises_naming("head", TypeError, checker=checker):
        cfconv.models.SpatialCNN(head=128, key=key)  # pyright: ignore[reportArgumentType]


@checker_modes
def test_bad_calls(checker):
    model = _small("hw")
    states = model.init_states(SMALL, key=jax.random.key(1))
    kernels, _ = model.kernels(states, SMALL, "stored")
    with raises_naming("states", ValueError, checker=checker):
        model.kernels(states[:1], SMALL, "stored")
    with raises_naming("key", ValueError, checker=checker):
        model.kernels(states, SMALL, "sparse")
    with raises_naming("strategy", ValueError, checker=checker):
        model.kernels(states, SMALL, "sparsest")
    with raises_naming("x", ValueError, checker=checker):
        model(jnp.zeros((2, 3) + SMALL), kernels)  # a batch: vmap it
    with raises_naming("x", ValueError, checker=checker):
        model(jnp.zeros((1,) + SMALL), kernels)
    with raises_naming("kernels", ValueError, checker=checker):
        model(jnp.zeros((3,) + SMALL), kernels[:1])
    spatial = _small("spatial")
    with raises_naming("x", ValueError, checker=checker):
        spatial(jnp.zeros((4,) + SMALL))


def test_fourier_reference_model():
    key = jax.random.key(0)
    model = cfconv.models.make_model(
        "fourier", in_channels=3, num_classes=2, width=32, depth=6, image_size=(150, 150),
        key=key,
    )  # fmt: skip
    # Every kernel entry is a parameter: 2 * 150 * 76 per channel pair (paper Section 3),
    # plus the biases and the head of the other models.
    pairs = 3 * 32 + 5 * 32 * 32
    head = (32 * 128 + 128) + (128 * 64 + 64) + (64 + 1)
    assert cfconv.parameter_count(model) == 2 * 150 * 76 * pairs + 6 * 32 + head
    assert cfconv.models.fourier_parameter_count(3, 32, 6, (150, 150)) == 2 * 150 * 76 * pairs
    small = cfconv.models.make_model("fourier", in_channels=1, num_classes=3, width=4, depth=2,
                                     image_size=(8, 8), key=key)  # fmt: skip
    assert small.init_states((8, 8), key=key) == ()
    kernels, states = small.kernels((), (8, 8), "sparse")
    assert [k.shape for k in kernels] == [(1, 4, 8, 5), (4, 4, 8, 5)]
    logits = jax.vmap(small, in_axes=(0, None))(jnp.ones((2, 1, 8, 8)), kernels)
    assert logits.shape == (2, 3)
    with pytest.raises(ValueError, match="`image_size`"):
        small.kernels((), (8, 6), "stored")
    with pytest.raises(ValueError, match="`image_size`"):
        cfconv.models.make_model("fourier", key=key)


def test_frequency_scale_multiplies_the_frequency_weights():
    """`frequency_scale` replaces the generator's scale on the two frequency inputs of
    every MLP's first layer and leaves the channel inputs' weights alone."""
    default = _small("hw_cin_cout")
    half = _small("hw_cin_cout", frequency_scale=0.5)  # the sine generator's default is 2
    relu = _small("hw_cin_cout", generator="relu", frequency_scale=3.0)
    relu_default = _small("hw_cin_cout", generator="relu")  # its default is 1
    for ours, theirs, ratio in ((half, default, 0.25), (relu, relu_default, 3.0)):
        for a, b in zip(ours.layers, theirs.layers):
            for part in ("real", "imag"):
                wa = np.asarray(getattr(a.generator, part).layers[0].weight)
                wb = np.asarray(getattr(b.generator, part).layers[0].weight)
                # Inputs: (c_in, c_out, f_y, f_x).
                np.testing.assert_allclose(wa[..., :2], wb[..., :2], rtol=1e-6)
                np.testing.assert_allclose(wa[..., 2:], ratio * wb[..., 2:], rtol=1e-6)
    with raises_naming("frequency_scale", ValueError, checker=False):
        _small("hw_cin_cout", frequency_scale=-1.0)


@eqx.filter_jit
def _materialize(generator, n):
    return generator.materialize((n, n))


def _centre_energy(model, n=8):
    """Share of the spatial kernels' energy in the 3x3 taps around the origin (numpy's
    inverse FFT of every layer's generated kernel)."""
    shares = []
    for layer in model.layers:
        kernel = _materialize(layer.generator, n)
        energy = np.fft.irfft2(np.asarray(kernel), s=(n, n)) ** 2
        taps = np.roll(energy, (1, 1), axis=(-2, -1))[..., :3, :3]
        shares.append(taps.sum() / energy.sum())
    return np.mean(shares)


def test_a_smaller_frequency_scale_starts_more_local_kernels():
    """What `frequency_scale` is for: the smaller it is, the more of each initial spatial
    kernel lies within the 3x3 taps around its origin."""
    scales = (0.5, 1.0, 2.0, 4.0)
    shares = [_centre_energy(_small("hw_cin_cout", frequency_scale=s)) for s in scales]
    assert np.all(np.diff(shares) < 0), shares
    assert shares[0] > 0.85 and shares[-1] < 0.6, shares
