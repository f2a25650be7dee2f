"""A config DB with a provider, an upstream key, a client key and (optionally) an admin and a viewer, written the
way the CLI writes it, and the secrets that must never show up in anything Datasette answers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from datasette.app import Datasette

from ccany_addon.config import store
from ccany_addon.config.schema import open_config_db
from ccany_addon.config.secrets import CIPHER_PREFIX, Cipher, client_key_hash, load_master_key
from tests.conftest import secret
from tests.datasette.app import make_datasette

# secret(): the whole test run's DB files and logs are scanned for these at the end (tests/conftest.py).
PROVIDER_KEY = secret("sk-proj-PLAINTEXT-fixture-key-7f3a9c1e5b2d")
ADMIN = ("alice", secret("alice-correct-horse-1"))
VIEWER = ("victor", secret("victor-battery-staple-2"))
CSRF_ATTACK = {"origin": "http://evil.example", "sec-fetch-site": "cross-site"}


@dataclass
class Config:
    path: Path
    client_key: str
    extra_secrets: list[str] = field(default_factory=list)  # more plain text a test wrote

    @property
    def cipher(self) -> Cipher:
        return Cipher(load_master_key(self.path, create=False))

    def secrets(self) -> list[str]:
        """Strings no response may contain: plain keys, ciphertext, hashes, passwords."""
        return [
            PROVIDER_KEY,
            self.client_key,
            client_key_hash(self.client_key),
            CIPHER_PREFIX + "gAAAA",  # a Fernet token (the trigger SQL in schema pages says 'enc:v1:%', harmlessly)
            "scrypt$",
            ADMIN[1],
            VIEWER[1],
            *self.extra_secrets,
        ]

    def file_bytes(self) -> bytes:
        return b"".join(p.read_bytes() for p in (self.path, Path(f"{self.path}-wal")) if p.exists())


def make_config(path: Path, *, users: bool = True) -> Config:
    db = open_config_db(path, Cipher(load_master_key(path)))
    store.add_provider(db, "cli", "openai", "http://127.0.0.1:9/v1", models={"big": "gpt-4.1"})
    store.set_provider_key(db, "cli", "openai", PROVIDER_KEY)
    store.add_route(db, "cli", "claude-*", "openai", "gpt-4.1")
    store.set_capabilities(db, "cli", "gpt-4.1*", max_output_tokens=16384)
    store.set_price(db, "cli", "llama*", input_per_mtok=0, output_per_mtok=0, notes="own hardware")
    _, client_key = store.create_client_key(db, "cli", "laptop", "2099-12-31", ["claude-*"])
    secret(client_key)
    store.set_setting(db, "cli", "ccany_big_model", "gpt-4.1")
    if users:
        store.add_user(db, "cli", *ADMIN, role="admin")
        store.add_user(db, "cli", *VIEWER, role="viewer")
    db.close()
    return Config(path, client_key)


def datasette_for(flow_db: Path, config: Config) -> Datasette:
    return make_datasette(flow_db, config_db=config.path)


def leaks(text: str, config: Config) -> list[str]:
    return [secret for secret in config.secrets() if secret in text]


async def login(ds: Datasette, username: str, password: str) -> httpx.Response:
    return await ds.client.post("/-/login", data={"username": username, "password": password, "next": "/"})


async def session(ds: Datasette, username: str, password: str) -> dict[str, str]:
    """Cookies of a real login."""
    response = await login(ds, username, password)
    assert response.status_code == 302, response.text[:500]
    return {"ds_actor": response.cookies["ds_actor"]}


def audit_rows(config: Config) -> list[dict]:
    db = open_config_db(config.path, None)
    try:
        return list(db["audit"].rows_where(order_by="id"))
    finally:
        db.close()


def error_text(html: str) -> str:
    match = re.search(r'class="message-error ccany-error">(.*?)</p>', html, re.S)
    return match.group(1) if match else ""
