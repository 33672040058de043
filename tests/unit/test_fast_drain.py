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


def _conducted_app(name: str, schema_is_raw: bool = True, maxsize: int = 8):
    """A Faust app (not started) whose conductor routes partition clicks/0 to one topic, as after an
    assignment; returns the app, the topic and that partition."""
    import faust
    from faust.types import TP

    app = faust.App(name, broker="kafka://127.0.0.1:1", store="memory://", stream_buffer_maxsize=maxsize)
    topic = app.topic("clicks", schema=fast_drain.RawBytes()) if schema_is_raw else app.topic(
        "clicks", key_serializer="raw", value_serializer="raw")
    tp = TP("clicks", 0)
    app.topics._tp_index[tp].add(topic)
    app.topics._update_callback_map()
    app.flow_control.resume()
    return app, topic, tp


def tp_of_clicks():
    from faust.types import TP

    return TP("clicks", 0)


def _messages(tp, n):
    """As Faust's aiokafka driver makes them: the message's tp is aiokafka's TopicPartition, not a TP."""
    from aiokafka import TopicPartition
    from faust.types.tuples import ConsumerMessage

    return [ConsumerMessage("clicks", 0, offset, 0.0, 0, [("h", b"1")], b"u%d" % offset, b"v%d" % offset,
                            None, 2, 2, TopicPartition(*tp)) for offset in range(n)]


def test_the_direct_hand_over_leaves_what_the_conductor_leaves():
    """The same messages through Faust's conductor (its compiled handler) and through hand_over_directly:
    the same events on the agent's queue, the same references taken, the same partition paused while the
    queue is under pressure and resumed once it drains."""
    async def through(direct: bool):
        app, topic, tp = _conducted_app("direct" if direct else "conductor")
        if direct:
            fast_drain.hand_over_directly(app)
        messages = _messages(tp, 8)  # past the queue's high-pressure mark (6 of maxsize 8)
        for m in messages:
            result = app.consumer.callback(m)
            if direct:
                assert result is fast_drain.HANDED_OVER
            else:
                await result
        paused = [(tp, type(tp)) for tp in app.consumer._buffered_partitions]  # resumed as the queue drains
        queued = [topic.queue.get_nowait() for _ in range(topic.queue.qsize())]
        active = app.consumer._get_active_partitions()  # asserts that it holds Faust TPs only
        return ([(e.key, e.value, e.headers, e.message.offset, type(e).__name__) for e in queued],
                [m.refcount for m in messages], paused, [e.message is m for e, m in zip(queued, messages)],
                sorted(app.consumer._buffered_partitions), [(tp, type(tp)) for tp in active])

    by_conductor, directly = run(through(False)), run(through(True))
    assert directly == by_conductor
    events, refcounts, paused, same_messages, paused_after, active = directly
    assert len(events) == 8 and refcounts == [1] * 8 and all(same_messages)
    assert paused == [(tp_of_clicks(), type(tp_of_clicks()))] and paused_after == [] and active == paused


@pytest.mark.parametrize("case", ["not RawBytes", "flow suspended", "rebalancing", "queue full", "producer buffer"])
def test_the_direct_hand_over_leaves_to_the_conductor_what_might_wait(case):
    async def scenario():
        app, topic, tp = _conducted_app(case, schema_is_raw=case != "not RawBytes", maxsize=1)
        fast_drain.hand_over_directly(app)
        if case == "flow suspended":
            app.flow_control.suspend()
        elif case == "rebalancing":
            app.consumer.suspend_flow.set()
        elif case == "queue full":
            topic.queue.put_nowait("already there")
        elif case == "producer buffer":
            for i in range(app.producer.buffer.max_messages + 1):
                app.producer.buffer.pending.put_nowait(i)
        result = app.consumer.callback(_messages(tp, 1)[0])
        assert result is not fast_drain.HANDED_OVER
        result.close()  # the conductor's coroutine: that route is Faust's own, not exercised here

    run(scenario())


