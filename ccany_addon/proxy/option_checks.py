"""What the addons' `configure` hooks make of option values: bounds checks (raising `OptionsError` rejects the
value), and the default upstream the reverse-mode target and its key options describe."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.proxy import mode_specs

from ccany_addon.upstreams.routing import Upstream


def require_bounds(updated: set[str], positive: Iterable[str] = (), non_negative: Iterable[str] = ()) -> None:
    for name in positive:
        if name in updated and getattr(ctx.options, name) <= 0:
            raise exceptions.OptionsError(f"{name} must be positive")
    for name in non_negative:
        if name in updated and getattr(ctx.options, name) < 0:
            raise exceptions.OptionsError(f"{name} must be 0 or positive")


def reverse_upstream(options: Any) -> Upstream | None:
    """The `--mode reverse:` target with the key from `ccany_upstream_key_env`: where a request no config route
    claims goes (None: mitmproxy runs in another mode)."""
    for spec in options.mode or ():
        mode = mode_specs.ProxyMode.parse(spec)
        if isinstance(mode, mode_specs.ReverseMode) and mode.scheme in ("http", "https"):
            key_env = options.ccany_upstream_key_env
            return Upstream(
                mode.scheme, mode.address[0], mode.address[1], options.ccany_upstream_path.rstrip("/"),
                os.environ.get(key_env, ""),
                f"ccany has no upstream API key: set {key_env} in the proxy's environment and restart it",
            )
    return None
