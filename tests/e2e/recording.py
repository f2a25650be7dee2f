"""An httpx2 transport for the anthropic SDK that keeps the bytes of every response it reads, so the tests can
check each stream the SDK parsed with the conformance checker too."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx2

from ccany_addon.anthropic_api.conformance import StreamReport, check_stream


class _Recorder(httpx2.SyncByteStream):
    """Keeps a copy of the bytes the SDK reads (anthropic 2.x reads through httpx2)."""

    def __init__(self, stream: httpx2.SyncByteStream, sink: list[bytes]) -> None:
        self.stream, self.sink = stream, sink

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.stream:
            self.sink.append(chunk)
            yield chunk

    def close(self) -> None:
        self.stream.close()


class RecordingTransport(httpx2.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[list[bytes]] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        self.bodies.append([])
        response.stream = _Recorder(response.stream, self.bodies[-1])
        return response

    def last_stream(self) -> StreamReport:
        return check_stream(b"".join(self.bodies[-1]))


def recording_client(base_url: str, transport: RecordingTransport) -> anthropic.Anthropic:
    """The SDK client the kind tests use: no retries of its own, every response recorded by `transport`."""
    return anthropic.Anthropic(base_url=base_url, api_key="client-side-key", max_retries=0, timeout=20,
                               http_client=httpx2.Client(transport=transport))
