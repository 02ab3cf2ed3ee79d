"""Helpers for the planner's tests: a Setup from the real composed config, with fields replaced."""

from __future__ import annotations

from functools import lru_cache

from conftest import compose

from bigtrain.plan import Setup, setup_from


@lru_cache(maxsize=64)
def _composed(overrides: tuple[str, ...]) -> Setup:
    return setup_from(compose("task=plan", *overrides))


def setup(*overrides: str, **fields) -> Setup:
    """setup_from(compose('task=plan', *overrides)) with `fields` replaced (e.g. nodes=4, zero=3)."""
    return _composed(tuple(overrides)).vary(**fields)
