"""The sparse kernel phase with the stored kernel split over output channels."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .._feedback import feedback_residual, feedback_step
from .._layerwise import Layerwise
from .._positions import unravel_positions
from .._state import SparseKernel, blend
from .._strategies import AbstractStrategy, Sparse, _check_step_kernel, _rewrite
from .._stratified import scale_gradient
from ._mesh import DATA_AXIS, MODEL_AXIS, check_mesh


class ShardedSparse(AbstractStrategy):
    """[`cfconv.Sparse`][] for kernel states split over output channels on a mesh.

    It computes exactly what the wrapped `Sparse` strategy computes, on any mesh: the
    same positions for the same key (they are sampled from the one, replicated key, as on
    one device), the same generator values, the same EMA. Only the layout differs:

    - the sampled positions are split over all devices of the mesh for the generator
      evaluation (when their number is divisible by the device count), so each device
      evaluates the MLPs at `num / devices` positions;
    - the EMA gathers and scatters by `(c_in, c_out, row, column)`, so each device reads
      and writes only the entries of its own output channels, and no device ever holds a
      whole kernel (flat indexing, as in [`cfconv.ema_update`][], would gather it);
    - the kernel (a [`cfconv.SparseKernel`][], as `Sparse` returns) and the next state
      are constrained to `PartitionSpec(None, "model")`.

    [`cfconv.train.make_train_step`][] with a `mesh` wraps a `Sparse` strategy in it.
    """

    sparse: Sparse
    mesh: Mesh = eqx.field(static=True)
    needs_key: ClassVar[bool] = True

    def __init__(self, sparse: Sparse, mesh: Mesh):
        """**Arguments:**

        - `sparse`: the [`cfconv.Sparse`][] strategy to run.
        - `mesh`: a mesh from [`cfconv.distributed.make_mesh`][].
        """
        if not isinstance(sparse, Sparse):
            raise TypeError(f"`sparse` must be a cfconv.Sparse, got {type(sparse).__name__}")
        self.sparse = sparse
        self.mesh = check_mesh(mesh)

    @property
    def needs_frequency_weights(self) -> bool:
        return self.sparse.needs_frequency_weights

    @property
    def needs_residual(self) -> bool:
        return self.sparse.needs_residual

    @property
    def needs_state_gradient(self) -> bool:
        return self.sparse.needs_state_gradient

    def __call__(self, generator, state, spatial_shape, *, key=None):
        if key is None:
            raise ValueError("`key` is required by the ShardedSparse strategy (it samples)")
        if self.sparse.sampling == "uniform":
            positions = self._spread(self.sparse.sample(generator, spatial_shape, key=key))
            values = self.sparse.evaluate(generator, positions, spatial_shape)
        else:
            positions, scales = self.sparse.sample_stratified(generator, state, spatial_shape,
                                                              key=key)  # fmt: skip
            positions, scales = self._spread(positions), self._spread(scales)
            values = self.sparse.evaluate(generator, positions, spatial_shape)
            if not self.sparse.error_feedback:
                values = scale_gradient(values, scales)
        kernel, new_state = self._blend(state, positions, values)
        if not self.sparse.error_feedback:
            return kernel, new_state
        kernel, new_state = feedback_step(kernel, state, "ShardedSparse")
        return kernel, self._split_residual(new_state)

    def after_update(self, generator, kernel, new_state, spatial_shape, *, state_gradient=None):
        """As [`cfconv.Sparse`][]'s (write-back, error feedback), with this strategy's
        layout."""
        if self.sparse.error_feedback:
            kernel = _check_step_kernel(kernel)
            new_state = feedback_residual(kernel, new_state, state_gradient, "ShardedSparse")
            new_state = self._split_residual(new_state)
        if not self.sparse.write_back:
            return new_state
        kernel = _check_step_kernel(kernel)
        positions = self._spread(kernel.positions)
        values = jax.lax.stop_gradient(self.sparse.evaluate(generator, positions, spatial_shape))
        split = NamedSharding(self.mesh, P(None, MODEL_AXIS))
        new = jax.lax.with_sharding_constraint(new_state.kernel, split)
        # As `Sparse.after_update`, indexed by (c_in, c_out, row, column) (see `_blend`).
        new = _rewrite(new, unravel_positions(positions, new.shape), kernel, values)
        return new_state.replace_kernel(jax.lax.with_sharding_constraint(new, split))

    def _split_residual(self, state):
        split = NamedSharding(self.mesh, P(None, MODEL_AXIS))
        return state.with_residual(jax.lax.with_sharding_constraint(state.residual, split))

    def _spread(self, positions):
        """The positions split over every device (when the device count divides them)."""
        if positions.shape[0] % self.mesh.size == 0:
            spread = NamedSharding(self.mesh, P((DATA_AXIS, MODEL_AXIS)))
            positions = jax.lax.with_sharding_constraint(positions, spread)
        return positions

    def _blend(self, state, positions, values):
        rate = self.sparse.rate
        if not isinstance(rate, (int, float)):
            rate = jnp.asarray(rate)
            rate = eqx.error_if(rate, (rate <= 0) | (rate > 1), "`rate` must be in (0, 1]")
        split = NamedSharding(self.mesh, P(None, MODEL_AXIS))
        old = jax.lax.with_sharding_constraint(jax.lax.stop_gradient(state.kernel), split)
        # `sparse_update`'s arithmetic, indexed by (c_in, c_out, row, column) instead of by
        # flat position: flattening a kernel that is split over its second axis would
        # gather it whole on every device, whereas a four-index gather and scatter stay
        # split (each device touches only the entries of its own output channels).
        index = unravel_positions(positions, old.shape)
        kernel, weights = blend(old, index, values, rate)
        kernel = jax.lax.with_sharding_constraint(kernel, split)
        return SparseKernel(kernel, positions, values, weights), state.replace_kernel(kernel)


def shard_strategy(strategy: AbstractStrategy, mesh: Mesh) -> AbstractStrategy:
    """The strategy to use on `mesh`: a [`cfconv.Sparse`][] becomes a
    [`cfconv.distributed.ShardedSparse`][] (in a [`cfconv.Layerwise`][] too); other
    strategies are returned as they are (their kernels are generated whole and then
    split)."""
    if isinstance(strategy, Sparse):
        return ShardedSparse(strategy, mesh)
    if isinstance(strategy, Layerwise):
        return Layerwise([shard_strategy(s, mesh) for s in strategy.strategies])
    return strategy
