"""How a part's bytes are compressed in the `parts` table: zstd, primed with a dictionary of the JSON and SSE text
every dialect repeats.

Most parts are small (a message, a system block, a response of a few hundred bytes), and a compressor finds little
to repeat inside one of them: the keys and event names are what they share with every other part. Primed with
them, the small parts of a 150-turn Claude Code session take 18% less space (all of its parts 6%). zstd at level 3
compresses a Claude Code part in a third of the CPU time zlib at level 6 took (10 µs instead of 36 for a 2.7 KB tool
result: the dictionary is loaded once per thread, not for every part), and the session's `parts` table grew by 2%
(416 → 424 KB). The writer thread compresses every new part of every turn, so this is the log's CPU.

Parts written before zstd are zlib streams (primed with the same dictionary, its Adler-32 in their header, or with
none) and still read back: a zstd frame starts with its magic number, which no zlib header can. `DICTIONARY` is
therefore never edited: a better one is added under a new name with a form of its own.
"""

from __future__ import annotations

import threading
import zlib

import zstandard

ZSTD_LEVEL = 3
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# Both codecs reach the end of the dictionary cheapest: what nearly every part holds comes last.
DICTIONARY = (
    b'{"type":"object","properties":{"description":"","type":"string","enum":["'
    b'"additionalProperties":false,"required":["'
    b'"$schema":"http://json-schema.org/draft-07/schema#"'
    b'{"name":"Bash","description":"'
    b'{"name":"Read","description":"'
    b'{"name":"Edit","description":"'
    b'{"name":"Write","description":"'
    b'{"name":"Grep","description":"'
    b'{"name":"Glob","description":"'
    b'{"name":"TodoWrite","description":"'
    b'"input_schema":{"type":"object","properties":{'
    b'"file_path":"/","old_string":"","new_string":"","command":"","pattern":"'
    b'{"type":"function","function":{"name":"","description":"","parameters":{"type":"object","properties":{'
    b'{"functionCall":{"name":"","args":{"'
    b'{"functionResponse":{"name":"","response":{"'
    b'{"role":"model","parts":[{"text":"'
    b'{"type":"function_call","call_id":"","name":"","arguments":"{\\"'
    b'{"type":"function_call_output","call_id":"","output":"'
    b'{"type":"message","role":"user","content":[{"type":"input_text","text":"'
    b'"usage":{"prompt_tokens":,"completion_tokens":,"total_tokens":,"prompt_tokens_details":{"cached_tokens":0}}'
    b'data: {"id":"chatcmpl-","object":"chat.completion.chunk","created":,"model":"","choices":[{"index":0,'
    b'"delta":{"content":"'
    b'"finish_reason":"stop"'
    b'"finish_reason":"tool_calls"'
    b'"finish_reason":null}]}\n\n'
    b'data: [DONE]\n\n'
    b'{"role":"tool","tool_call_id":"toolu_","content":"'
    b'{"role":"assistant","content":null,"tool_calls":[{"id":"toolu_","type":"function","function":{"name":"",'
    b'"arguments":"{\\"'
    b'{"role":"system","content":"'
    b'"stop_reason":"end_turn","stop_sequence":null,'
    b'"stop_reason":"tool_use","stop_sequence":null,'
    b'"usage":{"input_tokens":,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":}}'
    b'{"id":"msg_","type":"message","role":"assistant","model":"claude-","content":[{"type":"text","text":"'
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: ping\ndata: {"type": "ping"}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    b'{"type":"thinking","thinking":"","signature":"'
    b'{"type":"tool_use","id":"toolu_","name":"","input":{"'
    b'{"type":"tool_result","tool_use_id":"toolu_","content":"'
    b'"is_error":false}'
    b'"cache_control":{"type":"ephemeral"}}'
    b'{"role":"assistant","content":[{"type":"text","text":"'
    b'{"role":"user","content":[{"type":"text","text":"'
    b'[0.0,"message_start",null,],[,"ping",null,],[,"content_block_start",0,],[,"content_block_stop",0,],'
    b'[,"message_delta",null,],[,"message_stop",null,]]'
    b'"input_json_delta","partial_json":"'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
    b'"}}\n\n'
    b',"content_block_delta",0,],['
)
_FDICT = 0x20  # zlib header: a dictionary id follows
_ZLIB_DICTIONARIES = {zlib.adler32(DICTIONARY): DICTIONARY}


class PartDataError(ValueError):
    """Stored bytes that do not decompress: damaged, or written with a dictionary this version does not know."""


class _Codecs(threading.local):
    """zstd's compressor and decompressor are not for sharing between threads (the writer compresses, Datasette's
    threads read), and loading the dictionary is what costs: one of each per thread, made on first use."""

    def __init__(self) -> None:
        dictionary = zstandard.ZstdCompressionDict(DICTIONARY, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, dict_data=dictionary, write_checksum=True,
                                                   write_dict_id=False)
        self.decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)


_codecs = _Codecs()


def compress(data: bytes) -> bytes:
    return _codecs.compressor.compress(data)


def decompress(data: bytes) -> bytes:
    try:
        if data.startswith(_ZSTD_MAGIC):
            return _codecs.decompressor.decompress(data)
        if len(data) < 6 or not data[1] & _FDICT:
            return zlib.decompress(data)
        dictionary = _ZLIB_DICTIONARIES.get(int.from_bytes(data[2:6], "big"))
        if dictionary is None:
            raise PartDataError("a part compressed with a dictionary this version does not know")
        decompressor = zlib.decompressobj(zdict=dictionary)
        return decompressor.decompress(data) + decompressor.flush()
    except (zlib.error, zstandard.ZstdError) as error:
        raise PartDataError(str(error)) from error
