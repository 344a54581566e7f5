r"""The paper's networks: a 6-layer, 32-filter CNN (paper Figure 3) in every variant.

[`SpatialCNN`][cfconv.models.SpatialCNN] is the $3 \times 3$ baseline;
[`CFConvNet`][cfconv.models.CFConvNet] replaces its convolutions by CF-Convs with any of
the four parameterizations; [`make_model`][cfconv.models.make_model] builds either by
name. Width, depth, head, MLP sizes, input channels and number of classes are arguments.
Every model has the same two-phase interface ([`AbstractModel`][cfconv.models.AbstractModel]):

```python
model = cfconv.models.make_model("hw_cin_cout", key=k0)
states = model.init_states((150, 150), key=k1)          # one KernelState per CF-Conv
# Phase 1, once per step for the whole batch:
kernels, states = model.kernels(states, (150, 150), cfconv.Sparse(num=2**18), key=k2)
# Phase 2, per example:
logits = jax.vmap(model, in_axes=(0, None))(images, kernels)  # (batch, 1)
```

## Parameter counts

[`cfconv.parameter_count`][] counts the float arrays of a model. The stored kernels are
not parameters: they live in the states, outside the model (at the paper's size they hold
$2 \cdot 32 \cdot 32 \cdot 150 \cdot 76 \approx 23.3$M numbers per layer). For the paper's
network (3 input channels, width 32, depth 6, two classes, so one output) the head is the
same for every variant:

$$\underbrace{32 \cdot 128 + 128}_{4{,}224} + \underbrace{128 \cdot 64 + 64}_{8{,}256}
+ \underbrace{64 \cdot 1 + 1}_{65} = 12{,}545.$$

| model | arithmetic | ours | paper (Table 4) |
|---|---|---|---|
| `"spatial"` | $(27 \cdot 32 + 32) + 5 (9 \cdot 32 \cdot 32 + 32) + 12{,}545$ | 59,681 | 60K |
| `"hw"` | $18 \cdot (3 \cdot 32 + 5 \cdot 32 \cdot 32) + 6 \cdot 32 + 12{,}545$ | 106,625 | 107K |
| `"hw_cin"` | $2 \cdot 6 \cdot 32 \cdot 113 + 6 \cdot 32 + 12{,}545$ | 56,129 | — |
| `"hw_cout"` | $2 \cdot (3 + 5 \cdot 32) \cdot 113 + 6 \cdot 32 + 12{,}545$ | 49,575 | — |
| `"hw_cin_cout"` | $6 \cdot 2 \cdot 3{,}633 + 6 \cdot 32 + 12{,}545$ | 56,333 | 59K |

- `"hw"`: one MLP $[2, 1]$ on the 2 frequency coordinates per (input, output) channel
  pair, real and imaginary: $2 \cdot ((2 \cdot 2 + 2) + (2 + 1)) = 18$ per pair.
- `"hw_cin"`, `"hw_cout"`: the paper gives no sizes; we use $[8, 8, 1]$ on 3 inputs,
  $(3 \cdot 8 + 8) + (8 \cdot 8 + 8) + (8 + 1) = 113$ per MLP, one per output channel
  (`"hw_cin"`) or per input channel (`"hw_cout"`), real and imaginary. This keeps both
  near the spatial CNN's count ([`MLP_HIDDEN`][cfconv.models.MLP_HIDDEN]).
- `"hw_cin_cout"`: one MLP $[32, 32, 32, 16, 16, 16, 8, 8, 8, 1]$ on 4 inputs per layer,
  real and imaginary: $(4 \cdot 32 + 32) + 2 (32 \cdot 32 + 32) + (32 \cdot 16 + 16) +
  2 (16 \cdot 16 + 16) + (16 \cdot 8 + 8) + 2 (8 \cdot 8 + 8) + (8 + 1) = 3{,}633$.

The spatial and `"hw"` counts match the paper's. For `"hw_cin_cout"` an honest reading of
the paper gives 56.3K, not 59K; we do not know where the other 2.7K come from. Each extra
input coordinate would add $32$ parameters per MLP, $384$ in all (seven would make up
the difference); one more hidden layer of 16 or 32 would add $272$ or $1{,}056$ per MLP
($3{,}264$ or $12{,}672$ in all); normalization layers or a different head would change
the count too; or the table's figure may be approximate.
`PAPER_PARAMETER_COUNTS` keeps the paper's figures for reference.

## Initialisation

The paper draws the stored kernels uniformly in $[-1, 1]$. For white input of unit
variance a CF-Conv's output has variance $C_{in} E|K|^2 = \tfrac{2}{3} C_{in}$ per pixel
($21$ at $C_{in} = 32$): activations grow about $3\times$ per layer after the ReLU, more
than $100\times$ over the six layers, which may be one reason the paper's CF-Conv nets
are hard to train. [`CFConvNet`][cfconv.models.CFConvNet] uses He's gain instead
([`default_state_scale`][cfconv.models.default_state_scale]), and scales its generators
to start on the scale of the state
([`calibrate_generators`][cfconv.models.calibrate_generators]); `state_scale=1.0`
reproduces the paper's state.
"""

from ._base import AbstractModel as AbstractModel
from ._cfconv_net import (
    GENERATOR_KINDS as GENERATOR_KINDS,
    GENERATORS as GENERATORS,
    MLP_HIDDEN as MLP_HIDDEN,
    CFConvNet as CFConvNet,
)
from ._factory import (
    MODEL_NAMES as MODEL_NAMES,
    PAPER_PARAMETER_COUNTS as PAPER_PARAMETER_COUNTS,
    make_model as make_model,
)
from ._fourier import FourierCNN as FourierCNN, fourier_parameter_count as fourier_parameter_count
from ._init import (
    calibrate_generators as calibrate_generators,
    default_state_scale as default_state_scale,
    expected_gain as expected_gain,
)
from ._spatial import SpatialCNN as SpatialCNN


__all__ = [
    "GENERATORS",
    "GENERATOR_KINDS",
    "MLP_HIDDEN",
    "MODEL_NAMES",
    "PAPER_PARAMETER_COUNTS",
    "AbstractModel",
    "FourierCNN",
    "fourier_parameter_count",
    "CFConvNet",
    "SpatialCNN",
    "calibrate_generators",
    "default_state_scale",
    "expected_gain",
    "make_model",
]
