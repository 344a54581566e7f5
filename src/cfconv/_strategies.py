"""Kernel-phase strategies: how a layer turns its generator and state into this step's kernel."""

import math
from typing import ClassVar, Literal

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ._custom_types import FourierKernel, KernelValues, Positions
from ._errors import check_int, check_rate, check_share
from ._evaluation import chunked, evaluate_remat
from ._feedback import feedback_residual, feedback_step
from ._generators import KernelGenerator
from ._positions import sample_positions
from ._state import KernelState, SparseKernel, sparse_update
from ._strategy_base import AbstractStrategy as AbstractStrategy
from ._stratified import scale_gradient, stratified_positions


def _dense_result(kernel: FourierKernel, state: KernelState) -> tuple[FourierKernel, KernelState]:
    # Dense training stores the kernel it generated, so that inference can use the state.
    # That kernel belongs to the parameters *before* this step's optimizer update;
    # regenerate it (e.g. with this strategy) after the last update before inference.
    return kernel, state.replace_kernel(jax.lax.stop_gradient(kernel))


class Dense(AbstractStrategy):
    """Evaluate the generator at every position, with plain autodiff (the paper's "naive").

    Memory grows with every MLP activation at every kernel position: at the paper's size
    this exhausts an 80 GB GPU. The state is not read; the new state is the generated
    kernel.
    """

    generates_state: ClassVar[bool] = True

    def __call__(self, generator, state, spatial_shape, *, key=None):
        return _dense_result(generator.materialize(spatial_shape), state)


class Remat(AbstractStrategy):
    """Like [`cfconv.Dense`][], but with gradient checkpointing (rematerialization).

    Only the generated kernel is kept for the backward pass; the MLP activations are
    recomputed then. The backward pass still evaluates every position at once.
    """

    generates_state: ClassVar[bool] = True

    def __call__(self, generator, state, spatial_shape, *, key=None):
        materialize = eqx.filter_checkpoint(lambda g: g.materialize(spatial_shape))
        return _dense_result(materialize(generator), state)


class Chunked(AbstractStrategy):
    """Evaluate every position in checkpointed chunks under `jax.lax.scan` (the paper's "scan").

    Memory for the generator and its gradient is proportional to `chunk_size`; the
    gradient is the exact dense gradient.
    """

    generates_state: ClassVar[bool] = True

    chunk_size: int = eqx.field(static=True, default=2**15)
    unroll: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_int("chunk_size", self.chunk_size)
        check_int("unroll", self.unroll)

    def __call__(self, generator, state, spatial_shape, *, key=None):
        kernel = generator.materialize(
            spatial_shape, chunk_size=self.chunk_size, unroll=self.unroll
        )
        return _dense_result(kernel, state)


