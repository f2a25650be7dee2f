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
