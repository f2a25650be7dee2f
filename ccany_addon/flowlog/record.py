"""What the flow log keeps of one client request: captured cheaply in the hooks (references to bytes and
header tuples), turned into a `flows` row on the writer thread (decoding, capping, reassembly, redaction).
"""

from __future__ import annotations

import re
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Literal

from mitmproxy import http

from ccany_addon.anthropic_api.accumulate import received_message
from ccany_addon.anthropic_api.errors import mask_secrets, replace_secrets
from ccany_addon.anthropic_api.schema import Message, as_dict
from ccany_addon.anthropic_api.sse import DELTA_HEAD
from ccany_addon.flowlog.schema import FLOW_COLUMNS
from ccany_addon.upstreams.kinds import KEY_HEADERS, REDACTED
from ccany_addon.util.json_codec import dumps, dumps_str, loads
from ccany_addon.util.utc import utc_text_ms

BodyPolicy = Literal["all", "errors", "none"]

SECRET_HEADERS = KEY_HEADERS | {"proxy-authorization", "cookie", "set-cookie"}

HeaderFields = tuple[tuple[bytes, bytes], ...]


# Any stream's first delta, ours or an anthropic upstream's forwarded as it came.
_DELTA_EVENT = b"event: content_block_delta\n"


@dataclass(slots=True)
class StreamClock:
    """Wraps a stream translator (the `flow.response.stream` callable) when no flow log is written: only the
    time of the first token, for the metrics. Keeping the bytes as `StreamRecorder` does would cost every
    stream for nobody. Once it has the time it hands the stream back to the translator (mitmproxy looks up
    `response.stream` for every read), so the rest of the stream does not pass through it."""

    translator: Callable[[bytes], list[bytes]]
    response: http.Response
    first_token_at: float | None = None

    def __call__(self, data: bytes) -> list[bytes]:
        out = self.translator(data)
        if any(_DELTA_EVENT in chunk for chunk in out):
            self.first_token_at = time.time()
            self.response.stream = self.translator
        return out


@dataclass(slots=True)
class StreamReads:
    """A stream's reads as they came, in a few flat buffers: every byte the upstream sent, every byte the client
    was sent, and each read's time and where it ended in both. Keeping each read's own objects instead (its
    bytes, the chunks sent, a tuple) cost the running proxy's main thread 0.23 ms per 50-read stream, copying
    into these 0.14: objects that live until the writer takes them make every read allocate afresh."""

    upstream: bytearray = field(default_factory=bytearray)
    sent: bytearray = field(default_factory=bytearray)
    times: array[float] = field(default_factory=lambda: array("d"))
    ends: array[int] = field(default_factory=lambda: array("q"))  # after each read: len(upstream), len(sent)

    def add(self, at: float, data: bytes, out: list[bytes]) -> None:
        upstream, sent = self.upstream, self.sent
        upstream += data
        for chunk in out:
            sent += chunk
        self.times.append(at)
        self.ends.extend((len(upstream), len(sent)))

    def sent_by_read(self) -> list[tuple[float, bytes]]:
        """(time, bytes sent) of each read that sent something: whole events, as every translator sends."""
        return [(at, bytes(self.sent[start:end])) for at, start, end in self._grew(self.ends[1::2])]

    def upstream_times(self) -> list[float]:
        """When each read that brought upstream bytes came."""
        return [at for at, _, _ in self._grew(self.ends[0::2])]

    def _grew(self, ends: array[int]) -> Iterator[tuple[float, int, int]]:
        """(time, start, end) of each read that added to the buffer whose ends these are."""
        start = 0
        for at, end in zip(self.times, ends, strict=True):
            if end > start:
                yield at, start, end
            start = end


