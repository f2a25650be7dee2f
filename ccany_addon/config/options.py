"""The one table of ccany's mitmproxy options: name, type, default, help, which addon declares it, and whether
the config DB may set it (`settings`). Each addon's `load` declares its own rows (`declare`); the README's
options table is held against this one by a test.

A leaf module: mitmproxy's loader is passed in, never imported, so the config CLI and Datasette can read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ccany_addon.upstreams.models import TIERS

BODY_POLICIES: tuple[str, ...] = ("all", "errors", "none")

Owner = Literal["gateway", "flowlog", "config", "timeouts", "keepalive", "shutdown", "limits"]


class Loader(Protocol):
    def add_option(self, name: str, typespec: type, default: Any, help: str,
                   choices: tuple[str, ...] | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    type: type
    default: object
    help: str
    owner: Owner
    setting: bool = False  # the config DB's `settings` table may set it (an option given on the command line wins)
    choices: tuple[str, ...] | None = None


_MB = 1024 * 1024

OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option("ccany_big_model", str, "gpt-4o", "Upstream model for opus requests.", "gateway", True),
        Option("ccany_middle_model", str, "", "Upstream model for sonnet requests (empty: the big model).",
               "gateway", True),
        Option("ccany_small_model", str, "gpt-4o-mini", "Upstream model for haiku requests.", "gateway", True),
        Option("ccany_unknown_claude_tier", str, "big",
               "Tier (big, middle, small) of a claude-* name with no haiku/sonnet/opus in it, such as "
               "claude-fable-5-2.", "gateway", choices=TIERS),
        Option("ccany_upstream_key_env", str, "OPENAI_API_KEY",
               "Environment variable holding the upstream API key (the key itself is never an option).", "gateway"),
        Option("ccany_upstream_path", str, "/v1", "Path prefix of the upstream's API.", "gateway"),
        Option("ccany_request_timeout", int, 600,
               "Seconds to wait for the upstream's response headers before giving up.", "gateway", True),
        Option("ccany_max_tokens_limit", int, 0,
               "Clamp max_tokens to this many (0: only the upstream model's known limit).", "gateway", True),
        Option("ccany_max_body_size", int, 32 * _MB, "Largest client request body accepted, in bytes.", "gateway"),
        Option("ccany_temperature_override", str, "",
               "Send every request upstream with this temperature (empty: the client's own).", "gateway", True),
        Option("ccany_cache_ttl", int, 0,
               "Seconds a non-streamed answer is reused for an identical request (0: no response cache).",
               "gateway", True),
        Option("ccany_cache_max_entries", int, 1000, "Most answers the response cache keeps.", "gateway", True),
        Option("ccany_cache_max_mb", int, 64, "Most megabytes of answers the response cache keeps.", "gateway", True),
        Option("ccany_long_context_threshold", int, 60_000,
               "Estimated input tokens above which a request meets the long_context route scenario (0: never).",
               "gateway", True),
        Option("ccany_fold_system_messages", bool, False,
               "Fold system messages from the conversation into the leading one (for strict backends).",
               "gateway", True),
        Option("ccany_db", str, "data/ccany.db", "SQLite file of the flow log (empty: no flow log).", "flowlog"),
        Option("ccany_log_bodies", str, "all",
               "Which flows keep their bodies in the log: all, errors (failed flows only) or none.", "flowlog",
               True, BODY_POLICIES),
        Option("ccany_log_body_cap", int, _MB, "Bytes kept of each logged body (longer ones are cut).", "flowlog",
               True),
        Option("ccany_log_retention_days", int, 30,
               "Flows older than this many days are deleted (0: keep all).", "flowlog", True),
        Option("ccany_log_queue_size", int, 10_000,
               "Flows that may wait for the log writer before new ones are dropped.", "flowlog"),
        Option("ccany_log_queue_mb", int, 32,
               "Megabytes of bodies that may wait for the log writer before new flows are dropped.", "flowlog"),
        Option("ccany_config_db", str, "data/config.db",
               "SQLite file of the configuration: providers, keys, routes, client keys, users (empty: none).",
               "config"),
        Option("ccany_client_header_timeout", int, 30,
               "Seconds a new client connection has to send its first request's headers (0: no limit).", "timeouts"),
        Option("ccany_client_body_timeout", int, 120,
               "Seconds a client has to send a request's body once its headers have arrived (0: no limit).",
               "timeouts"),
        Option("ccany_keepalive_interval", int, 5,
               "Longest silence, in seconds, a streamed answer has before the gateway sends the client a ping "
               "(0: none).", "keepalive"),
        Option("ccany_redis_url", str, "",
               "Redis or Valkey URL (redis://host:6379/0) where gateway processes share request and token counts, "
               "concurrent streams and budgets spent (empty: this process alone). A password comes from "
               "CCANY_REDIS_PASSWORD, never from the URL.", "limits"),
        Option("ccany_shutdown_grace", int, 10,
               "Seconds a stop waits for flows in flight to finish before logging them as interrupted (0: none).",
               "shutdown"),
    )
}

# What the config DB's `settings` table may hold, and the type its text is read as.
SETTINGS: dict[str, type] = {name: option.type for name, option in OPTIONS.items() if option.setting}


def declare(loader: Loader, owner: Owner) -> None:
    """Declare the options an addon owns, from the table."""
    for option in OPTIONS.values():
        if option.owner == owner:
            loader.add_option(option.name, option.type, option.default, option.help, choices=option.choices)
