"""The error words Claude Code acts on: upstream refusals in each family's wording → the gateway protocol's
`capability_rejected: <class>` tokens and Anthropic's `prompt is too long: N tokens > M maximum`."""

from __future__ import annotations

import pytest

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.converters.error_words import client_words

OPENAI_OVERFLOW = ("This model's maximum context length is 128000 tokens. However, your messages resulted in 131072 "
                   "tokens. Please reduce the length of the messages.")


@pytest.mark.parametrize(("status", "message", "late_system", "words"), [
    (400, OPENAI_OVERFLOW, False, "prompt is too long: 131072 tokens > 128000 maximum"),
    (400, "This model's maximum context length is 65536 tokens. However, you requested 70000 tokens (66000 in the "
          "messages, 4000 in the completion).", False, "prompt is too long: 66000 tokens > 65536 maximum"),
    (400, "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens (7000 in the "
          "messages, 2000 in the completion).", False, "capability_rejected: max_tokens_context_overflow"),
    (400, "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", False,
     "prompt is too long: 1200000 tokens > 1048576 maximum"),
    (400, "The prompt (total length 5000) is longer than the maximum model length of 4096.", False,
     "prompt is too long: 5000 tokens > 4096 maximum"),
    (500, '{"code": 400, "message": "the request exceeds the available context size", "n_prompt_tokens": 5000, '
          '"n_ctx": 4096}', False, "prompt is too long: 5000 tokens > 4096 maximum"),
    (400, "context_length_exceeded", False, "capability_rejected: prompt_too_long"),
    (413, "Request exceeds the context window", False, "capability_rejected: prompt_too_long"),
    (400, "System message must be at the beginning.", True, "capability_rejected: mid_conv_system"),
    (400, "Conversation roles must alternate user/assistant/user/assistant/...", True,
     "capability_rejected: mid_conv_system"),
    (422, "response_format json_schema is not supported by this model", False,
     "capability_rejected: structured_outputs_unsupported"),
    (400, "Unrecognized request argument supplied: reasoning_effort is not supported with this model", False,
     "capability_rejected: effort_unsupported"),
    (400, "Invalid content type. image_url is only supported by certain models.", False,
     "capability_rejected: image_block"),
])
def test_refusals_the_cli_recovers_from_get_its_words(status, message, late_system, words):
    assert client_words(status, message, late_system) == words


@pytest.mark.parametrize(("status", "message", "late_system", "words"), [
    (400, "System message must be at the beginning.", False, None),  # no late system message sent: not about them
    (400, "Conversation roles must alternate", False, None),
    (401, OPENAI_OVERFLOW, False, None),  # a key's failure, whatever its words
    (429, "context_length_exceeded", False, None),
    (400, "max_tokens must be at least 1", False, None),  # unclassified: the upstream's own words stay
    # numbers that do not overflow are not believed; the words alone still classify
    (400, "This model's maximum context length is 128000 tokens. However, your messages resulted in 1000 tokens",
     False, "capability_rejected: prompt_too_long"),
])
def test_what_cannot_be_classified_confidently_is_not_reworded(status, message, late_system, words):
    assert client_words(status, message, late_system) == words


def test_a_401_is_never_worth_a_retry_unless_said_otherwise():
    assert GatewayError(401, "bad key").should_retry is False
    assert GatewayError(401, "a retry lands on another key", should_retry=True).should_retry is True
    assert GatewayError(500, "x").should_retry is None