@dataclass(slots=True)
class StreamRecorder:
    """Wraps a stream translator (the `flow.response.stream` callable) and keeps each read as it came: its time,
    the upstream's bytes and the bytes sent for them (`StreamReads`). Only bytes, never parsed events: the
    writer thread works out the rest (the upstream text, chunk count and gaps, the timeline)."""

    translator: Callable[[bytes], list[bytes]]
    reads: StreamReads = field(default_factory=StreamReads)
    first_token_at: float | None = None

    def __call__(self, data: bytes) -> list[bytes]:
        now = time.time()
        out = self.translator(data)
        self.reads.add(now, data, out)
        if self.first_token_at is None and any(_DELTA_EVENT in chunk for chunk in out):
            self.first_token_at = now
        return out


@dataclass(slots=True)
class FlowRecord:
    id: str
    started: float
    method: str
    path: str
    client_addr: str
    client_request: bytes | None
    client_request_headers: HeaderFields
    last_message: Message | None = None  # the request's newest message, already parsed by the gateway
    client_key_id: int | None = None
    client_user: str | None = None
    route: str | None = None
    provider_key: str | None = None
    cache_hit: bool = False
    cc_version: str | None = None  # from Claude Code's billing-header system block
    cc_entrypoint: str | None = None
    status_code: int | None = None
    client_response: bytes | None = None  # None for a stream: rebuilt from `events`
    client_response_headers: HeaderFields = ()
    is_stream: bool = False
    client_model: str | None = None
    upstream_model: str | None = None
    provider: str | None = None
    upstream_url: str | None = None
    upstream_request: bytes | None = None
    upstream_request_headers: HeaderFields = ()
    upstream_status: int | None = None
    upstream_response: bytes | None = None
    upstream_response_headers: HeaderFields = ()
    reads: StreamReads | None = None  # a stream's, from its StreamRecorder
    message: dict | None = None  # what a stream's chunks add up to, when the gateway wrote them (not a passthrough)
    stop_reason: str | None = None
    usage: dict = field(default_factory=dict)
    cost_usd: float | None = None
    price_source: str | None = None
    upstream_ttfb: float | None = None
    first_token_at: float | None = None
    ended: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    notes: list[str] = field(default_factory=list)
    # the provider key this flow used: masked in its row even when the config has dropped the key by the time the
    # writer gets to it (a key disabled for this very flow's failure)
    secrets: tuple[str, ...] = ()

    @property
    def duration_ms(self) -> float:
        return milliseconds(self.ended - self.started)

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else milliseconds(self.first_token_at - self.started)


RECORD_OVERHEAD = 4096  # bytes of a record besides its bodies: its fields, headers, notes


def record_size(record: FlowRecord) -> int:
    """About how much memory a queued record holds: what bounds the writer's queue by bytes."""
    size = RECORD_OVERHEAD
    for body in (record.client_request, record.upstream_request, record.upstream_response, record.client_response):
        if body is not None:
            size += len(body)
    if record.reads is not None:
        size += len(record.reads.upstream) + len(record.reads.sent) + 24 * len(record.reads.times)
    return size


def milliseconds(seconds: float) -> float:
    """Milliseconds to the microsecond, as every duration in a row is kept (`round(x, 3)` costs 2.5× as much,
    and the timeline takes one per event)."""
    return round(seconds * 1e6) / 1000


@dataclass(frozen=True, slots=True)
class LogPolicy:
    bodies: BodyPolicy = "all"
    cap: int = 1024 * 1024
    secrets: tuple[str, ...] = ()


