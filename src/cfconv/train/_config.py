"""The settings of a training run (`cfconv train`'s options), checked on construction."""

import dataclasses
import math
from typing import Any, Literal, cast

import optax

from .._errors import check_non_negative, check_positive
from .._layerwise import Layerwise
from .._strategies import SAMPLINGS, AbstractStrategy, Chunked, Dense, Remat, Sparse
from ..models import GENERATOR_KINDS, MODEL_NAMES, AbstractModel, make_model
from ._optimizer import LR_SCHEDULES, make_optimizer


STRATEGY_NAMES: tuple[str, ...] = ("naive", "remat", "scan", "sparse-scan", "sparse-vmap")
"""The paper's training methods (Tables 2 and 3), as `cfconv train --strategy` names."""

STATE_INITS: tuple[str, ...] = ("uniform", "generator")
"""How [`cfconv.train.fit`][] starts the stored kernels (`TrainConfig.state_init`)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and must match when resuming).

    **Fields:**

    - `model`: one of `cfconv.models.MODEL_NAMES`.
    - `strategy`: one of `STRATEGY_NAMES` (ignored by the spatial CNN).
    - `positions`: positions sampled per step and layer by the sparse strategies, or a
      tuple of them per layer (the last entry also holds for the layers after it;
      entries beyond `depth` are not used), each a positive integer, a share of the
      layer's grid written as a percentage (`"20%"`: [`cfconv.Sparse`][]'s `share`),
      or `"all"`, the layer's whole grid
      ([`cfconv.Layerwise`][] of [`cfconv.Sparse`][]s). Default `("all", "20%")`:
      the first layer's grid whole, a fifth of the grid in each of the others.
    - `rate`: the sparse EMA rate (the paper's 0.1).
    - `chunk_size`: positions per chunk for `scan` and `sparse-scan`.
    - `image_size`: images are `image_size x image_size`.
    - `epochs`: the total number of epochs (a resumed run continues up to it).
    - `batch_size`, `lr`, `seed`: as usual (Adam optimizer).
    - `write_back`: sparse strategies blend the updated generators' values into the
      stored kernels at the sampled positions ([`cfconv.Sparse`][]'s `write_back`;
      default `True`; `False` is the paper's step).
    - `generator_momentum`: Adam's `b1` for the generator MLPs; `None` (default): 0 for
      the sparse strategies, 0.9 (Adam's, the paper's) for the others; see
      [`cfconv.train.make_optimizer`][] and `momentum`.
    - `generator_lr`: the learning rate of the generator MLPs (`None`: `lr`); see
      [`cfconv.train.make_optimizer`][].
    - `generator_weight_decay`: decoupled weight decay on the generator MLPs' weights
      (default 0; see [`cfconv.train.make_optimizer`][]).
    - `lr_schedule`: `"constant"` (default, the paper's) or `"cosine"`: both learning
      rates decay to zero over the run's `epochs` ([`cfconv.train.make_optimizer`][]).
    - `sampling`: how the sparse strategies draw positions: `"uniform"` (the paper's,
      and the default), or `"stratified"`, over the frequencies by the size of the
      kernel gradient, refreshed at the start of every epoch ([`cfconv.Sparse`][]'s
      `sampling`, [`cfconv.train.refresh_frequency_weights`][]).
    - `sampling_floor`: with `"stratified"`, the share of each step's positions spread
      evenly over the frequencies ([`cfconv.frequency_weights`][]'s `floor`).
    - `error_feedback`: the sparse strategies keep the kernel gradient at the entries a
      step does not sample, and pass it to the generators when they are next sampled
      ([`cfconv.Sparse`][]'s `error_feedback`; default `True`; the dense strategies
      ignore it, as they do the other sparse settings).
    - `state_init`: the CF-Conv nets' stored kernels start as the `"generator"`s'
      kernels, evaluated everywhere once (default), or as `"uniform"` noise (the paper's,
      `init_states`). Sparse updates overwrite a stored kernel only where they sample
      it, so noise that is rarely sampled stays for long.
    - `width`, `depth`: filters per layer and number of convolution layers.
    - `mlp_hidden`: the generator MLPs' hidden widths (`None`: the model's default).
    - `generator`: the generator MLPs of a CF-Conv net, `"sine"` or `"relu"` (the
      paper's); see [`cfconv.models.GENERATORS`][].
    - `frequency_scale`: the generator MLPs' first-layer weights on the frequency
      coordinates are multiplied by this at initialisation (`None`: the `generator`'s,
      2 for `"sine"`, 1 for `"relu"`); see [`cfconv.models.CFConvNet`][].
    - `augment`: random flips, shifts, brightness and contrast on training batches.

    The defaults of `write_back`, `generator_momentum`, `error_feedback`, `state_init`
    and `positions` depart from the paper for the sparse strategies: on the digits the
    paper's step reached 0.28 (`cfconv demo`, seed 0). After 30 epochs with
    `lr_schedule="cosine"` these defaults trailed the spatial CNN by 0.88 points on the
    digits (twelve seeds, standard error 0.45) and were 1.2 points above it on a 16x16
    image folder of the digits (nine seeds, standard error 1.7; `docs/accuracy.md`).
    The cosine schedule stays off by default because it cost both nets accuracy in
    10-epoch runs, where neither has finished learning. `write_back=False,
    generator_momentum=0.9, error_feedback=False, state_init="uniform"` with a count of
    `positions` in every layer (and the default uniform `sampling`) is the paper's step.
    """

    model: str = "hw_cin_cout"
    strategy: str = "sparse-vmap"
    positions: int | str | tuple[int | str, ...] = ("all", "20%")
    rate: float = 0.1
    chunk_size: int = 2**15
    image_size: int = 8
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    generator_lr: float | None = None
    generator_weight_decay: float = 0.0
    lr_schedule: str = "constant"
    write_back: bool = True
    generator_momentum: float | None = None
    sampling: str = "uniform"
    sampling_floor: float = 0.05
    error_feedback: bool = True
    state_init: str = "generator"
    seed: int = 0
    width: int = 32
    depth: int = 6
    mlp_hidden: tuple[int, ...] | None = None
    generator: str = "sine"
    frequency_scale: float | None = None
    augment: bool = True

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"`model` must be one of {MODEL_NAMES}, got {self.model!r}")
        if self.generator not in GENERATOR_KINDS:
            raise ValueError(
                f"`generator` must be one of {GENERATOR_KINDS}, got {self.generator!r}"
            )
        if self.strategy not in STRATEGY_NAMES:
            raise ValueError(f"`strategy` must be one of {STRATEGY_NAMES}, got {self.strategy!r}")
        for name in ("chunk_size", "image_size", "epochs", "batch_size", "width", "depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        _check_positions(self.positions)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {self.seed!r}")
        if not 0 < self.rate <= 1:
            raise ValueError(f"`rate` must be in (0, 1], got {self.rate}")
        if not self.lr > 0:
            raise ValueError(f"`lr` must be positive, got {self.lr}")
        if self.generator_lr is not None and not self.generator_lr > 0:
            raise ValueError(f"`generator_lr` must be positive or None, got {self.generator_lr}")
        check_non_negative("generator_weight_decay", self.generator_weight_decay)
        if self.frequency_scale is not None:
            check_positive("frequency_scale", self.frequency_scale)
        for name in ("write_back", "error_feedback", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be a bool, got {getattr(self, name)!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"`lr_schedule` must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"`sampling` must be one of {SAMPLINGS}, got {self.sampling!r}")
        if self.state_init not in STATE_INITS:
            raise ValueError(f"`state_init` must be one of {STATE_INITS}, got {self.state_init!r}")
        floor = self.sampling_floor
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor <= 1:
            raise ValueError(f"`sampling_floor` must be in [0, 1], got {floor!r}")
        momentum = self.generator_momentum
        if momentum is not None and (
            isinstance(momentum, bool)
            or not isinstance(momentum, (int, float))
            or not (0 <= momentum < 1)
        ):
            raise ValueError(
                f"`generator_momentum` must be in [0, 1), got {self.generator_momentum}"
            )

    def kernel_strategy(self) -> AbstractStrategy:
        """The core strategy for `strategy` (for per-layer `positions`, a
        [`cfconv.Layerwise`][] of one [`cfconv.Sparse`][] per layer)."""
        sampling = cast(Literal["uniform", "stratified"], self.sampling)  # checked on init
        if self.strategy == "naive":
            return Dense()
        if self.strategy == "remat":
            return Remat()
        if self.strategy == "scan":
            return Chunked(chunk_size=self.chunk_size)
        chunk_size = self.chunk_size if self.strategy == "sparse-scan" else None

        def sparse(entry: int | str | None) -> Sparse:
            num, share = (None, share_of(entry)) if isinstance(entry, str) else (entry, None)
            return Sparse(num, self.rate, chunk_size=chunk_size, write_back=self.write_back,
                          sampling=sampling, error_feedback=self.error_feedback,
                          share=share)  # fmt: skip

        if not isinstance(self.positions, tuple):
            return sparse(self.positions)
        return Layerwise([sparse(layer_positions(self.positions, i)) for i in range(self.depth)])

    @property
    def momentum(self) -> float:
        """The generator momentum in effect: `generator_momentum`, or if that is `None`,
        0 for the sparse strategies (whose stored kernel already delays the generator's
        feedback) and 0.9 for the others."""
        if self.generator_momentum is not None:
            return self.generator_momentum
        return 0.0 if self.strategy.startswith("sparse") else 0.9

    def optimizer(self, steps_per_epoch: int | None = None) -> optax.GradientTransformation:
        """The optimizer of a run with this configuration
        ([`cfconv.train.make_optimizer`][]): what a checkpoint's optimizer state is the
        state of. A `"cosine"` `lr_schedule` needs `steps_per_epoch` (its decay spans
        `epochs * steps_per_epoch` steps)."""
        if self.lr_schedule != "constant" and (
            isinstance(steps_per_epoch, bool)
            or not isinstance(steps_per_epoch, int)
            or steps_per_epoch < 1
        ):
            raise ValueError(
                f"`steps_per_epoch` must be a positive integer for lr_schedule="
                f"{self.lr_schedule!r} (its decay spans `epochs * steps_per_epoch` steps; a "
                f"training set smaller than `batch_size` gives none), got {steps_per_epoch!r}"
            )
        total = None if steps_per_epoch is None else self.epochs * steps_per_epoch
        return make_optimizer(self.lr, self.generator_lr, generator_momentum=self.momentum,
                              lr_schedule=self.lr_schedule, total_steps=total,
                              generator_weight_decay=self.generator_weight_decay)  # fmt: skip

    def build_model(self, in_channels: int, num_classes: int, *, key) -> AbstractModel:
        """The network of a run with this configuration (`model`, `width`, `depth`,
        `generator`, `mlp_hidden`, and `image_size` for `"fourier"`), for data of
        `in_channels` channels and `num_classes` classes: what a checkpoint's model is
        (`frequency_scale` too)."""
        kwargs: dict[str, Any] = {}
        if self.model == "fourier":
            kwargs = {"image_size": (self.image_size, self.image_size)}
        elif self.model != "spatial":
            kwargs = {"generator": self.generator, "frequency_scale": self.frequency_scale}
            if self.mlp_hidden is not None:
                kwargs["mlp_hidden"] = self.mlp_hidden
        return make_model(self.model, in_channels=in_channels, num_classes=num_classes,
                          width=self.width, depth=self.depth, key=key, **kwargs)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        data = dict(data)
        # Runs from before these fields existed made the paper's step with Adam's momentum.
        data.setdefault("write_back", False)
        data.setdefault("generator_momentum", 0.9)
        data.setdefault("sampling", "uniform")
        data.setdefault("state_init", "uniform")
        data.setdefault("error_feedback", False)
        data.setdefault("lr_schedule", "constant")
        if isinstance(data.get("positions"), list):
            data["positions"] = tuple(data["positions"])
        if data.get("mlp_hidden") is not None:
            data["mlp_hidden"] = tuple(data["mlp_hidden"])
        return cls(**data)


def share_of(entry: str) -> float:
    """The share of a layer's grid that a `positions` entry such as `"20%"` asks for, in
    (0, 1]; raises naming `positions` for anything else."""
    number = entry[:-1] if isinstance(entry, str) and entry.endswith("%") else None
    try:
        share = float(number) / 100  # pyright: ignore[reportArgumentType]
    except (TypeError, ValueError):
        share = math.nan
    if not 0 < share <= 1:
        raise ValueError(
            f"`positions` entries that are shares must be percentages in (0, 100], "
            f"such as '20%', got {entry!r}"
        )
    return share


def _check_positions(positions) -> None:
    """`TrainConfig.positions`: a positive integer or a share such as `"20%"`, or a
    non-empty tuple of entries, each one of those or `"all"` (entries beyond the last
    layer are not used)."""

    def valid(p):
        if isinstance(p, str) and p.endswith("%"):
            share_of(p)  # raises with the reason
            return True
        return p == "all" or (isinstance(p, int) and not isinstance(p, bool) and p >= 1)

    if isinstance(positions, tuple):
        if positions and all(valid(p) for p in positions):
            return
    elif valid(positions) and positions != "all":
        return
    raise ValueError(
        "`positions` must be a positive integer or a percentage such as '20%', or a "
        "non-empty tuple of entries, each one of those or 'all', got "
        f"{positions!r}"
    )


def layer_positions(positions, index: int) -> int | str | None:
    """The entry of `TrainConfig.positions` for layer `index` (a number or a share such
    as `"20%"`, or a sequence whose last entry holds for the later layers); `None` for
    `"all"`."""
    if not isinstance(positions, (tuple, list)):
        return positions
    entry = positions[min(index, len(positions) - 1)]
    return None if entry == "all" else entry
