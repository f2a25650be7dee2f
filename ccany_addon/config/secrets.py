"""Secrets at rest: upstream keys encrypted with a master key (Fernet), client keys and passwords hashed.

The master key comes from `CCANY_MASTER_KEY`, or from a file beside the config DB that is created on first
use, readable only by its owner. Without it the encrypted upstream keys cannot be read: back it up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

logger = logging.getLogger("ccany")

MASTER_KEY_ENV = "CCANY_MASTER_KEY"
CIPHER_PREFIX = "enc:v1:"
CLIENT_KEY_PREFIX = "cck_"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class SecretError(Exception):
    pass


def master_key_path(config_db: str | Path) -> Path:
    return Path(config_db).with_name("master.key")


def load_master_key(config_db: str | Path, create: bool = True) -> bytes:
    """The Fernet key: from the environment, else the key file beside the config DB (made if missing)."""
    if value := os.environ.get(MASTER_KEY_ENV):
        key = value.strip().encode()
    else:
        path = master_key_path(config_db)
        if not path.exists():
            if not create:
                raise SecretError(f"no master key: set {MASTER_KEY_ENV} or restore {path}")
            _create_master_key(path)
        key = b""
        for _ in range(20):  # a process starting beside this one may be writing it right now
            if key := path.read_bytes().strip():
                break
            time.sleep(0.05)
    try:
        Fernet(key)
    except ValueError:
        raise SecretError(f"the master key is not a valid Fernet key ({MASTER_KEY_ENV} or its file)") from None
    return key


def _create_master_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # made by a process starting beside this one
    with os.fdopen(descriptor, "wb") as out:
        out.write(Fernet.generate_key())
    logger.warning(
        f"ccany: generated a new master key in {path}. BACK IT UP: without it the upstream keys stored in "
        f"the config DB cannot be decrypted. (Or keep it elsewhere and pass it as {MASTER_KEY_ENV}.)"
    )


class Cipher:
    def __init__(self, master_key: bytes) -> None:
        self._fernet = Fernet(master_key)

    def encrypt(self, plaintext: str) -> str:
        if is_encrypted(plaintext):
            return plaintext
        return CIPHER_PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not is_encrypted(stored):
            raise SecretError("stored key is not encrypted")
        try:
            return self._fernet.decrypt(stored.removeprefix(CIPHER_PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretError("stored key was encrypted with another master key") from None


def is_encrypted(value: str | None) -> bool:
    return bool(value) and value.startswith(CIPHER_PREFIX)  # type: ignore[union-attr]


def hint(secret: str) -> str:
    """What the UI may show of a secret: its last four characters."""
    return "…" + secret[-4:] if len(secret) >= 12 else "…"


def new_client_key() -> str:
    return CLIENT_KEY_PREFIX + secrets.token_urlsafe(30)


def client_key_hash(key: str) -> str:
    """Client keys are long random strings: a plain SHA-256 is enough, and cheap on every request."""
    return hashlib.sha256(key.encode()).hexdigest()


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.urlsafe_b64decode(salt), dklen=len(expected),
                                n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)
