"""streams.fast_drain: Faust's per-message wait_first, short-cut when the hand-over does not suspend; topics
whose events carry the consumed bytes without Faust's serializer registry (RawBytes)."""
import asyncio

import pytest

from streams import fast_drain


class FakeConsumer:
    """What install() touches on a Faust consumer; wait_first records how it was called."""

    def __init__(self):
        self.suspend_flow = asyncio.Event()
        self.should_stop = False
        self.slow_calls = 0

    async def wait_first(self, *coros, timeout=None):  # like mode's: first of the awaitables to finish
        self.slow_calls += 1
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=timeout)
        for t in pending:
            t.cancel()
        for t in done:
            t.result()
        return done


def run(coro):
    return asyncio.run(coro)


def test_a_hand_over_that_never_suspends_skips_the_tasks():
    async def scenario():
        consumer, seen = FakeConsumer(), []
        fast_drain.install(consumer)

        async def hand_over(m):
            seen.append(m)

        for m in range(3):
            await consumer.wait_first(hand_over(m), consumer.suspend_flow.wait())
        return seen, consumer.slow_calls

    assert run(scenario()) == ([0, 1, 2], 0)


def test_a_hand_over_that_suspends_finishes_through_the_original():
    async def scenario():
        consumer, seen = FakeConsumer(), []
        fast_drain.install(consumer)
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        queue.put_nowait("full")

        async def hand_over(m):
            seen.append(("start", m))
            await queue.put(m)  # blocks until the reader below makes room
            seen.append(("put", m))

        async def reader():
            await asyncio.sleep(0.05)
            return [await queue.get(), await queue.get()]

        read = asyncio.ensure_future(reader())
        await consumer.wait_first(hand_over(7), consumer.suspend_flow.wait())
        return seen, await read, consumer.slow_calls

    seen, read, slow = run(scenario())
    assert seen == [("start", 7), ("put", 7)] and read == ["full", 7] and slow == 1


def test_a_rebalance_cancels_a_blocked_hand_over():
    async def scenario():
        consumer, events = FakeConsumer(), []
        fast_drain.install(consumer)
        blocker = asyncio.get_running_loop().create_future()  # never resolved

        async def hand_over():
            try:
                await blocker
            except asyncio.CancelledError:
                events.append("cancelled inside")
                raise

        asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
        await consumer.wait_first(hand_over(), consumer.suspend_flow.wait())
        await asyncio.sleep(0)  # let the cancellation land
        return events

    assert run(scenario()) == ["cancelled inside"]


def test_errors_and_other_calls_are_left_to_the_original():
    async def scenario():
        consumer = FakeConsumer()
        fast_drain.install(consumer)

        async def bad():
            raise ValueError("boom")

        with pytest.raises(ValueError):
            await consumer.wait_first(bad(), consumer.suspend_flow.wait())
        fast_calls = consumer.slow_calls
        consumer.suspend_flow.set()  # suspended flow: straight to the original
        await consumer.wait_first(asyncio.sleep(0), consumer.suspend_flow.wait())
        await consumer.wait_first(asyncio.sleep(0), asyncio.sleep(1), timeout=0.5)  # not the drain's call
        return fast_calls, consumer.slow_calls

    assert run(scenario()) == (0, 2)


def test_finish_returns_the_value_and_passes_errors_in():
    async def scenario():
        async def two_steps():
            await asyncio.sleep(0)
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(fut.set_exception, KeyError("x"))
            try:
                await fut
            except KeyError:
                return "handled"

        coro = two_steps()
        first = coro.send(None)
        return await fast_drain.finish(coro, first)

    assert run(scenario()) == "handled"


@pytest.mark.parametrize("key, value, headers", [
    (b"u1", b'{"event_id": 1}', [("trace", b"abc")]),
    (None, b"not json at all", None),
    (b"u2", None, []),  # a tombstone stays None: the core dead-letters it
    (b"", b"", None),
])
def test_raw_bytes_events_equal_what_faust_decodes_with_the_raw_serializer(key, value, headers):
    import faust
    from faust.types import TP
    from faust.types.tuples import Message

    app = faust.App("raw-bytes-test", broker="kafka://127.0.0.1:1")
    fast = app.topic("clicks", schema=fast_drain.RawBytes())
    reference = app.topic("clicks", key_serializer="raw", value_serializer="raw")
    message = Message("clicks", 3, 17, 0.0, 0, headers, key, value, None, 0, 0, TP("clicks", 3))

    async def both():
        return await fast.decode(message, propagate=True), await reference.decode(message, propagate=True)

    got, expected = run(both())
    assert type(got) is type(expected)
    assert (got.key, got.value, got.headers) == (expected.key, expected.value, expected.headers)
    assert got.message is message
    # Publishing through the topic serializes as "raw" does
    assert fast.prepare_key(b"k", None) == reference.prepare_key(b"k", None)
    assert fast.prepare_value(b"v", None) == reference.prepare_value(b"v", None)
