"""streams.app.take_batch: greedy micro-batches from the agent's queue (no broker needed)."""
import asyncio

from streams.app import take_batch


def run(coro):
    return asyncio.run(coro)


def test_takes_what_is_queued_up_to_max_batch_without_waiting():
    async def scenario():
        q: asyncio.Queue = asyncio.Queue()
        for i in range(10):
            q.put_nowait(i)
        first = await take_batch(q, max_batch=4, max_wait=0.0)
        rest = await take_batch(q, max_batch=100, max_wait=0.0)
        return first, rest, q.qsize()

    first, rest, left = run(scenario())
    assert first == [0, 1, 2, 3] and rest == [4, 5, 6, 7, 8, 9] and left == 0


def test_waits_for_the_first_event_then_returns_without_a_timer_when_greedy():
    async def scenario():
        q: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, q.put_nowait, "a")
        loop.call_later(0.30, q.put_nowait, "late")  # after the batch was taken
        batch = await take_batch(q, max_batch=8, max_wait=0.0)
        return batch, q.qsize()

    batch, left = run(scenario())
    assert batch == ["a"] and left == 0


def test_max_wait_lingers_once_for_more_events():
    async def scenario():
        q: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        q.put_nowait(0)
        loop.call_later(0.02, q.put_nowait, 1)   # inside the linger
        loop.call_later(0.50, q.put_nowait, 2)   # far after it
        batch = await take_batch(q, max_batch=8, max_wait=0.2)
        return batch

    assert run(scenario()) == [0, 1]
