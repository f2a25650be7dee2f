"""How a part's bytes are compressed in the `parts` table: zlib, primed with a dictionary of the JSON and SSE
text every dialect repeats.

Most parts are small (a message, a system block, a response of a few hundred bytes), and zlib alone finds little
to repeat inside one of them: the keys and event names are what they share with every other part. Primed with
them, a 150-turn Claude Code session's parts take 17% less space. A zlib stream names the dictionary it was made
with (its Adler-32 in the header), so a part compressed without one, or with an older one, still reads back.
`DICTIONARY` is therefore never edited: a better one is added under a new name and `compress` switched to it.
"""

from __future__ import annotations

import zlib

# zlib at level 6 keeps JSON text in 42% of its size and costs 0.06 ms for a 2.5 KB tool result; a part is
# compressed once, when it is first seen.
COMPRESSION_LEVEL = 6
# Setting up zlib's state took more time than compressing a small part: memLevel 5 (a 4096-entry hash table
# instead of 65536) halved the time the 150-turn session's parts took, at the same size.
MEMORY_LEVEL = 5
# Likewise the window: zlib sets up 2^15 bytes of it for any part. A window just large enough for the dictionary and
# the part loses nothing (every earlier byte stays in reach) and cost 7 µs for a 600-byte part instead of 17. The
# window is written in the zlib header, so reading back needs no setting.
_SMALLEST_WINDOW_BITS = 9
_LOOKAHEAD = 262  # bytes of the window deflate keeps out of reach (zlib's MIN_LOOKAHEAD)

# zlib reaches back 32 KB, the end of the dictionary cheapest: what nearly every part holds comes last.
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
_DICTIONARIES = {zlib.adler32(DICTIONARY): DICTIONARY}
_FDICT = 0x20  # zlib header: a dictionary id follows


def compress(data: bytes) -> bytes:
    reach = len(DICTIONARY) + len(data) + _LOOKAHEAD
    window_bits = min(zlib.MAX_WBITS, max(_SMALLEST_WINDOW_BITS, reach.bit_length()))
    compressor = zlib.compressobj(COMPRESSION_LEVEL, zlib.DEFLATED, window_bits, MEMORY_LEVEL, zdict=DICTIONARY)
    return compressor.compress(data) + compressor.flush()


def decompress(data: bytes) -> bytes:
    if len(data) < 6 or not data[1] & _FDICT:
        return zlib.decompress(data)
    dictionary = _DICTIONARIES.get(int.from_bytes(data[2:6], "big"))
    if dictionary is None:
        raise zlib.error("a part compressed with a dictionary this version does not know")
    decompressor = zlib.decompressobj(zdict=dictionary)
    return decompressor.decompress(data) + decompressor.flush()
