"""Shared test helpers: tolerances per dtype and backend, and PyTree comparison."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


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
