"""The paper's CF-Conv network (Figure 3), for every parameterization."""

from collections.abc import Sequence
from typing import Any, Literal

import equinox as eqx
import jax
from jaxtyping import Array, PRNGKeyArray, Real

from .._activations import fast_sin
from .._generators import (
    DEFAULT_CHANNEL_SCALE,
    DEFAULT_FREQUENCY_SCALE,
    DEFAULT_HIDDEN,
    PARAMETERIZATIONS,
    Parameterization,
)
from .._layer import CFConv2d
from .._layerwise import Layerwise
from .._positions import CoordinateKind
from .._state import KernelState
from .._strategies import AbstractStrategy, resolve_strategy
from ._base import (
    AbstractModel,
    Head,
    Logits,
    StepKernel,
    check_image,
    check_sizes,
    num_outputs_for,
)
from ._init import GENERATOR_INITS, GeneratorInit, calibrate_generators, default_state_scale


MLP_HIDDEN: dict[str, tuple[int, ...]] = {
    "hw": DEFAULT_HIDDEN["hw"],
    "hw_cin": (8, 8),
    "hw_cout": (8, 8),
    "hw_cin_cout": DEFAULT_HIDDEN["hw_cin_cout"],
}
"""Hidden widths of the generator MLPs of [`cfconv.models.CFConvNet`][] by default.

`"hw"`: the paper's `[2, 1]`; `"hw_cin_cout"`: the paper's
`[32, 32, 32, 16, 16, 16, 8, 8, 8, 1]` (the output layer is implied). The paper gives none
for `"hw_cin"` and `"hw_cout"`; `(8, 8)` keeps their networks near the spatial CNN's
parameter count at the paper's size (56,129 and 49,575 parameters against 59,681).
"""


GeneratorKind = Literal["sine", "relu"]
GENERATOR_KINDS: tuple[str, ...] = ("sine", "relu")

GENERATORS: dict[str, dict[str, Any]] = {
    "sine": dict(
        activation=fast_sin,
        channel_scale=DEFAULT_CHANNEL_SCALE,
        frequency_scale=DEFAULT_FREQUENCY_SCALE,
    ),
    "relu": dict(activation=jax.nn.relu, channel_scale=None, frequency_scale=1.0),
}
"""The generator MLPs of [`cfconv.models.CFConvNet`][] by name: the arguments
`activation`, `channel_scale` and `frequency_scale` of [`cfconv.CFConv2d`][].

- `"sine"` (the default): sine activations ([`cfconv.fast_sin`][]), channel
  coordinates' first-layer weights $\times (n - 1)$, frequencies' $\times 2$; every
  channel pair starts with its own kernel. See [`cfconv.KernelGenerator`][] ("Initialisation").
- `"relu"`: the paper's ReLU MLPs. A deep ReLU generator starts (and, on the digits,
  stays) with nearly the same kernel for every channel pair.
"""


