"""Cutting a stream's bytes anywhere, as the network may: the property every stream translator must meet."""

from __future__ import annotations

from hypothesis import strategies as st


def draw_split(data: st.DataObject, streams: list[bytes]) -> tuple[int, list[bytes]]:
    """Which of `streams` was drawn, and its bytes cut at up to 40 drawn places (no empty pieces)."""
    which = data.draw(st.integers(0, len(streams) - 1), label="stream")
    stream = streams[which]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40), label="cuts")
    bounds = [0, *sorted(cuts), len(stream)]
    pieces = [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    assert b"".join(pieces) == stream
    return which, pieces


def byte_by_byte(stream: bytes) -> list[bytes]:
    return [stream[i:i + 1] for i in range(len(stream))]
