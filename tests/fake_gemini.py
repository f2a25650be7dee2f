"""Placeholder: being written."""

from __future__ import annotations

import asyncio


async def handle(writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str], body: dict) -> bool:
    """Answers the request and returns True when the path is this dialect's; False otherwise."""
    return False