def to_row(record: FlowRecord, policy: LogPolicy, *, raw_bodies: bool = False) -> dict:
    """The `flows` row for a record (runs on the writer thread). With `raw_bodies` the four bodies are left as the
    bytes they came in (capped, secrets replaced), for the writer that packs them into parts: decoding a Claude
    Code request of 400 KB and encoding it again cost 2 ms a turn. Bytes that are not UTF-8 read back as the text
    would have been stored (`parts.unpack` decodes them the same way)."""
    keep = policy.bodies == "all" or (policy.bodies == "errors" and record.error_type is not None)
    if record.secrets:
        policy = replace(policy, secrets=policy.secrets + record.secrets)
    cut: list[str] = []
    client_response, upstream_response = record.client_response, record.upstream_response
    answer: bytes | dict | None = client_response
    sent: list[tuple[float, bytes]] | None = None
    chunk_count = max_chunk_gap = None
    if record.reads is not None:
        upstream_response = bytes(record.reads.upstream)
        sent = record.reads.sent_by_read()
        times = record.reads.upstream_times()
        chunk_count = len(times)
        max_chunk_gap = milliseconds(max((later - at for at, later in pairwise(times)), default=0.0))
        # What the client was sent; a stream that ended in an error keeps its partial message and the error.
        answer = record.message if record.message is not None else _added_up(sent)
        client_response = dumps(answer)

    def body(name: str, raw: bytes | None) -> str | bytes | None:
        if not keep or raw is None:
            return None
        if len(raw) > policy.cap:
            cut.append(name)
        capped = raw[: policy.cap]
        return _scrub(capped if raw_bodies else capped.decode("utf-8", "replace"), policy.secrets)

    headers = dict(_decoded(record.client_request_headers))
    user_agent = headers.get("user-agent")
    session_id = headers.get("x-claude-code-session-id")
    row = {name: getattr(record, name) for name in _COPIED}
    row |= {
        "started_at": utc_text_ms(record.started),
        "is_stream": int(record.is_stream),
        "cache_hit": int(record.cache_hit),
        "user_agent": user_agent,
        "session_id": session_id,
        "agent_id": headers.get("x-claude-code-agent-id"),
        "parent_agent_id": headers.get("x-claude-code-parent-agent-id"),
        "request_class": headers.get("x-claude-code-request-class"),
        "client_key_id": None if record.client_key_id is None else str(record.client_key_id),
        "input_tokens": record.usage.get("input_tokens"),
        "output_tokens": record.usage.get("output_tokens"),
        "cache_read_input_tokens": record.usage.get("cache_read_input_tokens"),
        "cache_creation_input_tokens": record.usage.get("cache_creation_input_tokens"),
        "upstream_ttfb_ms": None if record.upstream_ttfb is None else milliseconds(record.upstream_ttfb),
        "ttft_ms": record.ttft_ms,
        "duration_ms": record.duration_ms,
        "chunk_count": chunk_count,
        "max_chunk_gap_ms": max_chunk_gap,
        "error_message": None if record.error_message is None else mask_secrets(record.error_message, policy.secrets),
        "client_request": body("client_request", record.client_request),
        "client_request_headers": _headers_json(record.client_request_headers),
        "upstream_request": body("upstream_request", record.upstream_request),
        "upstream_request_headers": _headers_json(record.upstream_request_headers),
        "upstream_response": body("upstream_response", upstream_response),
        "upstream_response_headers": _headers_json(record.upstream_response_headers),
        "client_response": body("client_response", client_response),
        "client_response_headers": _headers_json(record.client_response_headers),
        "events": None if sent is None else dumps_str(_timeline(sent, record.started)),
        "notes": dumps_str(record.notes) if record.notes else None,
        "conversation": _scrub(_conversation(record, answer) or "", policy.secrets) or None
        if keep else None,
    }
    row["truncated"] = ",".join(cut) or None
    return row


# Columns a record field of the same name fills as it is: a new column of that sort is a `FlowRecord` field, a
# `FLOW_COLUMNS` entry and its migration. Every other column is worked out in `to_row`.
_COPIED = tuple(name for name in FLOW_COLUMNS if name in FlowRecord.__dataclass_fields__ and name not in {
    "is_stream", "cache_hit", "client_key_id", "error_message", "client_request", "client_request_headers",
    "upstream_request", "upstream_request_headers", "upstream_response", "upstream_response_headers",
    "client_response", "client_response_headers", "notes"})


