"""Checking configuration values: one wording for a bad number in every config of mfpeft (MFNet and the tuners)."""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_number(
    field: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    integer: bool = False,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ValueError naming `field` unless `value` is a finite number (an integer if asked) within the bounds.

    Bools are refused: JSON ``true`` is no rank. Bounds are inclusive unless ``low_open`` / ``high_open``.
    Shared by every config of mfpeft (MFNet and the tuners), so all of them word a bad number the same way.
    """
    kind = "an integer" if integer else "a finite number"
    number = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    wanted = f"{field}={value!r} must be {kind}" + (f" {' and '.join(bounds)}" if bounds else "")
    if not number or not math.isfinite(value):  # type: ignore[arg-type]
        raise ValueError(wanted)
    below = low is not None and (value <= low if low_open else value < low)  # type: ignore[operator]
    above = high is not None and (value >= high if high_open else value > high)  # type: ignore[operator]
    if below or above:
        raise ValueError(wanted)


def numbers_list(field: str, values: Any, integer: bool = False) -> list[Any]:
    """`values` as a list of int (whole numbers only) or float, or ValueError naming the field.

    Python's own conversion errors ("could not convert string to float") would not say which field; ``int(0.5)``
    would silently give 0.
    """

    def convert(value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
            raise ValueError
        number = float(value)
        if integer and not number.is_integer():
            raise ValueError
        return int(number) if integer else number

    try:
        return [convert(v) for v in values]
    except (TypeError, ValueError, OverflowError):
        kind = "whole numbers" if integer else "numbers"
        raise ValueError(f"{field}={values!r} must be a list of {kind}") from None
