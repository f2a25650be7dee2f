"""Bounded before read: what a client sends is limited in size and time before the gateway reads it, and heavy
work never stalls the proxy's other clients. Raw sockets where a client that misbehaves must be imitated."""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
import time

import httpx
import pytest

from tests.conftest import config_db, start_proxy, stop
from tests.e2e.test_http import GOOD, anthropic_error

LIMIT = 16 * 1024 * 1024
SLOW_CLIENTS = int(os.environ.get("CCANY_SLOW_CLIENTS", "300"))


@pytest.fixture(scope="module")
def proxy(fake_upstream, tmp_path_factory):
    """Client keys on (so unauthenticated clients can be refused early), a 16 MB body limit, short client timeouts."""
    from ccany_addon.config import store

    tmp = tmp_path_factory.mktemp("bounds")
    path = tmp / "config.db"
    db = config_db(path)
    _, key = store.create_client_key(db, "test", "bounds")
    db.close()
    running = start_proxy(fake_upstream.url, tmp, f"ccany_config_db={path}", f"ccany_max_body_size={LIMIT}",
                          "ccany_client_header_timeout=2", "ccany_client_body_timeout=3")
    running.key = key  # type: ignore[attr-defined]
    yield running
    stop(running.process)


def head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_of(sock: socket.socket, timeout: float = 5) -> tuple[int, dict, str]:
    """Status, JSON body and request-id of the answer on a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    head, body = rest.split(b"\r\n\r\n", 1)
    request_id = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"request-id:"))
    return int(status_line.split()[1]), json.loads(body), request_id


def _length(data: bytes) -> int:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
    return next(int(line.split(":", 1)[1]) for line in head.split("\r\n") if line.startswith("content-length:"))


class HealthWatch:
    """Polls /health on a thread while a test runs; `slowest` is the longest answer it waited for."""

    def __init__(self, url: str) -> None:
        self.url, self.slowest, self._stop = url, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                assert client.get(f"{self.url}/health").status_code == 200
                self.slowest = max(self.slowest, time.monotonic() - started)
                time.sleep(0.02)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_a_content_length_over_the_limit_is_refused_before_the_body(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head("/v1/messages", {"content-length": str(100 * 1024 * 1024), "x-api-key": proxy.key}))
        started = time.monotonic()
        status, body, request_id = answer_of(sock)
    assert status == 413 and body["error"]["type"] == "request_too_large"
    assert time.monotonic() - started < 2
    assert proxy.flow(request_id)["error_type"] == "request_too_large"


def test_a_client_without_a_key_is_refused_before_its_body(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head("/v1/messages", {"content-length": str(LIMIT - 10), "content-type": "application/json"}))
        status, body, request_id = answer_of(sock)  # not one byte of the body was sent
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert proxy.flow(request_id)["status_code"] == 401


def test_a_chunked_body_is_cut_at_the_limit(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head("/v1/messages", {"transfer-encoding": "chunked", "x-api-key": proxy.key}))
        piece = b"x" * 65536
        try:
            for _ in range(LIMIT // len(piece) + 4):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:
            pass  # the gateway closed the connection once the limit was passed
        status, body, request_id = answer_of(sock)
    assert status == 413 and body["error"]["type"] == "request_too_large"
    assert proxy.flow(request_id)["status_code"] == 413


def test_a_gzip_bomb_is_refused_quickly_while_health_answers(proxy):
    bomb = gzip.compress(json.dumps({**GOOD, "messages": [{"role": "user", "content": "0" * 60_000_000}]}).encode())
    assert len(bomb) < 200_000
    with HealthWatch(proxy.url) as watch:
        started = time.monotonic()
        response = httpx.post(f"{proxy.url}/v1/messages", content=bomb, timeout=20,
                              headers={"content-encoding": "gzip", "x-api-key": proxy.key})
        elapsed = time.monotonic() - started
        time.sleep(0.2)
    assert "at most" in anthropic_error(response, 413, "request_too_large")
    assert elapsed < 3 and watch.slowest < 1, (elapsed, watch.slowest)
    assert proxy.flow(response.headers["request-id"])["status_code"] == 413


def test_counting_a_large_conversation_leaves_health_answering(proxy):
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "word " * 200_000} for i in range(9)]
    body = {"model": "claude-sonnet-4-5", "messages": turns}
    assert len(json.dumps(body)) < LIMIT
    with HealthWatch(proxy.url) as watch:
        response = httpx.post(f"{proxy.url}/v1/messages/count_tokens", json=body, timeout=30,
                              headers={"x-api-key": proxy.key})
    assert response.status_code == 200 and response.json()["input_tokens"] > 1_500_000
    assert watch.slowest < 1, watch.slowest


def test_slow_clients_are_closed_by_the_timeouts(proxy):
    """Half-sent headers (slowloris) and half-sent bodies: every connection is closed by the gateway."""
    clients = []
    for i in range(SLOW_CLIENTS):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        if i % 2:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: ")  # never finished
        else:
            sock.sendall(head("/v1/messages", {"content-length": "1000", "x-api-key": proxy.key}) + b'{"model": ')
        clients.append(sock)
    deadline = time.monotonic() + 15
    closed = 0
    for sock in clients:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while sock.recv(65536):
                pass
            closed += 1
        except OSError:
            pass
        sock.close()
    assert closed == SLOW_CLIENTS
    assert httpx.post(f"{proxy.url}/v1/messages", json=GOOD, headers={"x-api-key": proxy.key},
                      timeout=20).status_code == 200