class CFConvNet(AbstractModel):
    r"""The paper's CF-Conv network: `depth` CF-Convs with ReLU, pooling and a head.

    Each layer is a [`cfconv.CFConv2d`][] (spectral convolution, inverse FFT inside,
    bias), followed by a ReLU in the spatial domain (paper Figure 3, left); then global
    average pooling over space, dense layers with ReLU (`head`, the paper's 128 and 64),
    and the output layer (one logit for two classes). The layers are a Python tuple (no
    scan): six layers compile quickly, and the first has other channel counts.

    The stored kernels live outside the model, in the states returned by
    [`init_states`][cfconv.models.CFConvNet.init_states]; a training step calls
    [`kernels`][cfconv.models.CFConvNet.kernels] once (phase 1) and the model per example
    (phase 2).

    **Initialisation.** The paper draws the stored kernel uniformly in $[-1, 1]$. A layer
    with $C_{in}$ inputs then multiplies the activations' second moment by about
    $\frac{2}{3} C_{in}$, so at $C_{in} = 32$ they grow about $3\times$ per layer. By
    default the state is drawn in $[-s, s]$ with He's gain,
    $s = \sqrt{3 / (C_{in} (1 - \frac{1}{2\pi}))}$
    ([`default_state_scale`][cfconv.models.default_state_scale]; $\approx 1.09$ for the
    first layer, $0.334$ for the others); `state_scale=1.0` reproduces the paper.

    The generators are scaled to start where the state is, so that the sparse EMA does not
    pull the kernel to another scale: the last layer of every MLP (real and imaginary) is
    rescaled so that each MLP's output has the state's power per part, $s^2/3$, and then,
    layer by layer, so that on white noise propagated through the generated kernels each
    layer has the stored kernel's expected gain (`generator_init="gain"`, LSUV on noise,
    see [`calibrate_generators`][cfconv.models.calibrate_generators]). The second step
    matters: a smooth generator's output is largely shared by all channel pairs, so its
    channels add coherently, and a generated `hw_cin_cout` kernel with the state's
    $E|K|^2$ makes activations grow several times per layer (`generator_init="state"`
    shows it). `generator_init="none"` keeps the MLPs' own (He) initialisation.

    !!! example

        ```python
        model = cfconv.models.CFConvNet(key=jax.random.key(0))
        states = model.init_states((150, 150), key=k1)
        strategy = cfconv.Sparse(num=2**18)
        # Phase 1, once per step:
        kernels, states = model.kernels(states, (150, 150), strategy, key=k2)
        # Phase 2, per example:
        logits = jax.vmap(model, in_axes=(0, None))(images, kernels)  # (batch, 1)
        ```
    """

    layers: tuple[CFConv2d, ...]
    head: Head
    in_channels: int = eqx.field(static=True)
    num_classes: int = eqx.field(static=True)
    num_outputs: int = eqx.field(static=True)
    state_scales: tuple[float, ...] = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        width: int = 32,
        depth: int = 6,
        head: Sequence[int] = (128, 64),
        parameterization: Parameterization = "hw_cin_cout",
        mlp_hidden: Sequence[int] | None = None,
        coordinates: CoordinateKind = "frequency",
        state_scale: float | None = None,
        generator_init: GeneratorInit = "gain",
        generator: GeneratorKind = "sine",
        frequency_scale: float | None = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`: channels of the input images.
        - `num_classes`: the number of classes; two gives one output (a logit for the
          sigmoid), more give `num_classes` logits.
        - `width`: the number of filters of every CF-Conv (the paper's 32).
        - `depth`: the number of CF-Convs (the paper's 6).
        - `head`: the widths of the dense layers after pooling (the paper's `(128, 64)`).
        - `parameterization`: `"hw"`, `"hw_cin"`, `"hw_cout"` or `"hw_cin_cout"`
          (see [`cfconv.KernelGenerator`][]).
        - `mlp_hidden`: hidden widths of every generator MLP; default
          [`MLP_HIDDEN`][cfconv.models.MLP_HIDDEN]`[parameterization]`.
        - `coordinates`: `"frequency"` (default) or `"index"`, the generator inputs.
        - `state_scale`: half-width of the uniform initial stored kernels; `None` (default)
          for [`default_state_scale`][cfconv.models.default_state_scale] per layer, `1.0`
          for the paper's.
        - `generator_init`: `"gain"` (default), `"state"` or `"none"`; see above.
        - `generator`: the generator MLPs, one of
          [`GENERATOR_KINDS`][cfconv.models.GENERATOR_KINDS]: `"sine"` (default), the
          SIREN-like MLPs of [`cfconv.KernelGenerator`][]'s defaults, or `"relu"`, the
          paper's ReLU MLPs (`channel_scale=None`, `frequency_scale=1.0`). See
          [`GENERATORS`][cfconv.models.GENERATORS].
        - `frequency_scale`: the generator MLPs' first-layer weights on the two frequency
          coordinates are multiplied by this (`None`, the default: the `generator`'s, 2
          for `"sine"` and 1 for `"relu"`). The MLPs' outputs then vary more slowly across
          frequencies, the smaller it is, so each spatial kernel starts more concentrated
          around its centre. See [`cfconv.KernelGenerator`][].
        - `key`: a PRNG key.
        """
        check_sizes(in_channels, num_classes, width, depth)
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(
                f"`parameterization` must be one of {PARAMETERIZATIONS}, got {parameterization!r}"
            )
        if state_scale is not None and (
            isinstance(state_scale, bool)
            or not isinstance(state_scale, (int, float))
            or not state_scale > 0
        ):
            raise ValueError(
                f"`state_scale` must be None or a positive number, got {state_scale!r}"
            )
        if generator_init not in GENERATOR_INITS:
            raise ValueError(
                f"`generator_init` must be one of {GENERATOR_INITS}, got {generator_init!r}"
            )
        if generator not in GENERATOR_KINDS:
            raise ValueError(f"`generator` must be one of {GENERATOR_KINDS}, got {generator!r}")
        hidden = MLP_HIDDEN[parameterization] if mlp_hidden is None else tuple(mlp_hidden)
        options = dict(GENERATORS[generator])
        if frequency_scale is not None:
            options["frequency_scale"] = frequency_scale
        *layer_keys, head_key, noise_key = jax.random.split(key, depth + 2)
        channels = [in_channels] + [width] * depth
        layers = tuple(
            CFConv2d(cin, cout, parameterization, hidden, coordinates=coordinates, **options, key=k)
            for cin, cout, k in zip(channels[:-1], channels[1:], layer_keys)
        )
        scales = tuple(
            default_state_scale(cin) if state_scale is None else float(state_scale)
            for cin in channels[:-1]
        )
        self.layers = calibrate_generators(layers, scales, generator_init, key=noise_key)
        self.state_scales = scales
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_outputs = num_outputs_for(num_classes)
        self.head = Head(width, head, self.num_outputs, key=head_key)

    @property
    def parameterization(self) -> str:
        return self.layers[0].generator.parameterization

    def init_states(
        self, image_size: tuple[int, int], *, key: PRNGKeyArray
    ) -> tuple[KernelState, ...]:
        """Fresh stored kernels for images of `image_size = (h, w)`: one
        [`cfconv.KernelState`][] per layer, uniform in `[-s, s]` with `s` from
        `state_scales`."""
        keys = jax.random.split(key, len(self.layers))
        return tuple(
            layer.init_state(image_size, key=k, scale=s)
            for layer, k, s in zip(self.layers, keys, self.state_scales)
        )

    def kernels(
        self,
        states: tuple[KernelState, ...],
        image_size: tuple[int, int],
        strategy: AbstractStrategy | str,
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[tuple[StepKernel, ...], tuple[KernelState, ...]]:
        """Phase 1: every layer's kernel for this step, and the next states.

        Calls [`CFConv2d.kernel`][cfconv.CFConv2d.kernel] for every layer, with its own
        subkey of `key`. Run it once per step for the whole batch, not per example.

        **Arguments:**

        - `states`: one [`cfconv.KernelState`][] per layer.
        - `image_size`: `(h, w)`.
        - `strategy`: a [`cfconv.AbstractStrategy`][] or its name (`"sparse"`, `"dense"`,
          `"stored"`, ...).
        - `key`: a PRNG key; required by sampling strategies ([`cfconv.Sparse`][]).

        **Returns:**

        `(kernels, new_states)`, tuples with one entry per layer.
        """
        if not isinstance(states, (tuple, list)) or len(states) != len(self.layers):
            got = f"length {len(states)}" if isinstance(states, (tuple, list)) else states
            raise ValueError(
                f"`states` must be a tuple of {len(self.layers)} KernelStates (one per "
                f"layer, from `init_states`), got {type(states).__name__} {got!r}"
            )
        strategy = resolve_strategy(strategy)
        _check_layerwise(strategy, len(self.layers))
        keys = [None] * len(self.layers) if key is None else jax.random.split(key, len(self.layers))
        results = [
            layer.kernel(state, image_size, strategy.for_layer(i), key=k)
            for i, (layer, state, k) in enumerate(zip(self.layers, states, keys))
        ]
        kernels = tuple(kernel for kernel, _ in results)
        new_states = tuple(state for _, state in results)
        return kernels, new_states

    def after_update(self, kernels, new_states, image_size, strategy, *, state_gradients=None):
        """The states to carry to the next step, once the optimizer has updated the
        generators: each layer's
        [`AbstractStrategy.after_update`][cfconv.AbstractStrategy.after_update] (for
        [`cfconv.Sparse`][] with `write_back=True`, the updated generators' values blended
        in at the sampled positions; otherwise `new_states`), given its state's gradient
        if the strategy
        [`needs_state_gradient`][cfconv.AbstractStrategy.needs_state_gradient]."""
        strategy = resolve_strategy(strategy)
        _check_layerwise(strategy, len(self.layers))
        if strategy.needs_state_gradient and state_gradients is None:
            raise ValueError(
                f"`state_gradients` is required: the strategy ({type(strategy).__name__}) "
                "needs the loss's gradient with respect to the states (see "
                "`cfconv.train.make_train_step`)"
            )
        gradients = [None] * len(self.layers) if state_gradients is None else state_gradients
        new = []
        for i, (layer, kernel, new_state, gradient) in enumerate(
            zip(self.layers, kernels, new_states, gradients, strict=True)
        ):
            ours = strategy.for_layer(i)
            if ours.needs_state_gradient:
                new.append(ours.after_update(layer.generator, kernel, new_state, image_size,
                                             state_gradient=gradient))  # fmt: skip
            else:
                new.append(ours.after_update(layer.generator, kernel, new_state, image_size))
        return tuple(new)

    def __call__(self, x: Real[Array, "cin h w"], kernels: tuple[StepKernel, ...]) -> Logits:
        """Phase 2: the logits for one example `x` of shape `(in_channels, h, w)`, with
        the `kernels` from [`kernels`][cfconv.models.CFConvNet.kernels]."""
        check_image(x, self.in_channels)
        if len(kernels) != len(self.layers):
            raise ValueError(
                f"`kernels` must hold one kernel per layer ({len(self.layers)}), got {len(kernels)}"
            )
        h = x
        for layer, kernel in zip(self.layers, kernels):
            h = jax.nn.relu(layer.apply(h, kernel))
        return self.head(h)


def _check_layerwise(strategy: AbstractStrategy, layers: int) -> None:
    """A clear error if a [`cfconv.Layerwise`][] holds another number of strategies."""
    if isinstance(strategy, Layerwise) and len(strategy.strategies) != layers:
        raise ValueError(
            f"`strategy` is a Layerwise of {len(strategy.strategies)} strategies, but the "
            f"model has {layers} CF-Conv layers"
        )
