"""How every table and card writes a figure that may be missing."""

from __future__ import annotations


def number(value, spec: str) -> str:
    """`value` in format `spec`, or "-" where there is none."""
    return "-" if value is None else format(value, spec)
