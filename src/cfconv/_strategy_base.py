"""The interface of kernel-phase strategies (see `_strategies.py` for the strategies)."""

import abc
from typing import ClassVar

import equinox as eqx
from jaxtyping import PRNGKeyArray

from ._custom_types import FourierKernel
from ._generators import KernelGenerator
from ._state import KernelState, SparseKernel


class AbstractStrategy(eqx.Module):
    """How the kernel phase of a training (or inference) step produces the kernel.

    A strategy is called once per step and layer, *outside* any per-example `vmap`:

    ```python
    kernel, new_state = strategy(generator, state, (h, w), key=key)
    ```

    It returns this step's kernel (differentiable with respect to the generator) and the
    state to carry to the next step (without gradient). The kernel is a complex array, or
    a [`cfconv.SparseKernel`][] for sparse strategies. Subclass it to try new schemes.
    """

    needs_key: ClassVar[bool] = False
    """Whether the strategy samples, and so needs a PRNG key."""

    generates_state: ClassVar[bool] = False
    """Whether the new state is the generator's whole kernel (as for the dense
    strategies), made before the step's optimizer update. A training loop then regenerates
    the states from the updated generators before evaluating with them, as
    [`cfconv.train.fit`][] does; otherwise the stored kernel is what inference uses."""

    @property
    def needs_frequency_weights(self) -> bool:
        """Whether the strategy samples by the states' `frequency_weights`, which the
        states must then hold: for a CF-Conv net, [`cfconv.train.fit`][] keeps them up
        to date with [`cfconv.train.refresh_frequency_weights`][]. `False` here;
        [`cfconv.Sparse`][] with `sampling="stratified"` says `True`. A subclass that
        samples by the weights overrides this property."""
        return False

    @property
    def needs_residual(self) -> bool:
        """Whether the strategy keeps a `residual` in the states (which must then hold
        one: [`cfconv.KernelState.with_residual`][]; [`cfconv.train.fit`][] adds it).
        `False` here; [`cfconv.Sparse`][] with `error_feedback=True` says `True`."""
        return False

    @property
    def needs_state_gradient(self) -> bool:
        """Whether [`after_update`][cfconv.AbstractStrategy.after_update] needs the loss's
        gradient with respect to the step's input state: a training step then
        differentiates with respect to the states as well and passes it as
        `state_gradient` ([`cfconv.train.make_train_step`][] does). `False` here;
        [`cfconv.Sparse`][] with `error_feedback=True` says `True`."""
        return False

    def for_layer(self, index: int) -> "AbstractStrategy":
        """The strategy for layer `index` of a model: this strategy itself, except for
        [`cfconv.Layerwise`][], which holds one per layer. The models of
        [`cfconv.models`][] call it for each CF-Conv layer."""
        del index
        return self

    @abc.abstractmethod
    def __call__(
        self,
        generator: KernelGenerator,
        state: KernelState,
        spatial_shape: tuple[int, int],
        *,
        key: PRNGKeyArray | None = None,
    ) -> tuple[FourierKernel | SparseKernel, KernelState]:
        """**Arguments:**

        - `generator`: the layer's [`cfconv.KernelGenerator`][].
        - `state`: the current [`cfconv.KernelState`][].
        - `spatial_shape`: the image size `(h, w)`.
        - `key`: a PRNG key, for strategies that sample.

        **Returns:**

        `(kernel, new_state)`.
        """

    def after_update(
        self,
        generator: KernelGenerator,
        kernel: FourierKernel | SparseKernel,
        new_state: KernelState,
        spatial_shape: tuple[int, int],
        *,
        state_gradient: KernelState | None = None,
    ) -> KernelState:
        """The state to carry to the next step, once the optimizer has updated the
        generator.

        A training step calls it after the update, with the updated `generator` and the
        `kernel` and `new_state` that `__call__` returned. The default returns
        `new_state`; [`cfconv.Sparse`][] with `write_back=True` re-evaluates the updated
        generator at the sampled positions, and with `error_feedback=True` adds the
        step's kernel gradient to the residual.

        **Arguments:**

        - `generator`: the layer's generator, after the optimizer update.
        - `kernel`, `new_state`: what `__call__` returned for this step.
        - `spatial_shape`: the image size `(h, w)`.
        - `state_gradient`: the loss's gradient with respect to the step's input state
          (a [`cfconv.KernelState`][] of gradients), passed only to strategies whose
          [`needs_state_gradient`][cfconv.AbstractStrategy.needs_state_gradient] is
          `True`. A subclass whose `needs_state_gradient` is `False` may leave it out of
          its signature; one whose property is (or may be) `True` must accept it.

        **Returns:**

        The next [`cfconv.KernelState`][].
        """
        del generator, kernel, spatial_shape, state_gradient
        return new_state
