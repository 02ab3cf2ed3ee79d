"""Human-readable numbers for the table and the one-line verdict."""

from __future__ import annotations


def gb(n: float) -> str:
    """Bytes in decimal GB, as the ZeRO paper and vendors' datasheets count them."""
    return f"{n / 1e9:,.1f} GB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"


def count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:,.2f}{unit}"
    return f"{n:,.0f}"


def duration(seconds: float) -> str:
    if seconds >= 86400 * 2:
        return f"{seconds / 86400:,.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:,.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds:,.3g} s"


def usd(x: float) -> str:
    return f"${x / 1e6:,.2f}M" if x >= 1e6 else f"${x:,.0f}" if x >= 10 else f"${x:,.2f}"
