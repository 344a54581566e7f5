"""Small helpers that turn common mistakes into clear errors.

They run on static information only (shapes, dtypes, Python scalars), so they cost nothing
under `jax.jit` and work whether or not the jaxtyping checker is active.
"""

import operator
from typing import Any

import jax.numpy as jnp
import numpy as np


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return `value` as an `int`, or raise naming `name`."""
    if isinstance(value, bool):
        raise TypeError(f"`{name}` must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"`{name}` must be an integer, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


def check_positive(name: str, value: Any) -> float:
    """Return `value` as a finite positive `float`, or raise naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"`{name}` must be a positive number, got {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive number, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    """Return `value` as a finite non-negative `float`, or raise naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"`{name}` must be a non-negative number, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a non-negative number, got {value!r}")
    return float(value)


def check_share(name: str, value: Any) -> float:
    """Return `value` as a `float` in (0, 1], or raise naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"`{name}` must be a number in (0, 1], got {value!r}")
    if not 0 < value <= 1:
        raise ValueError(f"`{name}` must be in (0, 1], got {value!r}")
    return float(value)


def check_shape(name: str, shape: Any, *, rank: int | None = None) -> tuple[int, ...]:
    """Return `shape` as a tuple of positive ints, or raise naming `name`."""
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"`{name}` must be a tuple of integers, got {shape!r}") from None
    if rank is not None and len(dims) != rank:
        raise ValueError(f"`{name}` must have {rank} entries, got {len(dims)}: {shape!r}")
    if len(dims) == 0:
        raise ValueError(f"`{name}` must have at least one entry, got {shape!r}")
    return tuple(check_int(f"{name}[{i}]", d) for i, d in enumerate(dims))


def check_rate(rate: Any) -> None:
    """Raise if a concrete `rate` lies outside (0, 1]; traced rates are checked later."""
    if isinstance(rate, bool):
        raise TypeError(f"`rate` must be a number in (0, 1], got {rate!r}")
    if isinstance(rate, (int, float, np.number)):
        if not 0.0 < float(rate) <= 1.0:
            raise ValueError(f"`rate` must be in (0, 1], got {rate}")


def check_array(name: str, value: Any, *, ndim: int, kind: str) -> None:
    """Check the rank and the dtype kind (`"real"`, `"complex"` or `"int"`) of an array."""
    if not hasattr(value, "ndim") or not hasattr(value, "dtype"):
        raise TypeError(f"`{name}` must be an array, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(
            f"`{name}` must have rank {ndim}, got rank {value.ndim} with shape {value.shape}"
        )
    dtype = value.dtype
    if kind == "complex":
        ok = jnp.issubdtype(dtype, jnp.complexfloating)
        want = "a complex dtype"
    elif kind == "real":
        ok = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
        want = "a real dtype"
    elif kind == "int":
        ok = jnp.issubdtype(dtype, jnp.integer)
        want = "an integer dtype"
    else:  # pragma: no cover - programming error
        raise AssertionError(kind)
    if not ok:
        raise TypeError(f"`{name}` must have {want}, got {dtype}")
