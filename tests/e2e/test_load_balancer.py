"""The README's recipe for several instances, run as written: two gateway processes sharing a real redis-server
behind a real nginx configured with the README's own `upstream`/`server` block. Through the one address, streams
arrive as they are written, requests reach both gateways, a request limit holds across them, and losing one
gateway leaves the address answering."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ccany_addon.config import store
from tests.conftest import ROOT, Proxy, free_port, secret, start_proxy, start_redis, stop, wait_for
from tests.e2e.test_team_limits import team_config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def readme_nginx_block() -> str:
    """The nginx configuration the README gives under *Running several instances*."""
    section = (ROOT / "README.md").read_text().split("### Running several instances", 1)[1]
    block = re.search(r"\n( {4}upstream ccany .*?\n {4}}\n)", section, re.S)
    assert block is not None, "the README's nginx recipe is gone"
    return block.group(1)


def nginx_config(tmp: Path, listen: int, gateways: list[int]) -> Path:
    block = readme_nginx_block()
    servers = " ".join(f"server 127.0.0.1:{port};" for port in gateways)
    block = re.sub(r"(upstream ccany \{ least_conn;) (server [^}]*)}", rf"\1 {servers} }}", block)
    block = block.replace("listen 127.0.0.1:8082;", f"listen 127.0.0.1:{listen};")
    assert f"127.0.0.1:{listen}" in block and f"127.0.0.1:{gateways[1]}" in block
    path = tmp / "nginx.conf"
    path.write_text(f"""
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
{block}
}}
""")
    return path


@dataclass
class Balanced:
    url: str
    gateways: tuple[Proxy, Proxy]
    keys: dict[str, str]


@pytest.fixture(scope="module")
def balanced(fake_upstream, tmp_path_factory) -> Iterator[Balanced]:
    tmp = tmp_path_factory.mktemp("balanced")
    redis_server = start_redis(tmp)
    path = tmp / "config.db"
    db = team_config(path, fake_upstream.url)
    keys = {}
    for name, limits in (("free", {}), ("paced", {"rpm_limit": 4})):
        keys[name] = secret(store.create_client_key(db, "test", name)[1])
        if limits:
            store.set_client_key_limits(db, "test", name, **limits)
    db.close()
    gateways = tuple(start_proxy(fake_upstream.url, tmp_path_factory.mktemp(f"instance-{n}"),
                                 f"ccany_config_db={path}", f"ccany_redis_url={redis_server.url}") for n in (1, 2))
    listen = free_port()
    nginx = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(nginx_config(tmp, listen, [g.port for g in gateways])),
                              "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{listen}/health")
        yield Balanced(f"http://127.0.0.1:{listen}", gateways, keys)  # type: ignore[arg-type]
    finally:
        for process in (nginx, *(g.process for g in gateways), redis_server.process):
            stop(process)


def ask(url: str, key: str, **extra) -> httpx.Response:
    return httpx.post(f"{url}/v1/messages", headers={"x-api-key": key}, timeout=20, json={
        "model": "claude-opus-4-1", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}], **extra})


def served_by(gateways: tuple[Proxy, ...], request_id: str) -> int:
    """Which gateway's flow log holds the flow: each instance writes its own."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for number, gateway in enumerate(gateways):
            if gateway.db.exists():
                with sqlite3.connect(gateway.db) as conn:
                    if conn.execute("select 1 from flows where id = ?", [request_id]).fetchone():
                        return number
        time.sleep(0.05)
    raise AssertionError(f"no gateway logged {request_id}")


def test_a_stream_through_the_balancer_arrives_as_it_is_written(balanced):
    body = {"model": "slow-model", "max_tokens": 20, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    arrivals: list[float] = []
    text = b""
    with httpx.stream("POST", f"{balanced.url}/v1/messages", json=body, timeout=20,
                      headers={"x-api-key": balanced.keys["free"]}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_raw():
            arrivals.append(time.monotonic())
            text += chunk
    assert b"message_start" in text and b"message_stop" in text
    # the events came over the stream's 1.35 s, not all at once at its end (nginx buffering would do that)
    assert len(arrivals) >= 5 and arrivals[-1] - arrivals[0] > 0.6


def test_requests_reach_both_gateways_and_a_limit_holds_across_them(balanced):
    if time.time() % 60 > 45:  # requests a minute count per UTC minute: all of them in one
        time.sleep(60 - time.time() % 60 + 0.1)
    answers = [ask(balanced.url, balanced.keys["paced"]) for _ in range(8)]
    assert [answer.status_code for answer in answers] == [200] * 4 + [429] * 4  # 4 in all, not 4 each
    assert "'paced' has sent its 4 requests a minute" in answers[-1].json()["error"]["message"]
    # concurrent clients, as a team's: nginx's least_conn hands them to both instances
    with httpx.Client(timeout=20) as client:
        streams = [client.build_request("POST", f"{balanced.url}/v1/messages", headers={"x-api-key": balanced.keys[
            "free"]}, json={"model": "slow-model", "max_tokens": 20, "stream": True,
                            "messages": [{"role": "user", "content": f"question {n}"}]}) for n in range(4)]
        opened = [client.send(request, stream=True) for request in streams]
        ids = [response.headers["request-id"] for response in opened]
        for response in opened:
            response.read()
            response.close()
    assert {served_by(balanced.gateways, request_id) for request_id in ids} == {0, 1}


def test_the_address_answers_when_one_gateway_is_gone(balanced):
    stop(balanced.gateways[0].process)
    answers = [ask(balanced.url, balanced.keys["free"]) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200] * 4  # nginx passes each to the one left
    assert {served_by(balanced.gateways, answer.headers["request-id"]) for answer in answers} == {1}
