"""Faust hot spots removed from every consumed message: four tasks and an asyncio.wait (`install`); the
conductor's route to the agent's queue (`hand_over_directly`); an async generator step, a high-water
lookup and a wait_first call made for each record of a fetch (`drain_in_bulk`); and a key and a value
looked up through the serializer registry only to come back as the same bytes (`RawBytes`).

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
import logging
from typing import Any, Coroutine

import faust
from faust.types import TP

log = logging.getLogger(__name__)


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
        if coros and coros[0] is HANDED_OVER:  # hand_over_directly's callback did it all
            for coro in coros[1:]:
                coro.close()  # the suspend_flow wait, never started
            return None
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


# What hand_over_directly's callback returns in place of the conductor's coroutine: nothing left to do.
HANDED_OVER = object()


def hand_over_directly(app: Any) -> None:
    """Put each consumed record of a RawBytes topic on its agent's queue in the consumer's own loop.

    Faust's drain loop hands every message to `Conductor.on_message`: an async lock and a lookup, then the
    partition's compiled handler, which awaits flow control and the producer buffer's ebb (its size read
    through Faust's settings registry), takes a reference, decodes and puts the event on each subscribing
    channel's queue: ~16% of the shell's main thread at saturation (issue 6). For a partition whose only
    subscriber is a RawBytes topic (the scoring agent's), the replacement callback does the same steps
    without a coroutine, and returns HANDED_OVER for the patched wait_first (`install`) to finish.
    Whenever one of the steps would have to wait (flow suspended or a rebalance under way, the queue full,
    the producer buffer over its limit, the routes being rebuilt), and for every other partition, the
    message goes the conductor's way, unchanged.
    """
    consumer, conductor = app.consumer, app.topics
    if app.conf.producer_threaded:  # the producer buffer's size lives elsewhere: leave it all to Faust
        return
    conduct = consumer.callback  # Conductor.on_message
    flow_control, suspend_flow, routes_lock = app.flow_control, consumer.suspend_flow, conductor._tp_to_callback_lock
    buffer = app.producer.buffer
    event_class = app.conf.Event
    routes: dict = {}  # per partition: (the conductor's handler it was built for, queue, pressure callbacks)
    handed_any: list = []  # logged once: the fetcher read the callback after it was replaced

    def route(tp: Any) -> tuple:
        handler = conductor._tp_to_callback.get(tp)
        known = routes.get(tp)
        if known is not None and known[0] is handler:
            return known
        channels = conductor._tp_index.get(tp, ())  # the handler is rebuilt whenever these change
        channel = next(iter(channels)) if len(channels) == 1 else None
        if handler is None or channel is None or not isinstance(channel.schema, RawBytes):
            known = (handler, None, None, None)
        else:  # what the conductor's handler does when the queue is under pressure, and after
            # As a Faust TP: the consumer's books hold no other kind (the message's is aiokafka's own).
            faust_tp = TP(tp.topic, tp.partition)

            def on_pressure_high() -> None:
                app.sensors.on_topic_buffer_full(faust_tp)
                consumer.on_buffer_full(faust_tp)

            def on_pressure_drop() -> None:
                consumer.on_buffer_drop(faust_tp)

            known = (handler, channel.queue, on_pressure_high, on_pressure_drop)
        routes[tp] = known
        return known

    def callback(message: Any) -> Any:
        _handler, queue, on_pressure_high, on_pressure_drop = route(message.tp)
        if (queue is None or not flow_control.is_active() or suspend_flow.is_set() or routes_lock.locked()
                or queue.full() or len(buffer.pending._queue) > buffer.max_messages):
            return conduct(message)
        message.incref(1)  # the agent's ack takes it back
        queue.put_nowait_enhanced(event_class(app, message.key, message.value, message.headers, message),
                                  on_pressure_high=on_pressure_high, on_pressure_drop=on_pressure_drop)
        if not handed_any:
            handed_any.append(True)
            log.info("consumed records go straight to the agent's queue (first: %s/%d)", message.topic,
                     message.partition)
        return HANDED_OVER

    # Read by Consumer._drain_messages each time the fetcher (re)starts: set before the worker starts.
    consumer.callback = callback


def drain_in_bulk(app: Any) -> None:
    """Replace the consumer's drain loop with one that walks each fetch in a plain loop.

    faust-streaming 0.15.3's `Consumer._drain_messages` reads records through `getmany`, an async generator
    that, per record, reads the partition's high water from the consumer thread for the monitor and yields;
    the loop then builds `wait_first(callback(message), suspend_flow.wait())`, two coroutines even when the
    callback (`hand_over_directly`'s) has already queued the event. This loop does the same per fetch in
    the same order, with the same read-offset, gap and commit bookkeeping and a turn of the event loop
    every 100 records as Faust's; what changes: the high water is read once per partition and fetch (it
    feeds only the monitor's lag figures), and a callback that handed the record over is not awaited.
    A callback that returns a coroutine (the conductor's way) goes through wait_first as before, and a
    fetch that finds the flow stopped (a rebalance) seeks back to the committed offsets as getmany does.
    """
    from faust.transport.consumer import CONSUMER_FETCHING

    consumer = app.consumer

    async def drain_messages(fetcher: Any) -> None:
        callback = consumer.callback
        consumer_should_stop, fetcher_should_stop = consumer._stopped.is_set, fetcher._stopped.is_set
        get_read_offset, set_read_offset = consumer._read_offset.__getitem__, consumer._read_offset.__setitem__
        acks_enabled_for = app.topics.acks_enabled_for
        commit_every = consumer._commit_every
        to_message, track_end_offset = consumer._to_message, app.monitor.track_tp_end_offset
        since_yield = 0
        log.info("the consumer's fetches are walked in bulk")
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                consumer.diag.set_flag(CONSUMER_FETCHING)
                await consumer.sleep(0)  # as Faust's loop: getmany may return at once, again and again
                if consumer.should_stop:
                    continue
                records, active_partitions = await consumer._wait_next_records(1.0)
                generation_id = app.consumer_generation_id
                if records is None or consumer.should_stop:
                    continue
                if not consumer.flow_active:
                    try:  # as getmany: records fetched across a rebalance are read again from the commits
                        await consumer.perform_seek()
                    except Exception as exc:  # noqa: BLE001 - Faust logs this one and goes on
                        log.warning("exception performing seek when flow not active %r", exc)
                    continue
                tracked: set = set()
                for tp, record in consumer.scheduler.iterate(records):
                    if not consumer.flow_active or app.consumer_generation_id != generation_id:
                        break
                    if not (active_partitions is None or tp in active_partitions
                            or tp in consumer._buffered_partitions):
                        continue
                    if tp not in tracked:
                        tracked.add(tp)
                        track_end_offset(tp, consumer.highwater(tp))
                    since_yield += 1
                    if since_yield > 100:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = record.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # Faust drops what it already read (a seek back re-delivers it)
                    message = to_message(tp, record)
                    if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(message.topic):
                        await consumer._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and consumer._n_acked >= commit_every:
                        consumer._n_acked = 0
                        await consumer.commit()
                    handed = callback(message)
                    if handed is not HANDED_OVER:
                        await consumer.wait_first(handed, consumer.suspend_flow.wait())
                    set_read_offset(tp, offset)
                consumer.diag.unset_flag(CONSUMER_FETCHING)
        except consumer.consumer_stopped_errors:
            if app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            consumer.diag.unset_flag(CONSUMER_FETCHING)

    # Read by Fetcher._fetcher each time the fetcher (re)starts.
    consumer._drain_messages = drain_messages


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
