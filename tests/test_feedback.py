"""Error feedback: the kernel gradient of unsampled entries is kept in the state's
residual and reaches the generator when those entries are next sampled.

The references are computed without the code under test: the kernel gradient of a loss
from `jax.grad` of the plain convolution, the generator's vector-Jacobian product from
`jax.vjp` of its evaluation at the sampled positions, and the residual bookkeeping in
NumPy.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import cfconv
from cfconv._feedback import feedback_residual, feedback_step
from cfconv.distributed import ShardedSparse, make_mesh
from cfconv.models import make_model
from cfconv.train import TrainConfig, fit, load_checkpoint, make_train_step
from helpers import raises_naming, train_steps, tree_allclose


SHAPE = (6, 6)
RATE = 0.3


def _setup(seed=0):
    layer = cfconv.CFConv2d(2, 3, hidden=(8, 8), key=jax.random.key(seed))
    state = layer.init_state(SHAPE, key=jax.random.key(seed + 1))
    kr, ki = jax.random.split(jax.random.key(seed + 2))
    residual = jax.lax.complex(jax.random.normal(kr, state.kernel.shape),
                               jax.random.normal(ki, state.kernel.shape))  # fmt: skip
    images = jax.random.normal(jax.random.key(seed + 3), (4, 2, *SHAPE))
    return layer, state.with_residual(residual), images


def _loss(kernel, images):
    """A loss of the convolution's output (any smooth function will do)."""
    ys = jax.vmap(cfconv.spectral_conv, (0, None))(images, kernel)
    return jnp.sum(jnp.tanh(ys) * jnp.cos(jnp.arange(ys.size).reshape(ys.shape)))


def _step_gradients(strategy, layer, state, images, key):
    """The generator's and the state's gradients of the loss through `strategy`."""

    def loss(generator, state):
        kernel, new_state = strategy(generator, state, SHAPE, key=key)
        return _loss(kernel, images), (kernel, new_state)

    grad = eqx.filter_grad(lambda both: loss(*both), has_aux=True)
    (g_generator, g_state), (kernel, new_state) = grad((layer.generator, state))
    return g_generator, g_state, kernel, new_state


@pytest.mark.parametrize("sampling", ["uniform", "stratified"])
def test_generator_gradient_is_the_sampled_gradient_plus_the_residual(sampling):
    layer, state, images = _setup()
    if sampling == "stratified":
        state = cfconv.KernelState(state.kernel, jnp.ones(state.shape[2:]) + jnp.arange(
            np.prod(state.shape[2:])).reshape(state.shape[2:]), state.residual)  # fmt: skip
    strategy = cfconv.Sparse(num=30, rate=RATE, error_feedback=True, sampling=sampling)
    key = jax.random.key(5)
    g_generator, g_state, kernel, new_state = _step_gradients(strategy, layer, state, images,
                                                              key)  # fmt: skip
    positions = np.asarray(kernel.positions)
    if sampling == "uniform":  # with replacement: some positions repeat
        assert len(set(positions.tolist())) < len(positions)
    # Reference: the kernel gradient G of the loss at the step's (blended) kernel ...
    blended = jnp.asarray(new_state.kernel)
    gradient = np.asarray(jax.grad(_loss)(blended, images))
    np.testing.assert_allclose(np.asarray(g_state.residual), gradient, rtol=1e-4, atol=1e-5)
    # ... and the generator's VJP at the sampled positions with rate * (G + R) there,
    # counting each distinct position once.
    flat_g = gradient.reshape(-1)
    flat_r = np.asarray(state.residual).reshape(-1)
    cotangent = np.zeros(positions.shape, np.complex64)
    seen = set()
    for n, p in enumerate(positions):
        if p not in seen and np.asarray(kernel.weights)[n] > 0:
            cotangent[n] = RATE * (flat_g[p] + flat_r[p])
            seen.add(p)
    assert seen == set(positions.tolist())
    _, vjp = eqx.filter_vjp(lambda g: g(jnp.asarray(positions), SHAPE), layer.generator)
    (expected,) = vjp(jnp.asarray(cotangent))
    assert tree_allclose(g_generator, expected, rtol=1e-4, atol=1e-5)
    # The kernel's value is the plain sparse step's, and the residual is carried as it was.
    fresh = layer.generator(kernel.positions, SHAPE)
    plain = cfconv.sparse_update(state, kernel.positions, fresh, rate=RATE)
    np.testing.assert_allclose(np.asarray(kernel.kernel), np.asarray(plain.kernel), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(new_state.residual), np.asarray(state.residual))


