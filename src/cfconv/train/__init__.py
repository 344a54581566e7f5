"""Training: jitted steps composable in your own loop, checkpoints, and the loop of
`cfconv train`."""

from ._checkpoint import (
    load_checkpoint as load_checkpoint,
    load_metadata as load_metadata,
    save_checkpoint as save_checkpoint,
)
from ._config import STRATEGY_NAMES as STRATEGY_NAMES, TrainConfig as TrainConfig
from ._loop import NonFiniteLossError as NonFiniteLossError, fit as fit
from ._optimizer import (
    LR_SCHEDULES as LR_SCHEDULES,
    generator_labels as generator_labels,
    make_optimizer as make_optimizer,
)
from ._sampling import (
    refresh_frequency_weights as refresh_frequency_weights,
    uniform_frequency_weights as uniform_frequency_weights,
)
from ._step import (
    loss_and_accuracy as loss_and_accuracy,
    make_eval_step as make_eval_step,
    make_train_step as make_train_step,
)


__all__ = [
    "LR_SCHEDULES",
    "STRATEGY_NAMES",
    "NonFiniteLossError",
    "TrainConfig",
    "fit",
    "generator_labels",
    "load_checkpoint",
    "load_metadata",
    "loss_and_accuracy",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "refresh_frequency_weights",
    "save_checkpoint",
    "uniform_frequency_weights",
]
