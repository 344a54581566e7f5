"""Argument types of the `cfconv` command line: each parses one option's text or raises
`argparse.ArgumentTypeError` saying what was wrong."""

import argparse


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _number_in(text: str, low: float, high: float, *, open_low: bool, open_high: bool) -> float:
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
    above = value > low if open_low else value >= low
    below = value < high if open_high else value <= high
    if not (above and below):
        raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
    return value


def positive_float(text: str) -> float:
    return _number_in(text, 0.0, float("inf"), open_low=True, open_high=True)


def non_negative_float(text: str) -> float:
    return _number_in(text, 0.0, float("inf"), open_low=False, open_high=True)


def fraction(text: str) -> float:
    return _number_in(text, 0.0, 1.0, open_low=True, open_high=False)


def momentum(text: str) -> float:
    return _number_in(text, 0.0, 1.0, open_low=False, open_high=True)


def unit_interval(text: str) -> float:
    return _number_in(text, 0.0, 1.0, open_low=False, open_high=False)


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def int_list(text: str, what: str, *, minimum: int) -> tuple[int, ...]:
    """Comma-separated integers, each at least `minimum` (`what` names them in errors)."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if min(values) < minimum:
        kind = "positive" if minimum == 1 else f"at least {minimum}"
        kind = "non-negative" if minimum == 0 else kind
        raise argparse.ArgumentTypeError(f"{what} must be {kind}, got {text!r}")
    return values


def layer_positions(text: str) -> "int | str | tuple[int | str, ...]":
    """`4096`, `20%`, or per layer `all,20%,...` (`all`: the layer's whole grid; `N%`: N
    percent of it; the last entry also for the layers after it)."""
    from .train._config import share_of

    values: list[int | str] = []
    for entry in (e.strip() for e in text.split(",")):
        if entry == "all":
            values.append("all")
            continue
        if entry.endswith("%"):
            try:
                share_of(entry)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"a share of the grid must be a percentage in (0, 100], such as 20%, "
                    f"got {entry!r} in {text!r}"
                ) from None
            values.append(entry)
            continue
        try:
            count = int(entry)
        except ValueError:
            raise argparse.ArgumentTypeError(
                "expected a positive integer or a percentage such as 20%, or those and "
                f"'all' comma-separated, got {text!r}"
            ) from None
        if count < 1:
            raise argparse.ArgumentTypeError(f"positions must be positive, got {text!r}")
        values.append(count)
    if len(values) == 1 and values[0] != "all":
        return values[0]
    return tuple(values)


def widths(text: str) -> tuple[int, ...]:
    return int_list(text, "widths", minimum=1)


def mesh_shape(text: str) -> tuple[int, int]:
    from .distributed import parse_mesh

    try:
        return parse_mesh(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DATAxMODEL, e.g. 4x2, got {text!r}")


def seeds(text: str) -> tuple[int, ...]:
    values = int_list(text, "seeds", minimum=0)
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"seeds must be distinct, got {text!r}")
    return values
