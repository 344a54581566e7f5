r"""Error feedback for sparse updates: the kernel gradient that sampling leaves out is kept.

A sparse step passes the loss's gradient to the generator at the sampled positions only,
and its convolution computes the kernel gradient there alone. With error feedback the
convolution computes the kernel gradient $G$ at every entry (a batched product per entry,
as in the dense strategies; no MLP is evaluated for it), adds it to a residual $R$ kept in
the [`cfconv.KernelState`][], and an entry's residual joins the gradient when the entry
is next sampled:

$$g_\theta = \sum_{p \in S} \text{rate} \, (G_p + R_p) \, \frac{\partial v_p}{\partial \theta},
\qquad R \leftarrow (R + G) \text{ with } R_S = 0,$$

where $S$ is the set of sampled positions. Every entry's gradient then reaches the
generator once, when the entry is next sampled, instead of being dropped on the steps
that do not sample it. This is the error feedback (or "memory") of sparsified gradient
methods (Seide et al. 2014; Stich, Cordonnier and Jaggi 2018; Karimireddy et al. 2019),
applied to the kernel's entries.
"""

import jax
import jax.numpy as jnp

from ._custom_types import KernelValues
from ._positions import unravel_positions
from ._state import KernelState, SparseKernel


@jax.custom_vjp
def add_cotangent(values: KernelValues, extra: KernelValues) -> KernelValues:
    """`values` unchanged; in reverse mode, `extra` is added to their cotangent (`extra`
    itself gets none)."""
    del extra
    return values


def _add_cotangent_fwd(values, extra):
    return values, extra


def _add_cotangent_bwd(extra, ct):
    return ct + extra.astype(ct.dtype), jnp.zeros_like(extra)


add_cotangent.defvjp(_add_cotangent_fwd, _add_cotangent_bwd)


def check_residual(state: KernelState, owner: str) -> jax.Array:
    """`state.residual`, or a clear error if the state has none."""
    if state.residual is None:
        raise ValueError(
            f"`state` has no `residual`, which `{owner}(error_feedback=True)` keeps the "
            "unsampled kernel gradient in: start from `state.with_residual()` (zeros), as "
            "`cfconv.train.fit` does"
        )
    return state.residual


def feedback_step(step: SparseKernel, state: KernelState, owner: str
                  ) -> tuple[SparseKernel, KernelState]:  # fmt: skip
    """A sparse step's kernel and next state with error feedback, from the kernel `step`
    of [`cfconv.sparse_update`][] (or its sharded equivalent) for the input `state`.

    The kernel has `step`'s value, except that:

    - each sampled value's cotangent gets the residual at its position (times its EMA
      weight, so a repeated position's residual is counted once);
    - the kernel carries the residual as a term of value zero, so that the loss's
      gradient with respect to `state.residual` is the kernel gradient at every entry
      (the kernel convolves densely: `dense_gradient=True`).

    The next state holds the blended kernel and the old residual;
    [`feedback_residual`][] adds the step's gradient to it once that is known. Gathers
    and scatters go by `(c_in, c_out, row, column)`, so that a residual split over output
    channels stays split.
    """
    residual = check_residual(state, owner)
    index = unravel_positions(step.positions, step.shape)
    carried = jax.lax.stop_gradient(residual)[index]
    values = add_cotangent(step.values, step.weights.astype(carried.real.dtype) * carried)
    probe = residual - jax.lax.stop_gradient(residual)  # zero, with the kernel's gradient
    kernel = SparseKernel(step.kernel + probe, step.positions, values, step.weights,
                          dense_gradient=True)  # fmt: skip
    new_state = KernelState(step.kernel, state.frequency_weights,
                            jax.lax.stop_gradient(residual))  # fmt: skip
    return kernel, new_state


def feedback_residual(
    kernel: SparseKernel, new_state: KernelState, state_gradient: KernelState | None, owner: str
) -> KernelState:
    """`new_state` with this step's kernel gradient (`state_gradient.residual`) added to
    its residual, and the residual at the sampled positions (which the generator has just
    received) set to zero."""
    if state_gradient is None or state_gradient.residual is None:
        raise ValueError(
            f"`{owner}(error_feedback=True).after_update` needs `state_gradient`, the "
            "loss's gradient with respect to the step's input state (as "
            "`cfconv.train.make_train_step` passes it for strategies whose "
            "`needs_state_gradient` is True)"
        )
    residual = check_residual(new_state, owner)
    total = jax.lax.stop_gradient(residual + state_gradient.residual.astype(residual.dtype))
    index = unravel_positions(kernel.positions, new_state.shape)
    return new_state.with_residual(total.at[index].set(0))
