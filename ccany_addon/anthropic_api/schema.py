"""The Anthropic Messages request: pydantic v2 models for the request itself, pydantic dataclasses for its parts.

Only what the gateway reads is typed; unknown fields are kept (clients add new ones every month).
Validation failures become an `invalid_request_error` naming the field.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import is_dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from ccany_addon.anthropic_api.errors import GatewayError
from ccany_addon.util.json_codec import dumps, loads

if TYPE_CHECKING:  # tool_cache reads this module's models
    from ccany_addon.anthropic_api.tool_cache import ToolCache

# The parts of a request, of which a long conversation has thousands: pydantic dataclasses validate in 60% of
# a model's time (2.6 vs 4.2 µs for an assistant turn of three blocks) and `isinstance` on them is the plain one.
_part = dataclass(config=ConfigDict(extra="allow"), kw_only=True)


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


def as_dict(part: object) -> Any:
    """A part (or a list of them) as plain JSON values, its unknown fields included."""
    if isinstance(part, list):
        return [as_dict(item) for item in part]
    if is_dataclass(part):
        return {name: as_dict(value) for name, value in vars(part).items()}
    return part


@_part
class Base64Source:
    type: Literal["base64"]
    media_type: str
    data: str

    def __post_init__(self) -> None:
        # Refused here as the Anthropic API refuses it, rather than by whichever converter decodes it first.
        try:
            binascii.a2b_base64(self.data, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ValueError("data is not valid base64") from None


@_part
class UrlSource:
    type: Literal["url"]
    url: str


@_part
class TextSource:
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


@_part
class ContentSource:
    type: Literal["content"]
    content: str | list[dict[str, Any]]


@_part
class FileSource:
    type: Literal["file"]
    file_id: str


ImageSource = Annotated[Base64Source | UrlSource | FileSource, Field(discriminator="type")]
DocumentSource = Annotated[
    Base64Source | UrlSource | TextSource | ContentSource | FileSource, Field(discriminator="type")
]


@_part
class TextBlock:
    type: Literal["text"]
    text: str


@_part
class ImageBlock:
    type: Literal["image"]
    source: ImageSource


@_part
class DocumentBlock:
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None


@_part
class SearchResultBlock:
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]


@_part
class ToolUseBlock:
    type: Literal["tool_use"]
    id: str
    name: str
    input: Any


@_part
class ToolReferenceBlock:
    """Claude Code's tool search answers with these inside a tool result: the named deferred tool is now loaded.
    The Anthropic API acts on them; converting kinds say it in text ("Tool X is now available.") and declare the
    tool from then on (converters/tool_search.py)."""

    type: Literal["tool_reference"]
    tool_name: str | None = None


# The tag an unknown block is validated under; no client sends it (a client that does gets an UnknownBlock).
UNKNOWN_TAG = "ccany-unknown-block"
_UNKNOWN_TYPE = "ccany_unknown_type"  # where the block's own type waits while it is validated under UNKNOWN_TAG


@_part
class UnknownBlock:
    """A content block of a type this gateway does not know: clients add new ones every month, and an open list
    is the protocol's rule. Accepted, never a 400: the anthropic kind forwards the body as it came, converting
    kinds leave the block out with a note, count_tokens prices its JSON. `type` and every other field are as
    the client sent them. (`parse` gives unknown blocks UNKNOWN_TAG only after a first validation refused them,
    so a body without one costs nothing more, and a block of a known type with wrong fields still gets its
    own 400.)"""

    type: Literal["ccany-unknown-block"]

    def __post_init__(self) -> None:
        self.type = vars(self).pop(_UNKNOWN_TYPE, self.type)


ToolResultContent = Annotated[
    TextBlock | ImageBlock | DocumentBlock | SearchResultBlock | ToolReferenceBlock | UnknownBlock,
    Field(discriminator="type"),
]


@_part
class ToolResultBlock:
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[ToolResultContent] | None = None
    is_error: bool | None = None


@_part
class ThinkingBlock:
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


@_part
class RedactedThinkingBlock:
    type: Literal["redacted_thinking"]
    data: str


@_part
class ServerToolBlock:
    """Blocks of Anthropic-run tools (web search, code execution…): history no other backend can use."""

    type: Literal[
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "container_upload",
        "tool_search_tool_result",
        "tool_reference",
    ]


@_part
class ToolChangeBlock:
    """A change to the request's tools from this point of the conversation on, in a `system` message (the
    Anthropic API's mid-conversation tool changes): `tool` is `{"type": "tool_reference", "name": …}` (a tool of
    `tools`, usually a deferred one) or, for an addition, `{"type": "tool_definition", "definition": {name,
    description, input_schema}}` (a tool defined inline)."""

    type: Literal["tool_addition", "tool_removal"]
    tool: dict[str, Any]


ContentBlock = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock
    | ServerToolBlock
    | ToolChangeBlock
    | UnknownBlock,
    Field(discriminator="type"),
]


@_part
class Message:
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


@_part
class Tool:
    name: str
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    defer_loading: bool | None = None

    @property
    def is_custom(self) -> bool:
        return self.type in (None, "custom") and self.input_schema is not None


class ToolChoice(_Model):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Thinking(_Model):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class Metadata(_Model):
    user_id: str | None = None


class OutputConfig(_Model):
    effort: str | None = None
    format: dict[str, Any] | None = None  # structured outputs: {"type": "json_schema", "schema": {…}}


class MessagesRequest(_Model):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Message]
    system: str | list[TextBlock] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None


_TAGS = {
    tag
    for model in (Base64Source, UrlSource, TextSource, ContentSource, FileSource, TextBlock, ImageBlock,
                  DocumentBlock, SearchResultBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock,
                  RedactedThinkingBlock, ServerToolBlock, ToolReferenceBlock, ToolChangeBlock, UnknownBlock)
    for tag in model.__pydantic_fields__["type"].annotation.__args__
}


class CountTokensRequest(_Model):
    model: str = Field(min_length=1)
    messages: list[Message]
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


def _location(loc: tuple[str | int, ...]) -> list[str]:
    """The field path as the client wrote it: without pydantic's union-member and tag entries."""
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part in ("str", "none") or "[" in part):
            continue
        in_tagged_list = i >= 2 and isinstance(loc[i - 1], int) and "[" in str(loc[i - 2])
        if part in _TAGS and (in_tagged_list or (i >= 1 and loc[i - 1] == "source")):
            continue
        parts.append(str(part))
    return parts


