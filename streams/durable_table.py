"""A Faust table whose changelog writes can be awaited until the broker has them.

The worker's order of writes (DESIGN §4) needs "this batch's state is in the changelog" before the batch's
intents go out and before its offsets can be committed. `app.producer.flush()` does not prove that:
faust-streaming 0.15.3's ProducerBuffer.flush gives up after 0.1 s without progress and returns with
changelog records still queued, which on a busy 2-core machine happened often enough for failovers to
restore stale state. Each table write's FutureMessage, though, resolves only when the broker
acknowledged the record, so this table keeps them and `confirm_changelog` awaits them.
"""
from __future__ import annotations

import asyncio

import faust


class DurableTable(faust.Table):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._unconfirmed: list[asyncio.Future] = []

    def send_changelog(self, *args, **kwargs):
        fut = super().send_changelog(*args, **kwargs)
        self._unconfirmed.append(fut)
        return fut

    async def confirm_changelog(self) -> None:
        """Return once every changelog write made so far is acknowledged; raise if one failed."""
        pending, self._unconfirmed = self._unconfirmed, []
        for fut in pending:  # in send order; most are done by now, and awaiting a done future is nearly free
            await fut

