"""A stop that loses nothing: on SIGTERM (or Ctrl-C, or mitmweb's quit) mitmproxy runs every addon's `done`
in chain order, then cancels whatever is still running. This addon comes first in the chain, so while its
`done` waits the gateway and the flow log are still whole:

1. the listening sockets close: new connections are refused, so clients go elsewhere or retry later;
2. flows in flight may finish within `ccany_shutdown_grace` seconds; their responses tell HTTP/1 clients that
   the connection closes, so a kept-alive connection carries no new request;
3. then the flow log's own `done` logs what is still unfinished as interrupted and drains its writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mitmproxy import ctx

from ccany_addon.config.options import declare
from ccany_addon.flowlog.addon import FlowLog
from ccany_addon.flowlog.writer import describe_failure
from ccany_addon.proxy import mitm_compat
from ccany_addon.proxy.option_checks import require_bounds

logger = logging.getLogger("ccany")

POLL = 0.05  # how often the wait looks at the flows in flight


class GracefulStop:
    def __init__(self, flowlog: FlowLog) -> None:
        self.flowlog = flowlog

    def load(self, loader: Any) -> None:
        declare(loader, "shutdown")

    def configure(self, updated: set[str]) -> None:
        require_bounds(updated, non_negative=("ccany_shutdown_grace",))

    async def done(self) -> None:
        grace = ctx.options.ccany_shutdown_grace
        self.flowlog.draining = True
        try:
            closed = await mitm_compat.stop_listening()
        except Exception as error:  # still wait: the flows in flight are what matters
            closed = 0
            logger.error(f"ccany: the listening sockets could not be closed: {describe_failure(error)}")
        in_flight = len(self.flowlog.in_flight)
        logger.info(f"ccany: stopping: {closed} listeners closed, {in_flight} flows in flight, "
                    f"waiting up to {grace} s for them")
        started = time.monotonic()
        deadline = started + grace
        while self.flowlog.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(POLL)
        logger.info(f"ccany: stopping after {time.monotonic() - started:.1f} s of grace: "
                    f"{len(self.flowlog.in_flight)} flows unfinished")
