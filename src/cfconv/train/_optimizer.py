"""The optimizer of `cfconv train`: Adam, with its own learning rate for kernel generators."""

import jax
import optax
from jaxtyping import PyTree

from .._errors import check_int, check_non_negative, check_positive


def _is_generator_path(path: tuple) -> bool:
    return any(isinstance(k, jax.tree_util.GetAttrKey) and k.name == "generator" for k in path)


def _weights(params: PyTree) -> PyTree:
    """`True` at the weight matrices (fields named `weight`), `False` at the biases."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(path) and getattr(path[-1], "name", None) == "weight", params
    )


def generator_labels(params: PyTree) -> PyTree:
    """Label every leaf of `params` `"generator"` (inside a `generator` field, as in
    [`cfconv.CFConv2d`][]) or `"other"`: the labels of `optax.multi_transform`."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "generator" if _is_generator_path(path) else "other", params
    )


LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
"""The learning-rate schedules of [`cfconv.train.make_optimizer`][] (`cfconv train
--lr-schedule`)."""


def learning_rate(lr: float, schedule: str = "constant", total_steps: int | None = None
                  ) -> float | optax.Schedule:  # fmt: skip
    """`lr` as `schedule` has it: the number itself (`"constant"`), or a cosine decay
    from `lr` at step 0 to zero at `total_steps` (`"cosine"`, which needs
    `total_steps`)."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"`lr_schedule` must be one of {LR_SCHEDULES}, got {schedule!r}")
    if schedule == "constant":
        return lr
    if total_steps is None:
        raise ValueError(f"`total_steps` is required for lr_schedule={schedule!r}")
    return optax.cosine_decay_schedule(lr, check_int("total_steps", total_steps))


def make_optimizer(
    lr: float,
    generator_lr: float | None = None,
    *,
    generator_momentum: float = 0.9,
    lr_schedule: str = "constant",
    total_steps: int | None = None,
    generator_weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    r"""Adam with learning rate `lr`, and `generator_lr`, `generator_momentum` and
    `generator_weight_decay` for the kernel generators' MLPs.

    With sparse updates the stored kernel follows the generator only slowly: a sampled
    entry moves a fraction `rate` of the way to the generator's value, and a step
    samples a fraction $p \approx$ `num / grid` of the entries, so the stored kernel
    lags the generator by about $1 / (p \cdot \text{rate})$ steps. The gradient that
    reaches the generator is computed on the stored kernel, so a generator that moves
    faster than the stored kernel can follow is steered by stale information and
    overshoots. A smaller `generator_lr` keeps it within reach, at the cost of learning
    more slowly; less momentum (`generator_momentum`, Adam's $\beta_1$) removes the
    optimizer's own delay of about $1 / (1 - \beta_1)$ steps on top of the stored
    kernel's. A learning rate that decays to zero (`lr_schedule="cosine"`) slows the
    generator down at the end of the run, so that the stored kernel catches up with it
    (see `docs/accuracy.md`).

    **Arguments:**

    - `lr`: the learning rate of every parameter outside a generator (biases, head,
      spatial convolutions, Fourier kernels).
    - `generator_lr`: the learning rate of the generator MLPs; `None` (default) uses `lr`.
    - `generator_momentum`: Adam's $\beta_1$ for the generator MLPs, in `[0, 1)`
      (default 0.9, Adam's).
    - `lr_schedule`: `"constant"` (default, the paper's), or `"cosine"`: both learning
      rates decay along a half cosine from their value at step 0 to zero at
      `total_steps` (`optax.cosine_decay_schedule`).
    - `total_steps`: the number of optimizer steps of the run; needed by `"cosine"`.
    - `generator_weight_decay`: decoupled weight decay (AdamW's, `optax.adamw`) on the
      generator MLPs' weight matrices, not their biases: each step also subtracts the
      generator learning rate times this times the weight. Default 0 (none). Smaller
      first-layer weights on the frequency inputs make smoother Fourier kernels, that
      is, spatially more concentrated ones (see [`cfconv.models.CFConvNet`][]'s
      `frequency_scale`). On the digits, 1 and 3 collapsed the kernels to their centre
      tap and stopped the sparse net learning (`docs/accuracy.md`,
      "What the generator costs").

    **Returns:**

    An `optax.GradientTransformation`; initialise it with
    `optimizer.init(eqx.filter(model, eqx.is_inexact_array))`.
    """
    lr = check_positive("lr", lr)
    if generator_lr is not None:
        generator_lr = check_positive("generator_lr", generator_lr)
    if (
        isinstance(generator_momentum, bool)
        or not isinstance(generator_momentum, (int, float))
        or not 0 <= generator_momentum < 1
    ):
        raise ValueError(f"`generator_momentum` must be in [0, 1), got {generator_momentum!r}")
    decay = check_non_negative("generator_weight_decay", generator_weight_decay)
    generator_lr = lr if generator_lr is None else generator_lr
    other = optax.adam(learning_rate(lr, lr_schedule, total_steps))
    if generator_lr == lr and generator_momentum == 0.9 and decay == 0:
        return other
    generator_rate = learning_rate(generator_lr, lr_schedule, total_steps)
    if decay == 0:
        generator = optax.adam(generator_rate, b1=generator_momentum)
    else:
        generator = optax.adamw(generator_rate, b1=generator_momentum, weight_decay=decay,
                                mask=_weights)  # fmt: skip
    return optax.multi_transform({"generator": generator, "other": other}, generator_labels)
