"""Continuous Fourier Convolutions (CF-Convs) with sparse kernel updates, in pure JAX."""

import importlib.metadata

# The subpackages, so that `import cfconv` is enough for `cfconv.models.make_model(...)`.
from . import (
    bench as bench,
    data as data,
    distributed as distributed,
    models as models,
    train as train,
)
from ._activations import fast_sin as fast_sin
from ._features import (
    AbstractFeatures as AbstractFeatures,
    RandomFourierFeatures as RandomFourierFeatures,
    SineFeatures as SineFeatures,
)
from ._generators import (
    DEFAULT_HIDDEN as DEFAULT_HIDDEN,
    PARAMETERIZATIONS as PARAMETERIZATIONS,
    KernelGenerator as KernelGenerator,
)
from ._layer import CFConv2d as CFConv2d
from ._layerwise import Layerwise as Layerwise
from ._mlp import MLP as MLP, parameter_count as parameter_count
from ._positions import (
    frequency_coordinates as frequency_coordinates,
    position_coordinates as position_coordinates,
    sample_positions as sample_positions,
    unravel_positions as unravel_positions,
)
from ._spatial_generator import (
    SpatialKernelGenerator as SpatialKernelGenerator,
    offset_coordinates as offset_coordinates,
)
from ._spectral import (
    fourier_mix as fourier_mix,
    kernel_concentration as kernel_concentration,
    spectral_conv as spectral_conv,
)
from ._state import (
    KernelState as KernelState,
    SparseKernel as SparseKernel,
    ema_update as ema_update,
    init_kernel_state as init_kernel_state,
    kernel_shape as kernel_shape,
    sparse_update as sparse_update,
)
from ._strategies import (
    AbstractStrategy as AbstractStrategy,
    Chunked as Chunked,
    Dense as Dense,
    Remat as Remat,
    Sparse as Sparse,
    Stored as Stored,
    resolve_strategy as resolve_strategy,
)
from ._stratified import (
    frequency_weights as frequency_weights,
    stratified_positions as stratified_positions,
)


__version__ = importlib.metadata.version("cfconv")

__all__ = [
    "DEFAULT_HIDDEN",
    "PARAMETERIZATIONS",
    "AbstractFeatures",
    "AbstractStrategy",
    "CFConv2d",
    "Chunked",
    "Dense",
    "KernelGenerator",
    "KernelState",
    "Layerwise",
    "MLP",
    "RandomFourierFeatures",
    "Remat",
    "SineFeatures",
    "Sparse",
    "SparseKernel",
    "SpatialKernelGenerator",
    "Stored",
    "ema_update",
    "fast_sin",
    "fourier_mix",
    "frequency_coordinates",
    "frequency_weights",
    "init_kernel_state",
    "kernel_concentration",
    "kernel_shape",
    "offset_coordinates",
    "parameter_count",
    "position_coordinates",
    "resolve_strategy",
    "sample_positions",
    "sparse_update",
    "spectral_conv",
    "stratified_positions",
    "unravel_positions",
]