class Sparse(AbstractStrategy):
    r"""The paper's sparse updates: sample, evaluate there, blend into the state.

    Each call samples `num` positions uniformly ([`cfconv.sample_positions`][]), evaluates
    the generator only there, and returns
    `ema_update(stop_gradient(state), positions, values, rate=rate)` as this step's
    kernel: unsampled entries come from the state and get no gradient; sampled entries
    pass gradient to the generator scaled by `rate`. The next state is the same kernel
    without gradient.

    The kernel is returned as a [`cfconv.SparseKernel`][] (from
    [`cfconv.sparse_update`][]), so that the convolution computes its gradient at the
    sampled positions only; [`SparseKernel.dense`][cfconv.SparseKernel.dense] gives the
    plain array.

    With `chunk_size=None` the positions are evaluated together (the paper's "vmap");
    with an integer, `chunk_size` at a time in a checkpointed scan (the paper's "scan"),
    which bounds memory at some cost in speed.

    Evaluated together with plain autodiff, the MLPs' activations at every position
    would be kept for the backward pass: at $2^{18}$ positions, most of a training
    step's memory. So with `chunk_size=None` the forward pass is one batched evaluation
    that keeps no activations, and the backward pass recomputes them
    `remat_chunk_size` positions at a time (a scan), accumulating the generator's
    gradient. Values and gradients are those of plain autodiff, up to float rounding;
    on CPU this is even faster than plain autodiff (the chunks stay in cache).
    `remat_chunk_size=None` gives plain autodiff. With a `chunk_size`, the scan already
    keeps no more than a chunk's activations, and `remat_chunk_size` is not used.

    **Fields:**

    - `num`: positions sampled per call (the paper's $2^{12} \dots 2^{21}$), or `None`:
      every position of the grid, each once. With `share`, the most positions per call
      (`None`: no limit).
    - `share`: instead of a fixed number, sample this share of the grid per call, in
      $(0, 1]$: `round(share * size)` positions of a grid of `size` entries (at least
      one, at most `num`), so that layers and images of different sizes are sampled
      alike. `None` (default): `num` positions. See [`count`][cfconv.Sparse.count].
    - `rate`: the EMA weight of the fresh values (the paper's 0.1).
    - `replace`: sample with replacement (default) or without (a grid smaller than
      `num` is then sampled whole).
    - `chunk_size`: `None` (evaluate together) or positions per scan step.
    - `unroll`: scan iterations unrolled (for either scan).
    - `remat_chunk_size`: positions per step of the backward pass's recomputation
      (default $2^{15}$), or `None`.
    - `write_back`: blend the generator's values *after* the optimizer update into the
      state at the sampled positions (see below; default `False`, the paper's step).
    - `sampling`: `"uniform"` (the paper's, default) or `"stratified"` (see below).

    **Write-back.** In the paper's step the next state holds, at the sampled positions,
    the values the generator gave *before* this step's optimizer update: the update that
    the gradient at those positions asked for reaches the stored kernel only when they
    are sampled again, many steps later, by which time the updates for other positions
    have moved the generator there too. With `write_back=True`, a training step that
    calls [`after_update`][cfconv.AbstractStrategy.after_update] (as
    [`cfconv.train.make_train_step`][] does) evaluates the updated generator at the same
    positions (forward only, no gradient) and blends those values into the state
    instead, so that every step's update reaches the stored kernel at once. It costs one
    more evaluation of the MLPs at `num` positions per step (forward only). What it does
    to accuracy is measured in `docs/accuracy.md`.

    **Stratified sampling.** With `sampling="stratified"` the positions are not uniform:
    [`cfconv.stratified_positions`][] spreads them over the kernel's frequencies in
    proportion to the state's `frequency_weights` (which the state must then hold; see
    [`cfconv.frequency_weights`][] and [`cfconv.train.refresh_frequency_weights`][]),
    distinct channel pairs within each frequency, and scales each position's gradient so
    that the step's generator gradient is still an unbiased estimate of the same multiple
    of the exact one. Where the weights follow the size of the kernel gradient (on the
    digits, a few low frequencies carry most of it), a step's gradient is much less
    noisy than with uniform positions. The positions are distinct, so `replace` is not
    used, and a grid smaller than `num` is sampled whole.

    **Error feedback.** With `error_feedback=True` the kernel gradient at the entries a
    step does not sample is kept in the state's `residual` (which the state must hold:
    [`cfconv.KernelState.with_residual`][]) and joins an entry's gradient when the entry
    is next sampled, instead of being lost (stratified positions then get no gradient
    scales). The convolution computes the kernel gradient at every entry, and the
    training step must pass the state's gradient to
    [`after_update`][cfconv.AbstractStrategy.after_update], as
    [`cfconv.train.make_train_step`][] does. The "Sparse updates" guide explains it;
    what it does to accuracy is measured in `docs/accuracy.md`.
    """

    num: int | None = eqx.field(static=True, default=2**18)
    rate: float | Float[Array, ""] = 0.1
    replace: bool = eqx.field(static=True, default=True)
    chunk_size: int | None = eqx.field(static=True, default=None)
    unroll: int = eqx.field(static=True, default=1)
    remat_chunk_size: int | None = eqx.field(static=True, default=2**15)
    write_back: bool = eqx.field(static=True, default=False)
    sampling: Literal["uniform", "stratified"] = eqx.field(static=True, default="uniform")
    error_feedback: bool = eqx.field(static=True, default=False)
    share: float | None = eqx.field(static=True, default=None)
    needs_key: ClassVar[bool] = True

    def __check_init__(self):
        if self.num is not None:
            check_int("num", self.num)
        if self.share is not None:
            check_share("share", self.share)
        check_rate(self.rate)
        if self.chunk_size is not None:
            check_int("chunk_size", self.chunk_size)
        check_int("unroll", self.unroll)
        if self.remat_chunk_size is not None:
            check_int("remat_chunk_size", self.remat_chunk_size)
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {self.sampling!r}")
        if not isinstance(self.error_feedback, bool):
            raise TypeError(f"`error_feedback` must be a bool, got {self.error_feedback!r}")

    @property
    def needs_frequency_weights(self) -> bool:
        """`True` with `sampling="stratified"`."""
        return self.sampling == "stratified"

    @property
    def needs_residual(self) -> bool:
        """`True` with `error_feedback=True`."""
        return self.error_feedback

    @property
    def needs_state_gradient(self) -> bool:
        """`True` with `error_feedback=True`."""
        return self.error_feedback

    def count(self, size: int) -> int:
        """How many positions a call draws from a grid of `size` entries: `num`, or
        with `share`, `round(share * size)` (at least one, at most `num`); with
        `replace=False`, or with `num=None` and no `share`, at most `size`."""
        size = check_int("size", size)
        if self.share is not None:
            num = max(1, round(self.share * size))
            num = num if self.num is None else min(num, self.num)
        else:
            num = size if self.num is None else self.num
        return num if self.replace else min(num, size)

    def sample(self, generator: KernelGenerator, spatial_shape, *, key) -> Positions:
        """The positions this strategy would sample for `key` (uniform sampling)."""
        grid = generator.grid_shape(spatial_shape)
        size = math.prod(grid)
        if self.num is None and self.share is None:  # every position once
            return sample_positions(key, grid, size, replace=False)
        return sample_positions(key, grid, self.count(size), replace=self.replace)

    def evaluate(self, generator: KernelGenerator, positions: Positions, spatial_shape
                 ) -> KernelValues:  # fmt: skip
        """Evaluate the generator at `positions`, at once or in checkpointed chunks."""
        if self.chunk_size is None:
            if self.remat_chunk_size is not None:
                return evaluate_remat(generator, positions, spatial_shape,
                                       self.remat_chunk_size, self.unroll)  # fmt: skip
            return generator(positions, spatial_shape)
        num = positions.shape[0]

        @jax.checkpoint
        def body(_, chunk_positions):
            return None, generator(chunk_positions, spatial_shape)

        # Padding with position 0: its values are dropped.
        chunks = chunked(positions, min(self.chunk_size, num), 0)
        _, values = jax.lax.scan(body, None, chunks, unroll=self.unroll)
        return values.reshape(-1)[:num]

    def __call__(self, generator, state, spatial_shape, *, key=None):
        if key is None:
            raise ValueError("`key` is required by the Sparse strategy (it samples positions)")
        if self.sampling == "uniform":
            positions = self.sample(generator, spatial_shape, key=key)
            values = self.evaluate(generator, positions, spatial_shape)
        else:
            positions, scales = self.sample_stratified(generator, state, spatial_shape, key=key)
            values = self.evaluate(generator, positions, spatial_shape)
            if not self.error_feedback:
                values = scale_gradient(values, scales)
        kernel = sparse_update(state, positions, values, rate=self.rate)
        if self.error_feedback:
            return feedback_step(kernel, state, type(self).__name__)
        return kernel, state.replace_kernel(kernel.kernel)

    def sample_stratified(
        self, generator: KernelGenerator, state: KernelState, spatial_shape, *, key
    ) -> tuple[Positions, Float[Array, " num"]]:
        """The positions and gradient scales of [`cfconv.stratified_positions`][] for
        `state`'s `frequency_weights` (`num` of them, or the whole grid if smaller)."""
        grid = generator.grid_shape(spatial_shape)
        if state.frequency_weights is None:
            raise ValueError(
                "`state` has no `frequency_weights`, which `Sparse(sampling='stratified')` "
                "samples by: add them with `cfconv.train.refresh_frequency_weights` (or "
                "`KernelState(kernel, frequency_weights, residual)`)"
            )
        size = math.prod(grid)
        return stratified_positions(key, grid, min(self.count(size), size),
                                    state.frequency_weights)  # fmt: skip

    def after_update(self, generator, kernel, new_state, spatial_shape, *, state_gradient=None):
        if self.error_feedback:
            kernel = _check_step_kernel(kernel)
            new_state = feedback_residual(kernel, new_state, state_gradient, type(self).__name__)
        if not self.write_back:
            return new_state
        kernel = _check_step_kernel(kernel)
        values = jax.lax.stop_gradient(self.evaluate(generator, kernel.positions, spatial_shape))
        # `new_state` holds (1 - rate) S + rate v_old at the sampled positions; moving each by
        # weight * (v_new - v_old) gives (1 - rate) S + rate v_new (the weight is 0 for all
        # but the occurrence of a repeated position that was kept). Updating `new_state`
        # rather than re-blending the step's input state lets that buffer go early.
        new = new_state.kernel
        flat = _rewrite(new.reshape(-1), kernel.positions, kernel, values)
        return new_state.replace_kernel(flat.reshape(new.shape))


