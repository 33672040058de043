"""Fetches that wait for a fuller answer while clicks flow, and come back at once when they trickle.

A consumer's fetch asks the broker to answer once it holds `fetch_min_bytes`, or after `fetch_max_wait_ms`.
Faust asks for 1 byte. Under steady traffic every produce request of the shops' clients then makes a
fetch answer of its own, and each answer costs the worker a trip through Faust's consumer thread into its
event loop, plus a new request for the broker. Asking for 64 KiB or 5 ms instead caps those trips at 200
a second: at 1k clicks/s the median click → intent latency fell from 52-60 ms to 31-44 ms (alternated
runs, docs/BENCHMARKS.md, issue 6).

The same request on an idle worker polls the broker 200 times a second for nothing (13% of a core for the
worker and 14% for the broker, measured). So the pacing is on only while clicks come at least as fast as
its fetches would (1000 / max_wait_ms a second; below that, 1-byte fetches are no more frequent), and off
again below half that rate: then the first click after a lull is answered at once, as before.

Nor while the worker is behind (most batches taken full): then every fetch answer is full anyway, and the
paced fetches measured 5-10% fewer events/s at saturation (alternated runs; the cause is not known).
"""
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class FetchPacing:
    """Decides once a second, from the batches taken meanwhile, which fetch settings the consumer uses."""

    def __init__(self, min_bytes: int = 65_536, max_wait_ms: int = 5):
        if max_wait_ms <= 0:
            raise ValueError(f"max_wait_ms must be positive, not {max_wait_ms}")
        self.min_bytes, self.max_wait_ms = min_bytes, max_wait_ms
        self.on = False
        self._taken = self._batches = self._full = 0

    @property
    def on_rate(self) -> float:
        """Clicks per second from which the paced fetches are no more frequent than 1-byte ones."""
        return 1000.0 / self.max_wait_ms

    def taken(self, n: int, full: bool) -> None:
        """A batch of `n` clicks was taken; `full`: it held max_batch (more were waiting)."""
        self._taken += n
        self._batches += 1
        self._full += full

    def decide(self, elapsed_s: float) -> bool:
        """Whether to pace, given the batches taken in the last `elapsed_s` seconds (the counts restart)."""
        rate = self._taken / elapsed_s if elapsed_s > 0 else 0.0
        behind = self._full * 2 > self._batches
        self._taken = self._batches = self._full = 0
        if self.on != (not behind and rate >= (self.on_rate / 2 if self.on else self.on_rate)):
            self.on = not self.on
            if self.on:
                log.info("fetch pacing on: fetches wait for %d bytes or %d ms (%.0f clicks/s)",
                         self.min_bytes, self.max_wait_ms, rate)
            else:
                log.info("fetch pacing off: fetches answer at once (%.0f clicks/s%s)", rate,
                         ", most batches full" if behind else "")
        return self.on

    def apply(self, consumer: Any) -> None:
        """Set the live fetcher of `consumer` (an aiokafka consumer, started) to the current decision.

        Off, it goes back to what the consumer was created with (Faust's). The fetcher reads both values
        each time it builds a request; the consumer runs in Faust's consumer thread, and setting an int
        attribute from here is atomic.
        """
        fetcher = getattr(consumer, "_fetcher", None)
        if fetcher is None:  # not started yet
            return
        if self.on:
            fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms = self.min_bytes, self.max_wait_ms
        else:
            fetcher._fetch_min_bytes = consumer._fetch_min_bytes
            fetcher._fetch_max_wait_ms = consumer._fetch_max_wait_ms


def live_consumer(app: Any) -> Any:
    """The aiokafka consumer inside a Faust app's consumer thread, or None before it exists."""
    thread = getattr(app.consumer, "_thread", None)
    return getattr(thread, "_consumer", None)
