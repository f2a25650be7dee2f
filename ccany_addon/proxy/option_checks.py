"""Bounds checks shared by the addons' `configure` hooks: raising `OptionsError` rejects the value."""

from __future__ import annotations

from collections.abc import Iterable

from mitmproxy import ctx, exceptions


def require_bounds(updated: set[str], positive: Iterable[str] = (), non_negative: Iterable[str] = ()) -> None:
    for name in positive:
        if name in updated and getattr(ctx.options, name) <= 0:
            raise exceptions.OptionsError(f"{name} must be positive")
    for name in non_negative:
        if name in updated and getattr(ctx.options, name) < 0:
            raise exceptions.OptionsError(f"{name} must be 0 or positive")
