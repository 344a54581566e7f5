"""What a benchmark run measures: sizes, variants, repetitions, and the presets."""

import dataclasses
from typing import Any


def position_label(num: int) -> str:
    """`4096` -> `"2^12"`; a number that is no power of two stays as it is."""
    if num > 0 and num & (num - 1) == 0:
        return f"2^{num.bit_length() - 1}"
    return str(num)


def parse_positions(text: str) -> int:
    """`"2^12"`, `"2**12"` or `"4096"` -> 4096."""
    text = text.strip().replace("**", "^")
    try:
        if "^" in text:
            base, exponent = text.split("^")
            value = int(base) ** int(exponent)
        else:
            value = int(text)
    except ValueError:
        raise ValueError(f"expected a count such as 4096 or 2^12, got {text!r}") from None
    if value < 1:
        raise ValueError(f"positions must be positive, got {text!r}")
    return value


TABLE1_MODELS: tuple[str, ...] = ("hw", "hw_cin", "hw_cout")
"""The parameterizations other than the paper's `hw_cin_cout` whose naive training memory
Table 1 lists (as rows `naive-hw`, `naive-hw_cin`, `naive-hw_cout`)."""


def variant_names(positions: tuple[int, ...]) -> tuple[str, ...]:
    """Every variant a run can measure, in the order of the report.

    **Arguments:**

    - `positions`: the sparse position counts, e.g. `(2**12, 2**18)`.

    **Returns:**

    `("spatial", "naive-hw", "naive-hw_cin", "naive-hw_cout", "naive", "remat", "scan",
    "sparse-scan-2^12", ..., "sparse-vmap-2^12", ..., "sparse-train-2^12", ...,
    "sparse-all-2^12", ..., "dense-exact", "inference-stored", "inference-spatial",
    "breakdown")`. The `sparse-scan` and `sparse-vmap` rows time the paper's step (no
    write-back, uniform positions, no error feedback); `sparse-train` rows time the
    sparse update of `cfconv train`'s defaults (`sparse-vmap` with write-back and error
    feedback, uniform positions) with the row's number of positions in every layer;
    `sparse-all` rows time the same update with the first layer's grid sampled whole and
    the row's number in each other layer (`--positions all,N`); with a fifth of a later
    layer's grid (2334720 positions at 150x150) that is the kernel update of `cfconv
    train`'s defaults, `all,20%` (every row's optimizer is Adam, without `cfconv train`'s
    augmentation).
    """
    labels = [position_label(p) for p in positions]
    return (
        "spatial",
        *(f"naive-{m}" for m in TABLE1_MODELS),
        "naive",
        "remat",
        "scan",
        *(f"sparse-scan-{p}" for p in labels),
        *(f"sparse-vmap-{p}" for p in labels),
        *(f"sparse-train-{p}" for p in labels),
        *(f"sparse-all-{p}" for p in labels),
        "dense-exact",
        "inference-stored",
        "inference-spatial",
        "breakdown",
    )


