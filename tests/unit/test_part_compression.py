"""Parts are compressed against a dictionary of protocol text; what was stored before it, or with it, reads back."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccany_addon.flowlog.part_compression import DICTIONARY, compress, decompress

MESSAGE = (b'{"role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"toolu_01",'
           b'"name":"Read","input":{"file_path":"/src/app.py"}}]}')


@given(st.binary(max_size=3000))
def test_any_bytes_read_back(data: bytes) -> None:
    assert decompress(compress(data)) == data


def test_a_small_message_is_smaller_than_zlib_alone_makes_it() -> None:
    assert len(compress(MESSAGE)) < 0.8 * len(zlib.compress(MESSAGE, 6))


def test_parts_stored_without_the_dictionary_still_read_back() -> None:
    assert decompress(zlib.compress(MESSAGE, 6)) == MESSAGE
    assert decompress(zlib.compress(b"", 6)) == b""


def test_a_part_made_with_an_unknown_dictionary_is_an_error_not_garbage() -> None:
    other = zlib.compressobj(6, zdict=DICTIONARY + b"another")
    data = other.compress(MESSAGE) + other.flush()
    with pytest.raises(zlib.error):
        decompress(data)


def _with_full_window(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS, 5, zdict=DICTIONARY)
    return compressor.compress(data) + compressor.flush()


def _far_repeats(size: int) -> bytes:
    """`size` bytes whose first 256 come back at the very end: a match as far back as the part is long."""
    head = bytes(range(256))
    if size < 2 * len(head):
        return bytes(size)
    return head + b"x" * (size - 2 * len(head)) + head


@given(st.binary(max_size=3000) | st.text(max_size=20_000).map(str.encode))
def test_a_window_sized_to_the_part_compresses_it_as_zlibs_full_window_does(data: bytes) -> None:
    """The window is only as large as the dictionary and the part: the deflate stream is the same, only the
    header (which names the window) differs."""
    compressed = compress(data)
    assert compressed[2:] == _with_full_window(data)[2:]
    assert decompress(compressed) == data


@pytest.mark.parametrize("size", [0, 600, 4000 - len(DICTIONARY), 4096 - len(DICTIONARY) - 262,
                                  8000 - len(DICTIONARY), 40_000])
def test_a_small_part_gets_a_small_window_and_loses_nothing_at_its_edges(size: int) -> None:
    data = _far_repeats(size)
    assert len(data) == size
    compressed = compress(data)
    window = 1 << ((compressed[0] >> 4) + 8)
    assert window >= len(DICTIONARY) + len(data) + 262 or window == 1 << zlib.MAX_WBITS
    assert window < 4 * (len(DICTIONARY) + len(data) + 262)  # not zlib's 32 KB for every part
    assert compressed[2:] == _with_full_window(data)[2:] and decompress(compressed) == data
