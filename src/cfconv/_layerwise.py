"""One kernel-phase strategy per layer: e.g. a first layer sampled whole."""

from collections.abc import Sequence
from typing import ClassVar

from ._strategy_base import AbstractStrategy


class Layerwise(AbstractStrategy):
    """A strategy for each layer of a model, e.g. more sampled positions in one layer.

    The models of [`cfconv.models`][] ask every strategy for its layer's
    ([`for_layer`][cfconv.AbstractStrategy.for_layer]); this one answers with its
    `strategies[index]`, so each layer runs its own:

    ```python
    # The first layer's grid sampled whole, 4096 positions in each of the others.
    strategy = cfconv.Layerwise([cfconv.Sparse(None), *[cfconv.Sparse(4096)] * 5])
    ```

    Its [`needs_frequency_weights`][cfconv.AbstractStrategy.needs_frequency_weights],
    [`needs_residual`][cfconv.AbstractStrategy.needs_residual] and
    [`needs_state_gradient`][cfconv.AbstractStrategy.needs_state_gradient] are `True` if
    any layer's are. The strategies must not generate their states (as the dense ones
    do), since [`cfconv.train.fit`][] decides for all layers at once whether to
    regenerate them. A `Layerwise` is not called itself: call the strategy of a layer.

    **Arguments:**

    - `strategies`: one [`cfconv.AbstractStrategy`][] per layer, in order.
    """

    strategies: tuple[AbstractStrategy, ...]
    needs_key: ClassVar[bool] = True

    def __init__(self, strategies: Sequence[AbstractStrategy]):
        strategies = tuple(strategies)
        if not strategies:
            raise ValueError("`strategies` must hold one strategy per layer, got none")
        for strategy in strategies:
            if not isinstance(strategy, AbstractStrategy) or isinstance(strategy, Layerwise):
                raise TypeError(
                    "`strategies` must hold cfconv.AbstractStrategy instances other than "
                    f"Layerwise, got {type(strategy).__name__}"
                )
            if strategy.generates_state:
                raise ValueError(
                    f"`strategies` must not generate their states, but "
                    f"{type(strategy).__name__} does: train every layer with a dense "
                    "strategy, or none"
                )
        self.strategies = strategies

    def for_layer(self, index: int) -> AbstractStrategy:
        if not isinstance(index, int) or not 0 <= index < len(self.strategies):
            raise ValueError(
                f"`index` must be a layer in [0, {len(self.strategies)}), got {index!r}"
            )
        return self.strategies[index]

    @property
    def needs_frequency_weights(self) -> bool:
        return any(s.needs_frequency_weights for s in self.strategies)

    @property
    def needs_residual(self) -> bool:
        return any(s.needs_residual for s in self.strategies)

    @property
    def needs_state_gradient(self) -> bool:
        return any(s.needs_state_gradient for s in self.strategies)

    def __call__(self, generator, state, spatial_shape, *, key=None):
        raise TypeError(
            "a Layerwise strategy holds one strategy per layer and is not called itself: "
            "call `strategy.for_layer(index)` for the layer (the models do)"
        )