SAMPLINGS: tuple[str, ...] = ("uniform", "stratified")


def _check_step_kernel(kernel) -> SparseKernel:
    """`kernel`, if it is the `SparseKernel` a sparse step returned."""
    if not isinstance(kernel, SparseKernel):
        raise TypeError(
            f"`kernel` must be the SparseKernel this strategy returned, got {type(kernel).__name__}"
        )
    return kernel


def _rewrite(kernel, index, step: SparseKernel, values):
    """`kernel`, a sparse step's blended kernel, with the step's fresh values replaced by
    `values` at `index` (as for `kernel.at[index]`)."""
    kernel = jax.lax.stop_gradient(kernel)
    fresh = jax.lax.stop_gradient(step.values).astype(kernel.dtype)
    weights = jax.lax.stop_gradient(step.weights).astype(fresh.real.dtype)
    return kernel.at[index].add(weights * (values.astype(kernel.dtype) - fresh))


class Stored(AbstractStrategy):
    """Use the stored kernel as it is: inference without evaluating any MLP."""

    def __call__(self, generator, state, spatial_shape, *, key=None):
        return state.kernel, state


STRATEGIES: dict[str, type[AbstractStrategy]] = {
    "dense": Dense,
    "remat": Remat,
    "chunked": Chunked,
    "sparse": Sparse,
    "stored": Stored,
}


def resolve_strategy(strategy: "AbstractStrategy | str") -> AbstractStrategy:
    """Turn a strategy name (`"dense"`, `"remat"`, `"chunked"`, `"sparse"`, `"stored"`)
    into a strategy with default settings; strategy instances pass through."""
    if isinstance(strategy, AbstractStrategy):
        return strategy
    if isinstance(strategy, str) and strategy in STRATEGIES:
        return STRATEGIES[strategy]()
    raise ValueError(
        f"`strategy` must be one of {tuple(STRATEGIES)} or an AbstractStrategy, got {strategy!r}"
    )
