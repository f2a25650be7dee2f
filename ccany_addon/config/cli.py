"""Headless configuration: `python -m ccany_addon.config …` (or `ccany-config …`).

Secrets never go on the command line, where a process list would show them: keys and passwords are read
from an environment variable named with `--from-env`, or from standard input.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from ccany_addon.config import store
from ccany_addon.config.schema import (
    KEY_STRATEGIES,
    PROVIDER_KINDS,
    ROLES,
    SCENARIOS,
    SETTINGS,
    open_config_db,
)
from ccany_addon.config.secrets import Cipher, SecretError, load_master_key
from ccany_addon.config.snapshot import setting_value
from ccany_addon.config.transfer import dump_yaml, export_config, import_config, load_yaml
from ccany_addon.upstreams.models import TIERS
from ccany_addon.util.private_files import create_private

ACTOR = "cli"


def _secret(args: argparse.Namespace, what: str) -> str:
    if args.from_env:
        value = os.environ.get(args.from_env, "")
        if not value:
            raise store.ConfigError(f"{args.from_env} is empty or not set")
        return value
    if sys.stdin.isatty():
        return getpass.getpass(f"{what}: ")
    return sys.stdin.readline().rstrip("\n")


# The yes/no facts of a `model_capabilities` row, each a `capabilities` option (`--late-system` …).
CAPABILITY_FLAGS = ("vision", "tools", "reasoning", "late_system", "prompt_cache_key", "structured_outputs",
                    "xhigh_effort")
UNSET = "default"  # a capability option's value that clears the override (NULL: the built-in value again)


def _flag(text: str) -> bool | None:
    if text.strip().lower() == UNSET:
        return None
    try:
        return bool(setting_value(bool, text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected true, false or {UNSET}, not {text!r}") from None


def _count(text: str) -> int | None:
    if text.strip().lower() == UNSET:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or {UNSET}, not {text!r}") from None


def _options_given(args: argparse.Namespace, subject: str, what: str) -> dict[str, Any]:
    """The options of a command that sets some of a row's values (the others left out, not cleared)."""
    given = {name: value for name, value in vars(args).items() if name not in ("db", "command", subject)}
    if not given:
        raise store.ConfigError(f"name at least one {what} to set (see {args.command} --help)")
    return given


def _shown(values: dict[str, Any]) -> str:
    return ", ".join(f"{name}={UNSET if value is None else value}" for name, value in values.items())