def _is_unknown_block(problem: Any) -> bool:
    """Whether a validation problem is only a content block of a type the gateway does not know (accepted)."""
    if problem["type"] != "union_tag_invalid" or not isinstance(problem.get("input"), dict) \
            or not isinstance(problem["input"].get("type"), str):  # a type that is no string stays a 400
        return False
    loc = _location(problem["loc"])
    return len(loc) >= 2 and loc[-2] == "content" and loc[-1].isdigit()


def validate[T: Request](model: type[T], value: Any) -> T:
    """`model` validated from parsed JSON, content blocks of unknown types taken as UnknownBlock.

    Validation runs first as if every block were known: a body without unknown blocks (nearly all) costs
    nothing more. When it fails on blocks of unknown types, those blocks are given UNKNOWN_TAG, their own type
    kept aside (in place: `value` is the caller's own parse), and validation runs again; a ValidationError from
    that names the real problem."""
    try:
        return model.model_validate(value)
    except ValidationError as error:
        unknown = [_location(p["loc"]) for p in error.errors(include_url=False) if _is_unknown_block(p)]
        if not unknown:
            raise
    for path in unknown:
        node = value
        try:
            for part in path:
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (LookupError, TypeError, ValueError):  # not a path into the body after all: validation says why
            continue
        if isinstance(node, dict) and isinstance(node.get("type"), str):
            node[_UNKNOWN_TYPE], node["type"] = node["type"], UNKNOWN_TAG
    return model.model_validate(value)


def _describe(error: ValidationError) -> str:
    problems = error.errors(include_url=False)
    problems = [p for p in problems if not _is_unknown_block(p)] or problems  # unknown blocks are no problem
    # The deepest problem is the specific one; shallower ones are other members of the same union.
    first = max(problems, key=lambda p: len(p["loc"]))
    loc = _location(first["loc"])
    field = ".".join(loc) or "body"
    if first["type"] == "json_invalid":
        return f"Request body is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    if first["type"] == "model_type" and not loc:
        return "Request body must be a JSON object"
    if first["type"] == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag", "?")
        kind = "source type" if loc[-1:] == ["source"] else "content block type" if "content" in loc else "type"
        return f"{field}.type: unknown {kind} '{tag}'"
    if first["type"] == "union_tag_not_found":
        return f"{field}.type: Field required"
    return f"{field}: {first['msg']}"


type Request = MessagesRequest | CountTokensRequest


class _Constant(ValueError):
    pass


def _refuse_constants(body: bytes) -> None:
    """pydantic's JSON parser takes `NaN` and `Infinity`, which JSON (and the Anthropic API) does not."""
    def refuse(name: str) -> None:
        raise _Constant(name)

    try:
        json.loads(body, parse_constant=refuse)
    except _Constant as constant:
        raise GatewayError(400, f"Request body is not valid JSON: {constant} is not a JSON number") from None
    except (ValueError, RecursionError):  # nesting deeper than Python's stack: pydantic's parser refuses it too
        pass  # pydantic's parser says what else is wrong


def parse[T: Request](model: type[T], body: bytes, tools: ToolCache | None = None) -> T:
    """Validate a raw request body, or raise a 400 that names the offending field.

    orjson then validation of the objects is a third cheaper than pydantic's own JSON parser (0.07 vs 0.10 ms
    for a Claude Code body) and accepts the same bodies; with a `tools` cache, tools seen before are not parsed
    again. Anything refused goes through pydantic's JSON parser, whose errors speak JSON (array, object) and
    whose result stands."""
    if tools is not None and (known := tools.parse(model, body)) is not None:
        return known
    value = None
    try:
        value = loads(body)
        request = validate(model, value)
    except ValueError:  # orjson's JSONDecodeError and pydantic's ValidationError both are
        pass
    else:
        if tools is not None and request.tools:
            tools.remember(body, value, request.tools)
        return request
    _refuse_constants(body)
    try:
        # The body as validate left it (its unknown blocks marked), so the problem named is the real one.
        return model.model_validate_json(body if value is None else dumps(value))
    except ValidationError as error:
        raise GatewayError(400, _describe(error)) from None
