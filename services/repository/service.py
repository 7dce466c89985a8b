"""Periodic `PollRepository` requests over the bus; idle unless the control mode is poll."""

from __future__ import annotations

import asyncio

from naiad.kernel.inference.messages import PollRepository
from naiad.kernel.service import Service


class RepositoryPoller(Service):
    requires = ("models",)

    async def start(self) -> None:
        server = self.context.config.server
        if server.model_control_mode != "poll":
            return
        if server.repository_poll_secs <= 0:
            self.log.info("poll mode with repository_poll_secs = 0: polling only on load requests")
            return
        self.spawn(self._poll_forever(float(server.repository_poll_secs)), "poll")

    async def _poll_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            if not self.context.lifecycle.accepting:
                return
            try:
                await self.bus.request(PollRepository())
            except Exception as exc:  # one failed scan is logged; the next one tries again
                self.log.error("repository poll failed: %s: %s", exc.__class__.__name__, exc)