def test_after_update_adds_the_gradient_and_clears_the_sampled_entries():
    layer, state, images = _setup(1)
    strategy = cfconv.Sparse(num=25, rate=RATE, error_feedback=True)
    _, g_state, kernel, new_state = _step_gradients(strategy, layer, state, images,
                                                    jax.random.key(3))  # fmt: skip
    got = strategy.after_update(layer.generator, kernel, new_state, SHAPE, state_gradient=g_state)
    expected = np.asarray(state.residual) + np.asarray(g_state.residual)
    flat = expected.reshape(-1)
    flat[np.asarray(kernel.positions)] = 0
    np.testing.assert_allclose(np.asarray(got.residual), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got.kernel), np.asarray(new_state.kernel))
    # Something is left to carry, and the sampled entries carry nothing.
    assert np.abs(np.asarray(got.residual)).sum() > 0
    assert not np.any(np.asarray(got.residual).reshape(-1)[np.asarray(kernel.positions)])


def test_every_gradient_reaches_the_generator_once():
    """Over many steps, what the sampled values received (divided by the rate) plus the
    residual left is the sum of every step's kernel gradient: nothing is lost and nothing
    is counted twice. Each step convolves with the step's kernel as training does; the
    reference gradients are `jax.grad` of the loss at the plain kernel."""
    layer, state, images = _setup(2)
    state = state.with_residual()
    strategy = cfconv.Sparse(num=20, rate=RATE, error_feedback=True)
    received = np.zeros(state.kernel.size, np.complex128)
    expected = np.zeros(state.kernel.size, np.complex128)

    def loss(values, state, positions):
        step = cfconv.sparse_update(state, positions, values, rate=RATE)
        kernel, _ = feedback_step(step, state, "Sparse")
        return _loss(kernel, images)

    for t in range(12):
        positions = strategy.sample(layer.generator, SHAPE, key=jax.random.key(100 + t))
        values = layer.generator(positions, SHAPE)
        g_values, g_state = jax.grad(loss, argnums=(0, 1))(values, state, positions)
        np.add.at(received, np.asarray(positions), np.asarray(g_values) / RATE)
        step = cfconv.sparse_update(state, positions, values, rate=RATE)
        expected += np.asarray(jax.grad(_loss)(step.kernel, images)).reshape(-1)
        kernel, new_state = feedback_step(step, state, "Sparse")
        state = feedback_residual(kernel, new_state, g_state, "Sparse")
    total = received + np.asarray(state.residual).reshape(-1)
    assert np.abs(expected.imag).max() > 0.1 * np.abs(expected).max()  # complex gradients
    np.testing.assert_allclose(total, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.abs(received).sum() > 0


def test_whole_grid_error_feedback_is_the_plain_step():
    """With every entry sampled each step nothing is left over: the residual stays zero,
    and training equals training without error feedback."""
    model = make_model("hw_cin_cout", in_channels=1, num_classes=3, width=4, depth=2,
                       mlp_hidden=(8,), key=jax.random.key(0))  # fmt: skip
    size = (6, 6)
    states = model.init_states(size, key=jax.random.key(1))
    images = jax.random.normal(jax.random.key(2), (8, 1, *size))
    labels = jnp.arange(8) % 3
    optimizer = optax.adam(1e-2)
    grid = 4 * 4 * 6 * 4
    results = []
    for feedback in (False, True):
        strategy = cfconv.Sparse(num=grid, rate=RATE, replace=False, write_back=True,
                                 error_feedback=feedback)  # fmt: skip
        run = jax.tree.map(lambda a: a.copy() if eqx.is_array(a) else a, (model, states))
        m, s = run
        if feedback:
            s = tuple(state.with_residual() for state in s)
        opt_state = optimizer.init(eqx.filter(m, eqx.is_inexact_array))
        step = make_train_step(optimizer, strategy, size)
        metrics = {}
        for i in range(3):
            m, s, opt_state, metrics = step(m, s, opt_state, images, labels, jax.random.key(i))
        results.append((m, tuple(state.kernel for state in s), float(metrics["loss"])))
        if feedback:
            for state in s:
                np.testing.assert_allclose(np.asarray(state.residual), 0, atol=0)
    assert tree_allclose(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    assert tree_allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-5)


def _net_and_batch(name, classes, size, hidden):
    """A small CF-Conv net, its states with zero residuals, and a batch of 8."""
    model = make_model(name, in_channels=1, num_classes=classes, width=4, depth=2,
                       mlp_hidden=hidden, key=jax.random.key(0))  # fmt: skip
    states = tuple(s.with_residual() for s in model.init_states(size, key=jax.random.key(1)))
    images = jax.random.normal(jax.random.key(2), (8, 1, *size))
    return model, states, images, jnp.arange(8) % classes


def test_train_step_keeps_a_residual_on_one_device_mesh():
    """`make_train_step` passes the states' gradients; on a mesh (`ShardedSparse`) the
    step computes the same states, residuals and generators."""
    size = (8, 8)
    model, states, images, labels = _net_and_batch("hw_cin", 2, size, (4,))
    optimizer = optax.sgd(0.1)
    strategy = cfconv.Sparse(num=50, rate=RATE, error_feedback=True, write_back=True)
    outs = [train_steps(model, states, strategy, size, images, labels, optimizer=optimizer,
                        mesh=mesh) for mesh in (None, make_mesh(1, 1))]  # fmt: skip
    (m0, s0), (m1, s1) = outs
    assert tree_allclose(m0, m1) and tree_allclose(s0, s1)
    assert all(np.abs(np.asarray(state.residual)).sum() > 0 for state in s0)
    assert isinstance(jax.tree.leaves(s1)[0], jax.Array)
    assert ShardedSparse(strategy, make_mesh(1, 1)).needs_state_gradient


def test_train_step_residual_is_the_kernel_gradient_of_the_unsampled_entries():
    """After one step from a zero residual, the residual is the batch loss's kernel
    gradient (at the step's kernels, with the model before the update) wherever the step
    did not sample, and zero where it did."""
    size = (6, 6)
    model, states, images, labels = _net_and_batch("hw_cin_cout", 3, size, (8,))
    before = jax.tree.map(lambda a: a.copy() if eqx.is_array(a) else a, model)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    num = 40
    step = make_train_step(optimizer, cfconv.Sparse(num=num, rate=RATE, error_feedback=True),
                           size)  # fmt: skip
    _, new_states, _, _ = step(model, states, opt_state, images, labels, jax.random.key(3))

    def loss(kernels):
        logits = jax.vmap(before, in_axes=(0, None))(images, kernels)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    # Without write-back the new states hold the step's kernels.
    gradients = jax.grad(loss)(tuple(s.kernel for s in new_states))
    for state, gradient in zip(new_states, gradients):
        residual, gradient = np.asarray(state.residual), np.asarray(gradient)
        kept = residual != 0
        assert residual.size - num <= kept.sum() < residual.size
        np.testing.assert_allclose(residual[kept], gradient[kept], rtol=1e-4,
                                   atol=1e-6 * np.abs(gradient).max())  # fmt: skip


def test_properties_and_errors():
    layer, state, images = _setup()
    plain, feedback = cfconv.Sparse(num=10), cfconv.Sparse(num=10, error_feedback=True)
    assert not plain.needs_residual and not plain.needs_state_gradient
    assert feedback.needs_residual and feedback.needs_state_gradient
    for other in (cfconv.Dense(), cfconv.Chunked(), cfconv.Stored()):
        assert not other.needs_residual and not other.needs_state_gradient
    with raises_naming("error_feedback", TypeError, checker=True):
        cfconv.Sparse(num=10, error_feedback="yes")  # pyright: ignore[reportArgumentType]
    with raises_naming("residual", ValueError, checker=True):
        bare = cfconv.KernelState(state.kernel)
        feedback(layer.generator, bare, SHAPE, key=jax.random.key(0))
    kernel, new_state = feedback(layer.generator, state, SHAPE, key=jax.random.key(0))
    with raises_naming("state_gradient", ValueError, checker=True):
        feedback.after_update(layer.generator, kernel, new_state, SHAPE)
    with raises_naming("residual", ValueError, checker=True):
        cfconv.KernelState(state.kernel, residual=state.kernel[:, :1])
    model = make_model("hw_cin_cout", in_channels=1, num_classes=2, width=4, depth=1,
                       mlp_hidden=(4,), key=jax.random.key(0))  # fmt: skip
    states = tuple(s.with_residual() for s in model.init_states((6, 6), key=jax.random.key(1)))
    kernels, new_states = model.kernels(states, (6, 6), feedback, key=jax.random.key(2))
    with raises_naming("state_gradients", ValueError, checker=True):
        model.after_update(kernels, new_states, (6, 6), feedback)
    with raises_naming("residual", ValueError, checker=True):
        cfconv.KernelState(state.kernel, residual=np.asarray(state.residual, np.complex128))  # pyright: ignore[reportArgumentType]
    with raises_naming("error_feedback", ValueError, checker=True):
        TrainConfig(error_feedback=1)  # pyright: ignore[reportArgumentType]
    with raises_naming("augment", ValueError, checker=True):
        TrainConfig(augment="no")  # pyright: ignore[reportArgumentType]


def _stripes(n=64, size=8):
    """Horizontal or vertical stripes in noise (two classes)."""
    rng = np.random.default_rng(0)
    labels = (np.arange(n) % 2).astype(np.int32)
    ramp = np.arange(size)
    images = []
    for label in labels:
        wave = np.sin(2 * np.pi * ramp / rng.integers(2, 5) + rng.uniform(0, 6))
        stripes = np.tile(wave, (size, 1)) if label else np.tile(wave[:, None], (1, size))
        images.append(stripes + 0.3 * rng.normal(size=(size, size)))
    pixels = np.clip(127 + 100 * np.stack(images), 0, 255).astype(np.uint8)[..., None]
    return cfconv.data.Dataset(pixels, labels, ("vertical", "horizontal"))


def test_fit_with_error_feedback_resumes_exactly(tmp_path):
    config = TrainConfig(epochs=2, batch_size=16, width=4, depth=2, mlp_hidden=(8,),
                         positions=64, error_feedback=True, sampling="uniform")  # fmt: skip
    train, val = _stripes(), _stripes(32)
    compared = ("train_loss", "train_acc", "val_loss", "val_acc", "kernel_lag")
    whole = fit(config, train, val, checkpoint_dir=tmp_path / "a", log=None)
    fit(dataclasses.replace(config, epochs=1), train, val, checkpoint_dir=tmp_path / "b",
        log=None)  # fmt: skip
    resumed = fit(config, train, val, checkpoint_dir=tmp_path / "b", resume=True, log=None)
    assert [[e[k] for k in compared] for e in resumed["epochs"]] == [
        [e[k] for k in compared] for e in whole["epochs"]
    ]
    # The checkpoint holds residuals; a strategy without error feedback cannot resume it.
    (_, states, _, _), metadata = load_checkpoint(
        tmp_path / "a" / "checkpoint.eqx", _like(config, train)
    )
    assert metadata["residual"] is True
    assert all(np.abs(np.asarray(state.residual)).sum() > 0 for state in states)
    plain = dataclasses.replace(config, error_feedback=False).kernel_strategy()
    with pytest.raises(ValueError, match="error feedback"):
        fit(config, train, val, checkpoint_dir=tmp_path / "a", resume=True, log=None,
            strategy=plain)  # fmt: skip


def _like(config, data):
    model = config.build_model(data.channels, data.num_classes, key=jax.random.key(0))
    states = model.init_states((8, 8), key=jax.random.key(1))
    states = tuple(state.with_residual() for state in states)
    opt_state = config.optimizer().init(eqx.filter(model, eqx.is_inexact_array))
    return model, states, opt_state, jax.random.key_data(jax.random.key(0))


def test_without_replacement_a_small_grid_is_sampled_whole():
    layer, _, _ = _setup()
    grid = layer.generator.grid_shape(SHAPE)
    positions = cfconv.Sparse(num=10_000, replace=False).sample(
        layer.generator, SHAPE, key=jax.random.key(0)
    )
    assert sorted(np.asarray(positions).tolist()) == list(range(int(np.prod(grid))))
