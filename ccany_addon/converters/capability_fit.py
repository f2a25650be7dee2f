"""Fits a request to what the upstream model can take, before any dialect converts it: a model without
vision gets a placeholder instead of each image, a model without tools gets no tool definitions. Every change
is a note in the flow log. Pure."""

from __future__ import annotations

from dataclasses import replace

from ccany_addon.anthropic_api.schema import ImageBlock, MessagesRequest, TextBlock, ToolResultBlock
from ccany_addon.upstreams.models import Capabilities

IMAGE_PLACEHOLDER = "[image left out: the upstream model does not accept images]"


def fit_request(request: MessagesRequest, caps: Capabilities) -> tuple[MessagesRequest, list[str]]:
    notes: list[str] = []
    changes: dict = {}
    if not caps.tools and request.tools:
        changes.update(tools=None, tool_choice=None)
        notes.append(f"left out {len(request.tools)} tools: the upstream model does not take tools")
    if not caps.vision:
        messages, images = [], 0
        for message in request.messages:
            if isinstance(message.content, list):
                content, replaced = _without_images(message.content)
                images += replaced
                message = replace(message, content=content) if replaced else message
            messages.append(message)
        if images:
            changes["messages"] = messages
            notes.append(f"replaced {images} images with a placeholder: the upstream model does not accept images")
    return (request.model_copy(update=changes) if changes else request), notes


def _without_images(blocks: list) -> tuple[list, int]:
    out, replaced = [], 0
    for block in blocks:
        if isinstance(block, ImageBlock):
            out.append(TextBlock(type="text", text=IMAGE_PLACEHOLDER))
            replaced += 1
        elif isinstance(block, ToolResultBlock) and isinstance(block.content, list):
            content, inner = _without_images(block.content)
            out.append(replace(block, content=content) if inner else block)
            replaced += inner
        else:
            out.append(block)
    return out, replaced
