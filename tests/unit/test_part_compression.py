"""Parts are compressed with zstd against a dictionary of protocol text; what earlier versions stored with zlib
(primed with the same dictionary in a window sized to the part, or with none) reads back; bytes that are damaged or
need a dictionary this version does not know are an error, never garbage."""

from __future__ import annotations

import threading
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccany_addon.flowlog.part_compression import DICTIONARY, PartDataError, compress, decompress

MESSAGE = (b'{"role":"assistant","content":[{"type":"text","text":"Let me look."},{"type":"tool_use","id":"toolu_01",'
           b'"name":"Read","input":{"file_path":"/src/app.py"}}]}')


@given(st.binary(max_size=3000) | st.text(max_size=20_000).map(str.encode))
def test_any_bytes_read_back(data: bytes) -> None:
    assert decompress(compress(data)) == data


def test_a_small_message_is_smaller_than_a_compressor_without_the_dictionary_makes_it() -> None:
    assert len(compress(MESSAGE)) < 0.8 * len(zlib.compress(MESSAGE, 6))


def _zlib_as_stored_before(data: bytes, window_bits: int, dictionary: bytes | None = DICTIONARY) -> bytes:
    """A part as the zlib versions wrote it: level 6, memLevel 5, a window just large enough, this dictionary."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, window_bits, 5, **({"zdict": dictionary} if dictionary else {}))
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("window_bits", [9, 12, 13, zlib.MAX_WBITS])
@pytest.mark.parametrize("data", [b"", MESSAGE, bytes(range(256)) * 40])
def test_parts_stored_with_zlib_before_still_read_back(window_bits: int, data: bytes) -> None:
    assert decompress(_zlib_as_stored_before(data, window_bits)) == data
    assert decompress(_zlib_as_stored_before(data, window_bits, None)) == data
    assert decompress(zlib.compress(data, 6)) == data


def test_a_part_made_with_an_unknown_dictionary_is_an_error_not_garbage() -> None:
    with pytest.raises(PartDataError):
        decompress(_zlib_as_stored_before(MESSAGE, zlib.MAX_WBITS, DICTIONARY + b"another"))


@pytest.mark.parametrize("damage", [
    lambda data: data[:-3],  # cut short
    # a bit of the compressed text changed: without the frame's checksum this decompresses to other text
    lambda data: data[:20] + bytes([data[20] ^ 0x01]) + data[21:],
    lambda data: b"not compressed at all",
    lambda data: b"",
])
def test_damaged_bytes_are_an_error_not_garbage(damage) -> None:
    with pytest.raises(PartDataError):
        decompress(damage(compress(MESSAGE * 20)))


def test_threads_compress_and_read_back_at_once() -> None:
    """The writer thread compresses while Datasette's threads read: each thread has its own codecs."""
    failures: list[BaseException] = []

    def work(number: int) -> None:
        try:
            for round_ in range(200):
                data = MESSAGE + f"{number}:{round_}".encode() * (round_ % 50)
                assert decompress(compress(data)) == data
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
