"""gunicorn's coercion of config-file values: what its validators accept, we accept.

Numbers may be strings (``workers = os.getenv("WEB_CONCURRENCY", 2)``), read as
``int(value, 0)``; booleans are True/False or "true"/"false"; lists may be one
comma-separated string.
"""

from __future__ import annotations

from typing import Any


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    raise ValueError(f"use a string or a list of strings, not {type(value).__name__}")


def integer(value: Any) -> int:
    """gunicorn's validate_pos_int: ints, or strings as int(value, 0) ("2", "0x10")."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    number = value if isinstance(value, int) else int(value.strip(), 0)
    if number < 0:
        raise ValueError("expected an integer >= 0")
    return number


def boolean(value: Any) -> bool:
    """gunicorn's validate_bool: True/False, or the strings "true"/"false"."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError('expected True, False, "true" or "false"')
