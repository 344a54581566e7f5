"""Build a model by name."""

from typing import Any

from jaxtyping import PRNGKeyArray

from ._base import AbstractModel
from ._cfconv_net import CFConvNet
from ._fourier import FourierCNN
from ._spatial import SpatialCNN


MODEL_NAMES: tuple[str, ...] = ("spatial", "hw", "hw_cin", "hw_cout", "hw_cin_cout", "fourier")
"""The model names [`make_model`][cfconv.models.make_model] accepts: the spatial CNN, the
four CF-Conv parameterizations, and the discrete Fourier-kernel reference."""

PAPER_PARAMETER_COUNTS: dict[str, int] = {"spatial": 60_000, "hw": 107_000, "hw_cin_cout": 59_000}
"""The parameter counts of the paper's Table 4 (as printed, rounded to thousands)."""


def make_model(
    name: str,
    *,
    in_channels: int = 3,
    num_classes: int = 2,
    width: int = 32,
    depth: int = 6,
    key: PRNGKeyArray,
    **kwargs: Any,
) -> AbstractModel:
    """Build one of the paper's networks by name.

    **Arguments:**

    - `name`: one of [`MODEL_NAMES`][cfconv.models.MODEL_NAMES]: `"spatial"` for
      [`cfconv.models.SpatialCNN`][], or a parameterization (`"hw"`, `"hw_cin"`,
      `"hw_cout"`, `"hw_cin_cout"`) for [`cfconv.models.CFConvNet`][], or `"fourier"` for
      [`cfconv.models.FourierCNN`][] (which needs `image_size=(h, w)` in `kwargs`).
    - `in_channels`, `num_classes`, `width`, `depth`: as for the models.
    - `key`: a PRNG key.
    - `**kwargs`: passed to the model (e.g. `head`, `mlp_hidden`, `state_scale`).

    **Returns:**

    The model.

    !!! example

        ```python
        model = cfconv.models.make_model("hw_cin_cout", num_classes=10, key=key)
        ```
    """
    if not isinstance(name, str) or name not in MODEL_NAMES:
        raise ValueError(f"`name` must be one of {MODEL_NAMES}, got {name!r}")
    sizes = dict(in_channels=in_channels, num_classes=num_classes, width=width, depth=depth)
    if name == "spatial":
        return SpatialCNN(**sizes, **kwargs, key=key)
    if name == "fourier":
        if "image_size" not in kwargs:
            raise ValueError("`image_size` is required for the model `name='fourier'`")
        return FourierCNN(**sizes, **kwargs, key=key)
    return CFConvNet(**sizes, parameterization=name, **kwargs, key=key)  # pyright: ignore[reportArgumentType]
