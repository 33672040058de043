"""Two Faust hot spots removed from every consumed message: four tasks and an asyncio.wait (`install`), and
a key and a value looked up through the serializer registry only to come back as the same bytes (`RawBytes`).

faust-streaming 0.15.3's `Consumer._drain_messages` hands each message to the conductor with
`await self.wait_first(callback(message), self.suspend_flow.wait())`, so that a rebalance (suspend_flow)
cancels a hand-over that blocks, e.g. on a full agent queue. mode's `Service.wait_first` wraps both
coroutines, plus the service's stopped and crashed events, in tasks and runs `asyncio.wait` on them: per
message, more than the worker's whole featurization (docs/BENCHMARKS.md, issue 6).

Nearly every hand-over finishes without suspending, so `install` runs the callback directly up to its
first suspension; only a callback that does suspend goes through the original `wait_first`, with the rest
of it, and keeps the cancellation on a rebalance. Any other call goes to the original unchanged.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import Any, Coroutine

import faust


async def finish(coro: Coroutine, yielded: Any) -> Any:
    """Run a coroutine that was started by hand and suspended on `yielded` to its end, as its task would:
    resume it when that future is done, and pass errors and cancellation into it."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)  # a bare yield: give the loop one turn
            else:
                yielded._asyncio_future_blocking = False  # as a task does with what its coroutine yields
                await yielded
        except BaseException as exc:  # noqa: BLE001 - cancellation too: the coroutine decides what to do
            resume, value = coro.throw, exc
        else:
            resume, value = coro.send, None
        try:
            yielded = resume(value)
        except StopIteration as stop:
            return stop.value


def install(consumer: Any) -> None:
    """Give `consumer` (a Faust consumer) a wait_first with the fast path described above."""
    original = consumer.wait_first
    suspend_wait = type(consumer.suspend_flow).wait.__code__

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        if not (len(coros) == 2 and timeout is None and inspect.iscoroutine(coros[0])
                and getattr(coros[1], "cr_code", None) is suspend_wait
                and not consumer.suspend_flow.is_set() and not consumer.should_stop):
            return await original(*coros, timeout=timeout)
        callback, suspended = coros
        try:
            yielded = callback.send(None)
        except StopIteration:
            suspended.close()
            return None  # _drain_messages does not look at the result
        except BaseException:
            suspended.close()
            raise
        return await original(finish(callback, yielded), suspended)

    consumer.wait_first = wait_first


class RawBytes(faust.Schema):
    """A topic's key and value as the bytes on the wire, decoded without Faust's serializer registry.

    With the "raw" serializer, Faust's own decode still runs each key and value through the registry's
    codec lookup, error wrapping and payload preparation, and reads the Event class from the app's
    settings per message: ~7% of the worker shell's time at saturation (bench_pipeline.py --profile), to
    hand back the bytes it was given. The events are the same: key and value as consumed (None stays None),
    the message's headers. Publishing through such a topic serializes as "raw" does.
    """

    def __init__(self) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")

    def compile(self, app: Any, **_error_handlers: Any) -> Any:
        event_class = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event_class(app, message.key, message.value, message.headers, message)

        return decode
