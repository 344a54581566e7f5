"""Shared jaxtyping aliases.

Axis names used throughout the package:

- `cin`, `cout`: input and output channels;
- `h`, `w`: the spatial height and width of an image;
- `wf`: the width of an rfft2 grid, `w // 2 + 1`;
- `num`: the number of kernel positions evaluated in one call.
"""

from typing import Any, Protocol, runtime_checkable

from jaxtyping import Array, Complex, Float, Int, Real


FourierKernel = Complex[Array, "cin cout h wf"]
"""A Fourier-domain kernel in rfft2 layout."""

Image = Real[Array, "cin h w"]
"""A single real image, channels first."""

Positions = Int[Array, " num"]
"""Flat (C-order) indices into a kernel grid."""

Coordinates = Float[Array, "num 4"]
"""Per-position coordinates `(c_in, c_out, f_y, f_x)`, each in `[-1, 1]`."""

KernelValues = Complex[Array, " num"]
"""Kernel values at a set of positions."""


@runtime_checkable
class LogStream(Protocol):
    """Where progress lines go: anything with `write(text)` and `flush()` (`sys.stderr`,
    an open text file, `io.StringIO`)."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...
