"""Strict value checks shared by the config and manifest records.

Each check takes the full key it reports under (for example ``[batching].max_batch_size``), the value
and the error class to raise, and returns the value in its canonical type. ``bool`` is never accepted as
a number; an int is accepted where a float is wanted (and returned as float), never the reverse.
Non-finite floats are refused.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from registry.errors import RegistryError

__all__ = ["check_bool", "check_choice", "check_float", "check_int", "check_int_tuple", "check_str"]


def check_int(
    key: str,
    value: object,
    error: type[RegistryError],
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """``value`` as an int within [minimum, maximum]; ``error`` naming ``key`` otherwise."""
    if type(value) is not int:
        raise error(f"{key}: expected an integer, got {_describe(value)}")
    _check_range(key, value, error, minimum, maximum)
    return value


def check_float(
    key: str,
    value: object,
    error: type[RegistryError],
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
) -> float:
    """``value`` (a float, or an int) as a finite float within bounds; else ``error`` naming ``key``."""
    if type(value) not in (int, float):
        raise error(f"{key}: expected a number, got {_describe(value)}")
    number = float(value)  # type: ignore[arg-type]  # int or float, checked just above
    if not math.isfinite(number):
        raise error(f"{key}: expected a finite number, got {number}")
    if exclusive_minimum and minimum is not None and number <= minimum:
        raise error(f"{key}: must be > {minimum}, got {number}")
    _check_range(key, number, error, minimum, maximum)
    return number


def check_bool(key: str, value: object, error: type[RegistryError]) -> bool:
    """``value`` if it is a bool; ``error`` naming ``key`` otherwise."""
    if not isinstance(value, bool):
        raise error(f"{key}: expected true or false, got {_describe(value)}")
    return value


def check_str(key: str, value: object, error: type[RegistryError]) -> str:
    """``value`` if it is a str; ``error`` naming ``key`` otherwise."""
    if not isinstance(value, str):
        raise error(f"{key}: expected a string, got {_describe(value)}")
    return value


def check_choice(key: str, value: object, choices: Collection[str], error: type[RegistryError]) -> str:
    """``value`` if it is one of ``choices``; ``error`` naming ``key`` and the choices otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"{key}: expected one of {sorted(choices)}, got {_describe(value)}")
    return value


def check_int_tuple(
    key: str, value: object, error: type[RegistryError], *, minimum: int, ascending: bool = False
) -> tuple[int, ...]:
    """``value`` (a list or tuple of ints >= minimum, without repeats) as a tuple.

    With ``ascending`` the items must also be strictly increasing.
    """
    if not isinstance(value, list | tuple):
        raise error(f"{key}: expected a list of integers, got {_describe(value)}")
    items = tuple(check_int(f"{key}[{i}]", item, error, minimum=minimum) for i, item in enumerate(value))
    if len(set(items)) != len(items):
        raise error(f"{key}: repeated values in {list(items)}")
    if ascending and list(items) != sorted(items):
        raise error(f"{key}: must be in ascending order, got {list(items)}")
    return items


def _check_range(
    key: str, value: float, error: type[RegistryError], minimum: float | None, maximum: float | None
) -> None:
    if minimum is not None and value < minimum:
        raise error(f"{key}: must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise error(f"{key}: must be <= {maximum}, got {value}")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
