"""Shared test helpers: tolerances per dtype and backend, and PyTree comparison."""

import contextlib
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import jaxtyping
import numpy as np
import pytest


def on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def tolerance(dtype) -> tuple[float, float]:
    """`(rtol, atol)` for results computed in `dtype` (looser on GPU, whose FFTs and
    matmuls use other algorithms)."""
    dtype = jnp.dtype(dtype)
    if dtype in (jnp.dtype(jnp.float64), jnp.dtype(jnp.complex128)):
        rtol, atol = 1e-10, 1e-10
    else:
        rtol, atol = 2e-5, 2e-5
    if on_gpu():
        rtol, atol = 10 * rtol, 10 * atol
    return rtol, atol


def _leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array_like))


def tree_allclose(x, y, *, rtol: float | None = None, atol: float | None = None) -> bool:
    """Whether two PyTrees have the same structure and allclose array leaves.

    Default tolerances come from `tolerance` of the less precise leaf dtype.
    """
    x_leaves, y_leaves = _leaves(x), _leaves(y)
    if jax.tree.structure(eqx.filter(x, eqx.is_array_like)) != jax.tree.structure(
        eqx.filter(y, eqx.is_array_like)
    ):
        return False
    for a, b in zip(x_leaves, y_leaves):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        # Compare at the precision of the less precise side.
        low = a.dtype if a.dtype.itemsize <= b.dtype.itemsize else b.dtype
        default_rtol, default_atol = tolerance(low)
        if not np.allclose(
            a,
            b,
            rtol=default_rtol if rtol is None else rtol,
            atol=default_atol if atol is None else atol,
        ):
            return False
    return True


def assert_tree_allclose(x, y, *, rtol: float | None = None, atol: float | None = None):
    """Assert `tree_allclose`, printing the largest difference on failure."""
    if tree_allclose(x, y, rtol=rtol, atol=atol):
        return
    diffs = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
        if np.shape(a) == np.shape(b)
        else f"shapes {np.shape(a)} vs {np.shape(b)}"
        for a, b in zip(_leaves(x), _leaves(y))
    ]
    raise AssertionError(f"trees differ; max abs difference per leaf: {diffs}")


# Bad-input tests run twice: with the jaxtyping runtime checker (installed for the whole
# package by the pytest plugin, `--jaxtyping-packages=cfconv,...`) and without it.
#
# Without it is what users see, and the library's own validation must then raise the
# documented error naming the argument in backticks. We switch the checker off with
# `jaxtyping.config.update("jaxtyping_disable", True)`: the wrapper that the import hook
# puts around every function and dataclass `__init__` of the package reads that flag on
# every call and, when it is set, calls the undecorated function directly. So the very
# same instrumented module runs as if uninstrumented, in-process. (Uninstalling an import
# hook does not un-decorate modules already imported, and a subprocess without the plugin
# would pay a JAX import and compile per test.)
#
# With the checker on (the suite's setup), it may catch the mistake first; its
# `TypeCheckError` (a `TypeError`) is then accepted as it is: the checker's messages are
# its own business, and do not always say which parameter failed.


@contextlib.contextmanager
def typechecker_disabled():
    """Switch the jaxtyping runtime checker off inside the block."""
    old = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", old)


@contextlib.contextmanager
def raises_naming(names: str | tuple[str, ...], exception: type[Exception], *, checker: bool):
    """Expect the block to raise a user error that names one of the arguments `names`.

    With `checker=False` the jaxtyping checker is off and exactly the library's
    `exception` is expected, its message naming an argument in backticks. With
    `checker=True` a `jaxtyping.TypeCheckError` from the checker is accepted too.
    """
    names = (names,) if isinstance(names, str) else names
    backticked = "|".join(f"`{re.escape(name)}`" for name in names)
    if checker:
        with pytest.raises((exception, jaxtyping.TypeCheckError)) as info:
            yield
        if not isinstance(info.value, jaxtyping.TypeCheckError):
            assert re.search(backticked, str(info.value)), (
                f"{type(info.value).__name__} does not name {names}: {info.value}"
            )
    else:
        with typechecker_disabled(), pytest.raises(exception, match=backticked):
            yield


checker_modes = pytest.mark.parametrize("checker", [True, False], ids=["checker", "no-checker"])
"""Parametrize a bad-input test over `checker` (see `raises_naming`)."""


@contextlib.contextmanager
def count_compilations():
    """Count XLA compilations inside the block: `with count_compilations() as n: ...`,
    then `n[0]` is the count. Deterministic (unlike timing), so it can be asserted: a
    repeated call with the same shapes and dtypes should compile nothing."""
    count = [0]

    def listener(event, duration_secs, **kwargs):
        del duration_secs, kwargs
        if event == "/jax/core/compile/backend_compile_duration":
            count[0] += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def train_steps(model, states, strategy, size, images, labels, *, optimizer, steps=2,
                mesh=None):  # fmt: skip
    """`steps` of `cfconv.train.make_train_step` from copies of `model` and `states`
    (the step donates its arguments), with keys 0, 1, ...; returns `(model, states)`."""
    from cfconv.train import make_train_step

    m, s = jax.tree.map(lambda a: a.copy() if eqx.is_array(a) else a, (model, states))
    opt_state = optimizer.init(eqx.filter(m, eqx.is_inexact_array))
    step = make_train_step(optimizer, strategy, size, mesh=mesh)
    for i in range(steps):
        m, s, opt_state, _ = step(m, s, opt_state, images, labels, jax.random.key(i))
    return m, s
