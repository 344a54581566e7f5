"""Experiments behind `cfconv` subcommands, and pictures of kernels.

- [`run_spectral_bias`][cfconv.experiments.run_spectral_bias] (`cfconv spectral-bias`):
  fit known filters with Fourier- and spatial-domain kernel generators, and measure the
  error per band of frequency.
- [`sparse_gradient_agreement`][cfconv.experiments.sparse_gradient_agreement]
  (`cfconv gradient-noise`): how well one sparse step's generator gradient agrees with
  the exact gradient, for several fractions of the kernel grid sampled.
- [`run_sparse_ablation`][cfconv.experiments.run_sparse_ablation]
  (`cfconv sparse-ablation`): train the digits net with the exact step, a sampled
  gradient only, a stale kernel only, and the paper's sparse step, to split the accuracy
  gap between sparse and exact training into its causes.
- [`compare_seeds`][cfconv.experiments.compare_seeds] (`cfconv compare`): train a
  CF-Conv net and a baseline on the same splits for several seeds, and summarise the
  paired differences of their validation accuracies.
- [`plot_checkpoint`][cfconv.experiments.plot_checkpoint] (`cfconv plot`): draw a trained
  model's kernels and one step's sparse sampling pattern.

The pictures need matplotlib (`pip install cfconv[plot]`), imported only when drawing.
"""

from ._ablation import (
    DEFAULT_VARIANTS as DEFAULT_VARIANTS,
    VARIANTS as VARIANTS,
    FractionSparse as FractionSparse,
    SampledGradient as SampledGradient,
    StaleKernel as StaleKernel,
    ablation_strategy as ablation_strategy,
    format_ablation as format_ablation,
    run_sparse_ablation as run_sparse_ablation,
)
from ._compare import (
    compare_seeds as compare_seeds,
    format_comparison as format_comparison,
)
from ._gradient_noise import (
    format_agreement as format_agreement,
    sparse_gradient_agreement as sparse_gradient_agreement,
)
from ._plots import (
    plot_checkpoint as plot_checkpoint,
    plot_kernels as plot_kernels,
    plot_sampling as plot_sampling,
    plot_spectral_bias as plot_spectral_bias,
)
from ._spectral_bias import (
    SpectralBiasResult as SpectralBiasResult,
    format_tables as format_tables,
    make_generator as make_generator,
    matched_hidden as matched_hidden,
    run_spectral_bias as run_spectral_bias,
    summarize as summarize,
    trainable_parameters as trainable_parameters,
)
from ._spectral_setup import (
    DOMAINS as DOMAINS,
    TARGETS as TARGETS,
    SpectralBiasConfig as SpectralBiasConfig,
    band_edges as band_edges,
    band_labels as band_labels,
    band_shares as band_shares,
    kernel_errors as kernel_errors,
    target_kernel as target_kernel,
)
from ._trained import load_trained_model as load_trained_model


__all__ = [
    "DEFAULT_VARIANTS",
    "DOMAINS",
    "VARIANTS",
    "FractionSparse",
    "SampledGradient",
    "StaleKernel",
    "ablation_strategy",
    "format_ablation",
    "run_sparse_ablation",
    "TARGETS",
    "SpectralBiasConfig",
    "SpectralBiasResult",
    "band_edges",
    "band_labels",
    "band_shares",
    "compare_seeds",
    "format_agreement",
    "format_comparison",
    "format_tables",
    "kernel_errors",
    "load_trained_model",
    "make_generator",
    "matched_hidden",
    "plot_checkpoint",
    "plot_kernels",
    "plot_sampling",
    "plot_spectral_bias",
    "run_spectral_bias",
    "sparse_gradient_agreement",
    "summarize",
    "target_kernel",
    "trainable_parameters",
]