SPARSE_GROUPS: tuple[str, ...] = ("sparse-scan", "sparse-vmap", "sparse-train", "sparse-all")
"""Variant groups with one row per position count."""


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """The settings of one benchmark run (see [`cfconv.bench.run_benchmark`][]).

    **Fields:**

    - `image_size`: images are `image_size x image_size x 3` (the paper's 150).
    - `batch_size`: examples per training step (default 32).
    - `width`, `depth`: filters per layer and convolution layers (the paper's 32 and 6).
    - `positions`: sparse positions per step and layer, one `sparse-scan-*`, one
      `sparse-vmap-*`, one `sparse-train-*` and one `sparse-all-*` variant each (the
      paper's $2^{12}, 2^{15}, 2^{18}, 2^{21}$).
    - `variants`: the variant names to measure (see [`cfconv.bench.variant_names`][]);
      `None` for all. `spatial` is always measured (every ratio is to it); the group
      names `sparse-scan`, `sparse-vmap`, `sparse-train` and `sparse-all` select every
      position count.
    - `repeats`: timed repetitions per variant (medians are reported).
    - `warmup`: untimed calls per variant before timing (the first compiles).
    - `budget`: seconds; a variant whose timed calls add up to more than this stops
      repeating (it keeps at least one timed call), so that the slow dense variants do
      not take `repeats` times their minutes.
    - `chunk_size`: positions per chunk of `scan` and `sparse-scan` (as `cfconv train`).
    - `exact_chunk_size`: positions per chunk of `dense-exact`; `None` for
      [`cfconv.Chunked`][]'s default.
    - `breakdown_positions`: the sparse-vmap step whose pieces are timed.
    - `memory_limit`: bytes; a training step whose compiled memory exceeds it is not
      run. `None`: 90% of the memory available when the run starts (`MemAvailable` on
      CPU, the device's `bytes_limit` on GPU).
    - `seed`: seeds the models, data and keys.
    """

    image_size: int = 150
    batch_size: int = 32
    width: int = 32
    depth: int = 6
    positions: tuple[int, ...] = (2**12, 2**15, 2**18, 2**21)
    variants: tuple[str, ...] | None = None
    repeats: int = 5
    warmup: int = 1
    budget: float | int = 120.0
    chunk_size: int = 2**15
    exact_chunk_size: int | None = None
    breakdown_positions: int = 2**18
    memory_limit: int | None = None
    seed: int = 0

    def __post_init__(self):
        for name in ("image_size", "batch_size", "width", "depth", "repeats", "chunk_size",
                     "breakdown_positions"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
        for name in ("warmup", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}")
        if self.image_size < 4:
            raise ValueError(f"`image_size` must be at least 4, got {self.image_size}")
        if self.exact_chunk_size is not None and (
            isinstance(self.exact_chunk_size, bool)
            or not isinstance(self.exact_chunk_size, int)
            or self.exact_chunk_size < 1
        ):
            raise ValueError(
                f"`exact_chunk_size` must be None or a positive integer, got "
                f"{self.exact_chunk_size!r}"
            )
        if not isinstance(self.budget, (int, float)) or not self.budget > 0:
            raise ValueError(f"`budget` must be a positive number of seconds, got {self.budget!r}")
        if self.memory_limit is not None and not self.memory_limit > 0:
            raise ValueError(f"`memory_limit` must be None or positive, got {self.memory_limit!r}")
        positions = tuple(self.positions)
        if not positions or any(
            isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in positions
        ):
            raise ValueError(f"`positions` must be positive integers, got {self.positions!r}")
        if len(set(positions)) != len(positions):
            raise ValueError(f"`positions` must not repeat, got {self.positions!r}")
        object.__setattr__(self, "positions", positions)
        if self.variants is not None:
            known = variant_names(positions)
            groups = SPARSE_GROUPS
            unknown = [v for v in self.variants if v not in known and v not in groups]
            if unknown or not self.variants:
                raise ValueError(
                    f"`variants` must be names from {known} (or the groups {groups}), got "
                    f"{tuple(self.variants)!r}"
                )
            object.__setattr__(self, "variants", tuple(self.variants))

    def selected(self) -> tuple[str, ...]:
        """The variants this run measures, in report order (`spatial` always; with
        `inference-stored` also `inference-spatial`; with `breakdown` also the sparse-vmap
        step it divides)."""
        known = variant_names(self.positions)
        if self.variants is None:
            return known
        chosen = {"spatial"}
        for v in self.variants:
            if v in SPARSE_GROUPS:
                chosen.update(n for n in known if n.startswith(v + "-"))
            else:
                chosen.add(v)
        if "inference-stored" in chosen:
            chosen.add("inference-spatial")
        if "breakdown" in chosen:
            chosen.add(f"sparse-vmap-{position_label(self.breakdown_positions)}")
        extra = [v for v in sorted(chosen) if v not in known]
        return tuple(v for v in known if v in chosen) + tuple(extra)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["positions"] = list(self.positions)
        data["variants"] = None if self.variants is None else list(self.variants)
        return data


PRESETS: dict[str, BenchConfig] = {
    "default": BenchConfig(),
    "quick": BenchConfig(
        image_size=64,
        batch_size=16,
        positions=(2**12, 2**15, 2**18),
        repeats=3,
        budget=30.0,
        breakdown_positions=2**18,
    ),
    "tiny": BenchConfig(
        image_size=12,
        batch_size=4,
        width=4,
        depth=2,
        positions=(2**6,),
        variants=(
            "naive",
            "sparse-vmap",
            "sparse-train",
            "sparse-all",
            "dense-exact",
            "inference-stored",
            "breakdown",
        ),  # fmt: skip
        repeats=2,
        budget=5.0,
        chunk_size=2**7,
        exact_chunk_size=2**8,
        breakdown_positions=2**6,
    ),
}
"""Ready-made settings: `"default"` (the paper's network at 150x150x3, batch 32, every
position count of the paper), `"quick"` (64x64, batch 16, fewer repetitions: minutes on a
small machine) and `"tiny"` (12x12 images, two layers of 4 filters, one position count
and a few variants: for tests, not for conclusions)."""


def grid_size(config: BenchConfig) -> int:
    """Entries of one hidden layer's Fourier kernel grid (`width^2 * h * (w // 2 + 1)`)."""
    return config.width**2 * config.image_size * (config.image_size // 2 + 1)
