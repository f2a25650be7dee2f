"""Placeholder: being written."""

from __future__ import annotations


def to_responses_request(request, target):
    raise NotImplementedError


to_gemini_request = to_responses_request


def to_message(body, ctx):
    raise NotImplementedError


class ResponsesStreamTranslator:
    def __init__(self, ctx, upstream="upstream"):
        raise NotImplementedError


GeminiStreamTranslator = ResponsesStreamTranslator