def _usd(text: str) -> float:
    """An amount of USD (a price per million tokens, a limit)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, not {text!r}")
    return value


def _limit(text: str) -> float | None:
    """A limit or budget: a number (a whole one stays whole), or 'default' for none."""
    if text.strip().lower() == UNSET:
        return None
    value = _usd(text)
    return int(value) if value == int(value) else value


def _model_or_unset(text: str) -> str | None:
    return None if text.strip().lower() == UNSET else text.strip()


OVER_BUDGET_OPTION = ("--over-budget-model",)
OVER_BUDGET_HELP: dict[str, Any] = {
    "dest": "over_budget_model", "type": _model_or_unset, "default": argparse.SUPPRESS, "metavar": "MODEL",
    "help": f"over a budget, answer with this Claude model (routed as if asked for) instead of refusing ('{UNSET}': "
            "refuse)"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccany-config", description="Edit ccany's config DB without a browser.")
    parser.add_argument("--db", default=os.environ.get("CCANY_CONFIG_DB", "data/config.db"),
                        help="the config DB (default: $CCANY_CONFIG_DB or data/config.db)")
    commands = parser.add_subparsers(dest="command", required=True)

    provider = commands.add_parser("provider-add", help="add an upstream provider")
    provider.add_argument("name")
    provider.add_argument("--base-url", required=True, help="e.g. https://api.openai.com/v1")
    provider.add_argument("--kind", default="openai", choices=PROVIDER_KINDS)
    provider.add_argument("--api-version")
    for tier in TIERS:
        provider.add_argument(f"--{tier}-model")
    provider.add_argument("--key-strategy", default="round-robin", choices=KEY_STRATEGIES)
    provider.add_argument("--fallback", help="comma-separated providers to use while every key cools down")

    key = commands.add_parser("key-set", help="store an upstream key for a provider (encrypted)")
    key.add_argument("provider")
    key.add_argument("--name", default="default")
    key.add_argument("--from-env", metavar="VAR", help="read the key from this environment variable (else stdin)")

    route = commands.add_parser("route-add", help="route client models matching a pattern to a provider")
    route.add_argument("pattern", help="a glob over the requested model, e.g. '*haiku*'")
    route.add_argument("provider")
    route.add_argument("--model", help="upstream model (default: the provider's tier models)")
    route.add_argument("--priority", type=int, default=100, help="lower wins (default 100)")
    route.add_argument("--scenario", choices=SCENARIOS, help="apply only to requests in this scenario")

    client = commands.add_parser("client-key-create", help="create a client access key (printed once)")
    client.add_argument("name")
    client.add_argument("--expires", help="last valid day, YYYY-MM-DD")
    client.add_argument("--models", help="comma-separated model patterns this key may use")

    user = commands.add_parser("user-add", help="add a Datasette user")
    user.add_argument("username")
    user.add_argument("--role", default="viewer", choices=ROLES)
    user.add_argument("--from-env", metavar="VAR", help="read the password from this variable (else stdin)")

    password = commands.add_parser("user-password", help="set a user's password")
    password.add_argument("username")
    password.add_argument("--from-env", metavar="VAR", help="read the password from this variable (else stdin)")

    setting = commands.add_parser("setting", help="set a tunable (empty value: remove it)")
    setting.add_argument("name", choices=sorted(SETTINGS))
    setting.add_argument("value")

    caps = commands.add_parser("capabilities", help="override built-in capabilities of matching upstream models",
                               description=f"Each option given is set; '{UNSET}' clears it (the built-in value "
                                           "applies again); options not given keep what the row has.")
    caps.add_argument("pattern", help="a glob over the upstream model, e.g. 'qwen3-*'")
    for name in ("max_output_tokens", "context_window"):
        caps.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_count, default=argparse.SUPPRESS,
                          metavar="N")
    caps.add_argument("--max-tokens-field", dest="max_tokens_field", default=argparse.SUPPRESS,
                      choices=("max_tokens", "max_completion_tokens", UNSET))
    for name in CAPABILITY_FLAGS:
        caps.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_flag, default=argparse.SUPPRESS,
                          metavar=f"true|false|{UNSET}")
    caps.add_argument("--notes", default=argparse.SUPPRESS)

    limits = commands.add_parser("client-key-limits", help="limit a client key's requests, tokens, streams and spend",
                                 description=f"Each option given is set; '{UNSET}' removes that limit; options not "
                                             "given keep what the key has.")
    limits.add_argument("name", help="the client key's name")
    limits.add_argument("--user", dest="owner", default=argparse.SUPPRESS, metavar="USERNAME",
                        help=f"the key's owner, whose budgets all their keys spend ('{UNSET}': none)")
    for option, column, what in (("--rpm", "rpm_limit", "requests a minute"), ("--tpm", "tpm_limit", "tokens a minute"),
                                 ("--streams", "max_streams", "streams at once"),
                                 ("--daily-usd", "daily_budget_usd", "USD per UTC day"),
                                 ("--monthly-usd", "monthly_budget_usd", "USD per UTC month")):
        limits.add_argument(option, dest=column, type=_limit, default=argparse.SUPPRESS, metavar="N", help=what)
    limits.add_argument(*OVER_BUDGET_OPTION, **OVER_BUDGET_HELP)

    budget = commands.add_parser("user-budget", help="budget what all of a user's client keys spend together")
    budget.add_argument("username")
    for option, column, what in (("--daily-usd", "daily_budget_usd", "USD per UTC day"),
                                 ("--monthly-usd", "monthly_budget_usd", "USD per UTC month")):
        budget.add_argument(option, dest=column, type=_limit, default=argparse.SUPPRESS, metavar="N", help=what)
    budget.add_argument(*OVER_BUDGET_OPTION, **OVER_BUDGET_HELP)

    price = commands.add_parser("price", help="price matching upstream models (USD per million tokens) instead of "
                                "the maintained price table", description="0 for a model on your own hardware. "
                                "A cache price left out costs as much as input.")
    price.add_argument("pattern", help="a glob over the upstream model, e.g. 'llama*'")
    price.add_argument("--provider", default="", help="only at this provider (its name; default: any)")
    price.add_argument("--input", type=_usd, metavar="USD")
    price.add_argument("--output", type=_usd, metavar="USD")
    price.add_argument("--cache-read", dest="cache_read", type=_usd, metavar="USD")
    price.add_argument("--cache-write", dest="cache_write", type=_usd, metavar="USD")
    price.add_argument("--notes")
    price.add_argument("--remove", action="store_true", help="remove this price (the table's applies again)")

    export = commands.add_parser("export", help="write the whole config as YAML")
    export.add_argument("file", nargs="?", help="default: standard output")
    export.add_argument("--with-secrets", action="store_true", help="include upstream keys, key and password hashes")

    load = commands.add_parser("import", help="merge a YAML config written by export")
    load.add_argument("file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cipher = Cipher(load_master_key(args.db))
        db = open_config_db(args.db, cipher)
        out = _run(args, db, cipher)
    except (store.ConfigError, SecretError) as error:
        print(f"ccany-config: {error}", file=sys.stderr)
        return 1
    if out:
        print(out)
    return 0


def _run(args: argparse.Namespace, db, cipher: Cipher) -> str:
    match args.command:
        case "provider-add":
            models = {tier: getattr(args, f"{tier}_model") for tier in TIERS}
            fallback = [name.strip() for name in args.fallback.split(",")] if args.fallback else None
            pid = store.add_provider(db, ACTOR, args.name, args.base_url, args.kind, args.api_version,
                                     {tier: model for tier, model in models.items() if model}, args.key_strategy,
                                     fallback)
            return f"provider {args.name} added (id {pid})"
        case "key-set":
            key_id = store.set_provider_key(db, ACTOR, args.provider, _secret(args, "upstream key"), args.name)
            return f"key {args.name} of {args.provider} stored encrypted (id {key_id})"
        case "route-add":
            route_id = store.add_route(db, ACTOR, args.pattern, args.provider, args.model, args.priority,
                                       args.scenario)
            return f"route {args.pattern} → {args.provider} added (id {route_id})"
        case "client-key-create":
            models = [part.strip() for part in args.models.split(",")] if args.models else None
            key_id, key = store.create_client_key(db, ACTOR, args.name, args.expires, models)
            return f"client key {args.name} (id {key_id}); shown this once, store it now:\n{key}"
        case "user-add":
            user_id = store.add_user(db, ACTOR, args.username, _secret(args, "password"), args.role)
            return f"user {args.username} ({args.role}) added (id {user_id})"
        case "user-password":
            store.set_password(db, ACTOR, args.username, _secret(args, "new password"))
            return f"password of {args.username} changed"
        case "setting":
            store.set_setting(db, ACTOR, args.name, args.value or None)
            return f"{args.name} = {args.value or '(default)'}"
        case "capabilities":
            facts = _options_given(args, "pattern", "capability")
            if facts.get("max_tokens_field") == UNSET:
                facts["max_tokens_field"] = None
            capability_id = store.set_capabilities(db, ACTOR, args.pattern, **facts)
            return f"capabilities of {args.pattern}: {_shown(facts)} (id {capability_id})"
        case "client-key-limits":
            chosen = _options_given(args, "name", "limit")
            if "owner" in chosen and chosen["owner"].strip().lower() == UNSET:
                chosen["owner"] = None
            key_id = store.set_client_key_limits(db, ACTOR, args.name, **chosen)
            return f"limits of client key {args.name} (id {key_id}): {_shown(chosen)}"
        case "user-budget":
            chosen = _options_given(args, "username", "budget")
            store.set_user_budgets(db, ACTOR, args.username, **chosen)
            return f"budgets of user {args.username}: {_shown(chosen)}"
        case "price":
            where = f" at {args.provider}" if args.provider else ""
            if args.remove:
                store.remove_price(db, ACTOR, args.pattern, args.provider)
                return f"price of {args.pattern}{where} removed"
            price_id = store.set_price(db, ACTOR, args.pattern, args.provider, args.notes, input_per_mtok=args.input,
                                       output_per_mtok=args.output, cache_read_per_mtok=args.cache_read,
                                       cache_write_per_mtok=args.cache_write)
            return f"price of {args.pattern}{where}: input ${args.input}, output ${args.output} per million tokens " \
                f"(id {price_id})"
        case "export":
            text = dump_yaml(export_config(db, cipher, args.with_secrets))
            if not args.file:
                return text.rstrip("\n")
            path = Path(args.file)
            if args.with_secrets:
                create_private(path)  # private from its first byte; an existing file is made private below
            path.write_text(text)
            if args.with_secrets:
                path.chmod(0o600)
            return f"config written to {path}" + (" (with secrets: keep it private)" if args.with_secrets else "")
        case "import":
            try:
                text = Path(args.file).read_text()
            except (OSError, UnicodeDecodeError) as error:
                raise store.ConfigError(f"cannot read {args.file}: {error}") from None
            return "\n".join(import_config(db, load_yaml(text))) or "nothing new to import"
    raise AssertionError(args.command)
