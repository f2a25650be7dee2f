"""The error words Claude Code acts on. The gateway protocol (code.claude.com, "LLM gateway protocol reference")
lists classes the CLI recovers from when an error's whole message is `capability_rejected: <class>`: it switches
that feature off and retries once. For a context overflow it wants Anthropic's own words, `prompt is too long: N
tokens > M maximum`, whose numbers tell it how much to drop. Upstreams word the same refusals their own way
(OpenAI, vLLM, llama.cpp, Gemini, Mistral-style chat templates), so the CLI would retry the same request and fail
again; here they are reworded, conservatively: a wording this module cannot classify keeps the upstream's words
(a wrong token triggers the wrong recovery). Pure; no I/O.
"""

from __future__ import annotations

import re

CAPABILITY_REJECTED = "capability_rejected: "

# (pattern giving the prompt's tokens, pattern giving the context window), in the words of each upstream family.
_OVERFLOW_NUMBERS = (
    # OpenAI, DeepSeek, vLLM (older), OpenRouter: "maximum context length is 128000 tokens. However, your messages
    # resulted in 130000 tokens" / "you requested 70000 tokens (66000 in the messages, 4000 in the completion)"
    (re.compile(r"\((\d+) in the messages"), re.compile(r"maximum context length is (\d+) tokens", re.I)),
    (re.compile(r"(?:resulted in|requested) (\d+) tokens", re.I),
     re.compile(r"maximum context length is (\d+) tokens", re.I)),
    # Gemini: "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    (re.compile(r"input token count \(?(\d+)\)?", re.I),
     re.compile(r"maximum number of tokens allowed \(?(\d+)\)?", re.I)),
    # vLLM (newer): "The prompt (total length 5000) is longer than the maximum model length of 4096."
    (re.compile(r"prompt \(total length (\d+)\)", re.I), re.compile(r"maximum model length of (\d+)", re.I)),
    # llama.cpp's error object: {"n_prompt_tokens": 5000, "n_ctx": 4096}
    (re.compile(r'"n_prompt_tokens"\s*:\s*(\d+)'), re.compile(r'"n_ctx"\s*:\s*(\d+)')),
    # Anthropic's own words, passed on by an OpenAI-compatible relay
    (re.compile(r"prompt is too long: (\d+) tokens", re.I), re.compile(r"tokens > (\d+) maximum", re.I)),
)

# "you requested 9000 tokens (7000 in the messages, 2000 in the completion)": the prompt alone may fit.
_MAX_TOKENS_OVERFLOW = re.compile(r"in the completion", re.I)
_PROMPT_AND_WINDOW = re.compile(r"maximum context length is (\d+) tokens.*?\((\d+) in the messages", re.I | re.S)

# Overflow wordings without usable numbers (the CLI's own list of them, and what servers here send).
_OVERFLOW = re.compile(
    r"maximum context length|context_length_exceeded|exceeds the context window|context window exceeds"
    r"|longer than the maximum model length|longer than the model's context length|exceeds the available context"
    r"|exceeds the maximum number of tokens allowed|exceeded model token limit|input token length too long"
    r"|prompt is too long|input is too long for requested model|prompt too long|context size has been exceeded",
    re.I,
)

# A late `{"role": "system"}` message refused: vLLM and Mistral-style chat templates, strict validators.
_MID_CONV_SYSTEM = re.compile(
    r"system message(?:s)? (?:must|should|can only|is only allowed to|are only allowed to) (?:be|appear|come)"
    r"|system (?:message|prompt|role)s? (?:is |are )?only (?:allowed|supported|permitted) at the (?:beginning|start)"
    r"|unexpected role ['\"`]?system|role ['\"`]?system['\"`]? (?:is )?not (?:allowed|supported|permitted)"
    r"|conversation roles must alternate",
    re.I,
)

# Structured outputs refused by a model or server (OpenAI-compatible words).
_STRUCTURED_OUTPUTS = re.compile(
    r"response_format.{0,80}(?:not supported|unsupported|is not available|invalid)"
    r"|(?:json_schema|structured output)s?.{0,40}(?:not supported|unsupported)",
    re.I,
)

# The effort setting refused.
_EFFORT = re.compile(r"reasoning[_. ]effort.{0,80}(?:not supported|unsupported|unrecognized|extra inputs)", re.I)

# An image refused by a model without vision.
_IMAGE = re.compile(
    r"image(?:_url)? (?:input )?(?:is )?(?:only supported by certain models|not supported)"
    r"|does not support image|model is not multimodal|invalid image",
    re.I,
)


def client_words(status: int, message: str, late_system: bool = False) -> str | None:
    """The message Claude Code acts on for an upstream's refusal (`status`, the upstream's `message`), or None
    to keep the upstream's own words. `late_system`: the converted request carried a system message after the
    first (only then is a refusal of system messages about them)."""
    if status not in (400, 404, 413, 422, 500):  # refusals of the request itself; 500 for llama.cpp and Ollama
        return None
    if late_system and _MID_CONV_SYSTEM.search(message):
        return CAPABILITY_REJECTED + "mid_conv_system"
    if _STRUCTURED_OUTPUTS.search(message):
        return CAPABILITY_REJECTED + "structured_outputs_unsupported"
    if _EFFORT.search(message):
        return CAPABILITY_REJECTED + "effort_unsupported"
    if _IMAGE.search(message):
        return CAPABILITY_REJECTED + "image_block"
    if _MAX_TOKENS_OVERFLOW.search(message) and (parts := _PROMPT_AND_WINDOW.search(message)) \
            and int(parts.group(2)) <= int(parts.group(1)):
        return CAPABILITY_REJECTED + "max_tokens_context_overflow"  # the prompt fits; with max_tokens it does not
    if (numbers := overflow_numbers(message)) is not None:
        used, window = numbers
        return f"prompt is too long: {used} tokens > {window} maximum"
    if _OVERFLOW.search(message):
        return CAPABILITY_REJECTED + "prompt_too_long"
    return None


def overflow_numbers(message: str) -> tuple[int, int] | None:
    """(prompt tokens, context window) from an overflow message that names both, the prompt the larger."""
    for used_pattern, window_pattern in _OVERFLOW_NUMBERS:
        used, window = used_pattern.search(message), window_pattern.search(message)
        if used and window and int(used.group(1)) > int(window.group(1)) > 0:
            return int(used.group(1)), int(window.group(1))
    return None
