"""A client's request body as the gateway reads it: decompressed within the size limit, or refused.

mitmproxy's own decoding inflates a body whole (58 KB of gzip became 60 MB and held the event loop for seconds)
and passes an encoding it does not know through undecoded, so the gateway decodes for itself, incrementally,
and stops one byte past the limit.
"""

from __future__ import annotations

import zlib

import brotli
from mitmproxy import http

from ccany_addon.anthropic_api.errors import GatewayError

ENCODINGS = ("gzip", "deflate", "br")


def too_large(size: int | str, limit: int) -> GatewayError:
    return GatewayError(413, f"Request body is {size} bytes; this gateway accepts at most {limit} bytes")


def check_encoding(encoding: str) -> None:
    """Raise the 400 for a Content-Encoding the gateway cannot decode (before any byte of the body is read)."""
    name = encoding.strip().lower()
    if name and name != "identity" and name.removeprefix("x-") not in ENCODINGS:
        raise GatewayError(415, f"Content-Encoding {encoding.strip()!r} is not supported: send the body "
                                f"uncompressed or as {', '.join(ENCODINGS)}")


def of(request: http.Request, limit: int) -> bytes:
    """A request's body, decompressed within `limit` (mitmproxy's own decoding has no bound)."""
    raw = request.raw_content or b""
    encoding = request.headers.get("content-encoding", "")
    return decoded(raw, encoding, limit) if encoding else raw


def decoded(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body behind `encoding`, at most `limit` bytes of it (more is a 413)."""
    check_encoding(encoding)
    name = encoding.strip().lower().removeprefix("x-")
    if name in ("", "identity"):
        body = raw
    elif name == "br":
        body = _brotli(raw, limit)
    else:
        body = _zlib(raw, limit, 31 if name == "gzip" else 15)
    if len(body) > limit:
        raise too_large(f"more than {limit}" if name not in ("", "identity") else len(body), limit)
    return body


def _zlib(raw: bytes, limit: int, wbits: int) -> bytes:
    try:
        body = _inflate(raw, limit, wbits)
    except zlib.error:
        if wbits != 15:
            raise _undecodable("gzip") from None
        try:  # "deflate" is sent both with and without the zlib header
            body = _inflate(raw, limit, -15)
        except zlib.error:
            raise _undecodable("deflate") from None
    return body


def _inflate(raw: bytes, limit: int, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    body = inflater.decompress(raw, limit + 1)
    if len(body) <= limit and not inflater.unconsumed_tail and not inflater.eof:
        raise zlib.error("truncated")
    return body


def _brotli(raw: bytes, limit: int) -> bytes:
    decompressor = brotli.Decompressor()
    try:
        body = decompressor.process(raw, output_buffer_limit=limit + 1)
    except brotli.error:
        raise _undecodable("br") from None
    if len(body) <= limit and not decompressor.is_finished():
        raise _undecodable("br")
    return body


def _undecodable(encoding: str) -> GatewayError:
    return GatewayError(400, f"The request body is not valid {encoding} data")
