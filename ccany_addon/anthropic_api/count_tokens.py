"""Offline token estimates for `/v1/messages/count_tokens`: no tokenizer download, no upstream call.

Text is split into word, number, punctuation and non-Latin pieces and each piece is priced the way BPE
tokenizers price it (long words cost several tokens, CJK about one per character); images are priced by
Anthropic's published rule, width × height / 750 after the resize to at most 1568 px on the long edge.
"""

from __future__ import annotations

import base64
import json
import math
import re
import struct

from ccany_addon.anthropic_api.schema import (
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    Message,
    MessagesRequest,
    TextBlock,
    ToolResultBlock,
    as_dict,
)

_PIECES = re.compile(r"[A-Za-z]+|\d+|\s+|[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\sA-Za-z\d]")
MESSAGE_OVERHEAD = 4
TOOLS_OVERHEAD = 340  # the tool-use preamble the API adds when tools are present
TOOL_OVERHEAD = 8
UNKNOWN_IMAGE = 1600
PDF_PAGE = 1500
_UNPRICED_FIELDS = ("type", "cache_control", "signature")


def text_tokens(text: str) -> int:
    tokens = 0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if first.isspace():
            tokens += 0 if piece == " " else 1
        elif first.isascii() and first.isalpha():
            tokens += 1 + (len(piece) - 1) // 5
        elif first.isdigit():
            tokens += math.ceil(len(piece) / 3)
        else:
            tokens += 1
    return tokens


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first bytes of a PNG, GIF, JPEG or WebP file."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        kind = data[12:16]
        if kind == b"VP8X" and len(data) >= 30:
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if kind == b"VP8 " and len(data) >= 30:
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if kind == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return w, h
            i += 2 + length
    return None


def image_tokens(block: ImageBlock) -> int:
    if block.source.type != "base64":
        return UNKNOWN_IMAGE
    try:
        head = base64.b64decode(block.source.data[:87_384] + "=" * (-len(block.source.data[:87_384]) % 4))
    except ValueError:
        return UNKNOWN_IMAGE
    size = image_dimensions(head)
    if not size or not all(size):
        return UNKNOWN_IMAGE
    width, height = size
    scale = min(1.0, 1568 / max(width, height), math.sqrt(1_150_000 / (width * height)))
    return max(1, math.ceil(width * scale * height * scale / 750))


def _block_tokens(block: object) -> int:
    if isinstance(block, TextBlock):
        return text_tokens(block.text)
    if isinstance(block, ImageBlock):
        return image_tokens(block)
    if isinstance(block, DocumentBlock):
        source = block.source
        if source.type == "text":
            return text_tokens(source.data)
        if source.type == "base64":
            # a PDF page is roughly its text plus an image; pages are counted from the page objects
            pages = base64.b64decode(source.data + "==").count(b"/Type /Page") or 1
            return pages * PDF_PAGE
        return text_tokens(json.dumps(as_dict(source)))
    if isinstance(block, ToolResultBlock):
        if isinstance(block.content, str):
            return 5 + text_tokens(block.content)
        return 5 + sum(_block_tokens(item) for item in block.content or ())
    dumped = {name: value for name, value in as_dict(block).items() if name not in _UNPRICED_FIELDS}
    return 3 + text_tokens(json.dumps(dumped, ensure_ascii=False))


def _message_tokens(message: Message) -> int:
    if isinstance(message.content, str):
        return MESSAGE_OVERHEAD + text_tokens(message.content)
    return MESSAGE_OVERHEAD + sum(_block_tokens(block) for block in message.content)


def count_tokens(request: CountTokensRequest) -> int:
    total = 0
    if isinstance(request.system, str):
        total += text_tokens(request.system)
    elif request.system:
        total += sum(text_tokens(block.text) for block in request.system)
    total += sum(_message_tokens(message) for message in request.messages)
    if request.tools:
        total += TOOLS_OVERHEAD
        for tool in request.tools:
            schema = json.dumps(tool.input_schema or {}, ensure_ascii=False, separators=(",", ":"))
            total += TOOL_OVERHEAD + text_tokens(tool.name) + text_tokens(tool.description or "")
            total += text_tokens(schema)
    return max(total, 1)


def rough_input_tokens(request: MessagesRequest, body_size: int) -> int:
    """A cheap first figure for `message_start` (the exact one follows in `message_delta`):
    a quarter of the body's bytes, images and documents priced as such instead of by their base64 size."""
    media_bytes = 0
    media_tokens = 0
    for message in request.messages:
        if isinstance(message.content, str):
            continue
        for block in message.content:
            if isinstance(block, ImageBlock | DocumentBlock) and block.source.type == "base64":
                media_bytes += len(block.source.data)
                media_tokens += UNKNOWN_IMAGE if isinstance(block, ImageBlock) else PDF_PAGE
    return max(1, (body_size - media_bytes) // 4 + media_tokens)