def test_wait_first_finishes_a_direct_hand_over_at_once():
    async def scenario():
        consumer = FakeConsumer()
        fast_drain.install(consumer)
        suspended = consumer.suspend_flow.wait()
        await consumer.wait_first(fast_drain.HANDED_OVER, suspended)
        return consumer.slow_calls, suspended.cr_frame  # closed: no "never awaited" warning

    assert run(scenario()) == (0, None)


def _drain_once(bulk: bool, fetches: list[dict], read_offsets: dict) -> tuple:
    """Run the consumer's drain loop (Faust's own, or drain_in_bulk's) over `fetches` (record maps, as the
    consumer thread returns them) on an app that is not started; returns what reached the agent's queue,
    the read offsets and the gaps it noted."""
    from faust.types import TP

    async def scenario():
        app, topic, tp = _conducted_app("bulk" if bulk else "faust", maxsize=1000)
        app.topics._tp_index[TP("clicks", 1)].add(topic)  # partition 1 too
        app.topics._update_callback_map()
        app.topics._acking_topics.add("clicks")  # as the agent's subscription does: holes are noted
        fast_drain.install(app.consumer)
        fast_drain.hand_over_directly(app)
        if bulk:
            fast_drain.drain_in_bulk(app)
        consumer = app.consumer
        consumer.highwater = lambda tp: 1000  # the consumer thread is not started
        for p, offset in read_offsets.items():
            consumer._read_offset[TP("clicks", p)] = offset
            consumer._committed_offset[TP("clicks", p)] = offset
        fetcher = type("Fetcher", (), {"_stopped": asyncio.Event()})()
        pending = list(fetches)

        async def wait_next_records(timeout):
            if len(pending) == 1:
                fetcher._stopped.set()  # the loop ends after this fetch
            return pending.pop(0), None

        consumer._wait_next_records = wait_next_records
        await consumer._drain_messages(fetcher)
        queued = [topic.queue.get_nowait() for _ in range(topic.queue.qsize())]
        return ([(e.message.partition, e.message.offset, e.key, e.value) for e in queued],
                {tp.partition: o for tp, o in consumer._read_offset.items()},
                {tp.partition: sorted((i.begin, i.end) for i in gaps) for tp, gaps in consumer._gap.items() if gaps})

    return run(scenario())


def test_the_bulk_drain_hands_over_what_faust_s_drain_does():
    """The same fetches through faust-streaming's _drain_messages and through drain_in_bulk: the same events
    on the agent's queue in the same order, the same read offsets, the same gaps noted for the commits;
    records below a partition's read offset (a re-delivery) dropped by both."""
    from aiokafka import TopicPartition
    from aiokafka.structs import ConsumerRecord

    def records(p, offsets):
        return [ConsumerRecord("clicks", p, o, 0, 0, b"u%d" % o, b"v%d-%d" % (p, o), None, 2, 4, ())
                for o in offsets]

    fetches = [
        {TopicPartition("clicks", 0): records(0, [0, 1, 2, 5, 6]),  # a hole at 3-4
         TopicPartition("clicks", 1): records(1, [7, 8, 9, 10])},  # read through 8 already: 7 dropped
        {TopicPartition("clicks", 0): records(0, [7, 8]), TopicPartition("clicks", 1): records(1, [11])},
    ]
    by_faust = _drain_once(False, fetches, {1: 8})
    in_bulk = _drain_once(True, fetches, {1: 8})
    assert in_bulk == by_faust
    queued, read_offsets, gaps = in_bulk
    assert [(p, o) for p, o, _k, _v in queued if p == 0] == [(0, 0), (0, 1), (0, 2), (0, 5), (0, 6), (0, 7), (0, 8)]
    assert [(p, o) for p, o, _k, _v in queued if p == 1] == [(1, 8), (1, 9), (1, 10), (1, 11)]
    # (Faust notes the hole as offsets 3..5, the record after it included; the same both ways)
    assert read_offsets == {0: 8, 1: 11} and gaps == {0: [(3, 6)]}