def minimal_row(record: FlowRecord, error: Exception) -> dict:
    """What is kept of a record `to_row` failed on: when, what and how it ended, and a note naming the failure
    (never a body: one of them may be what failed)."""

    def text(value: object) -> str | None:
        return None if value is None else str(value)

    status = record.status_code if isinstance(record.status_code, int) else None
    return {
        "id": str(record.id),
        "started_at": utc_text_ms(record.started) if isinstance(record.started, int | float) else None,
        "method": text(record.method),
        "path": text(record.path),
        "status_code": status,
        "is_stream": int(bool(record.is_stream)),
        "client_model": text(record.client_model),
        "upstream_model": text(record.upstream_model),
        "provider": text(record.provider),
        "error_type": text(record.error_type),
        "notes": dumps_str([f"flow log: the row could not be built ({type(error).__name__}); only this is kept"]),
    }


def _scrub[T: (str, bytes)](text: T, secrets: tuple[str, ...]) -> T:
    return replace_secrets(text, secrets, REDACTED)


def _decoded(fields: HeaderFields) -> list[tuple[str, str]]:
    return [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in fields]


def redacted_headers(fields: HeaderFields) -> list[tuple[str, str]]:
    return [(name, REDACTED if name in SECRET_HEADERS else value) for name, value in _decoded(fields)]


def _headers_json(fields: HeaderFields) -> str | None:
    if not fields:
        return None
    return dumps_str(dict(redacted_headers(fields)))


# Our own encoding (sse.encode_event) puts `type`, then a block event's `index`, first: most events are read
# from these bytes alone. Anything else (a passthrough's own layout) is parsed.
_EVENT_HEAD = re.compile(rb'event: (\w+)\ndata: \{"type":"\1"(?:,"index":(\d+)[,}])?')
_UNINDEXED = frozenset((b"message_start", b"message_delta", b"message_stop", b"ping", b"error"))


def _data(block: bytes) -> dict:
    return loads(block.split(b"\ndata: ", 1)[1])


def _timeline(sent: list[tuple[float, bytes]], started: float) -> list[list]:
    """[time offset in ms, event type, block index, encoded size] of each event sent."""
    timeline: list[list] = []
    skip = len(DELTA_HEAD)
    for at, chunk in sent:
        offset = milliseconds(at - started)
        for block in chunk.split(b"\n\n"):
            if not block:
                continue
            # Most events: a delta in our own encoding, its index the digits after the head.
            if block.startswith(DELTA_HEAD) and (digits := block[skip:block.find(b",", skip)]).isdigit():
                timeline.append([offset, "content_block_delta", int(digits), len(block) + 2])
            else:
                timeline.append([offset, *_kind_and_index(block), len(block) + 2])
    return timeline


def _kind_and_index(block: bytes) -> tuple[str, int | None]:
    head = _EVENT_HEAD.match(block)
    if head is not None and (head[2] is not None or head[1] in _UNINDEXED):
        return head[1].decode(), None if head[2] is None else int(head[2])
    event = _data(block)
    return event["type"], event.get("index")


def _added_up(sent: list[tuple[float, bytes]]) -> dict:
    """The message a passthrough stream's events add up to, with its last error if it ended in one; every
    chunk holds whole events."""
    return received_message([_data(block) for _, chunk in sent for block in chunk.split(b"\n\n") if block])


def _conversation(record: FlowRecord, response: bytes | dict | None) -> str | None:
    """The turn's searchable text: the newest message of the request and the answer's text (the message a
    stream added up to, or the body the client received)."""
    parts: list[str] = []
    if record.last_message is not None:
        parts.extend(_texts(as_dict(record.last_message)))
    else:
        try:
            body = loads(record.client_request) if record.client_request else None
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("messages"), list) and body["messages"]:
            parts.extend(_texts(body["messages"][-1]))
    try:
        answer = loads(response) if isinstance(response, bytes) else response
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        parts.extend(_texts(answer))
    text = "\n".join(part for part in parts if part)
    return text or None


def _texts(value: object) -> list[str]:
    """Every human-readable string of a message: text, thinking, tool inputs and results, error messages."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    if not isinstance(value, dict):
        return []
    texts: list[str] = []
    for key in ("text", "thinking", "content", "message", "error"):
        if key in value:
            texts.extend(_texts(value[key]))
    if isinstance(value.get("input"), dict):
        texts.append(dumps_str(value["input"]))
    return texts
