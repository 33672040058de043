"""Whether a micro-batch waits for more clicks once the agent's queue runs dry: only while the cores are busy.

Waiting (`max_wait`) makes batches bigger, and every batch has a cost of its own besides its clicks: the
round trip to the core process, a changelog flush and its acknowledgement, an intents request. The core
alone spends ~1 ms a batch on it (bench/bench_core.py: 79 µs a click in batches of 25, 36 µs in batches of
2000). Under load that saving is what keeps the latency down; at light load the wait is only delay.
Click → intent p50 on the 2-core machine, never / always waiting 5 ms (docs/BENCHMARKS.md, eleventh round):
1k events/s 10.3 / 15.0 ms, 2.5k 17.3 / 18.6 ms, 3.5k 23.6 / 21.5 ms, 5k 43.1 / 27.4 ms. Where they cross,
the cores were busy ~0.5 s/s without the wait and ~0.35 s/s with it.

So batches wait only once the cores were busy for more than `from_load` seconds per second (their own time
on batches, the measure streams/core_layout.py uses), and stop waiting after two seconds below
`until_load`: the band between holds the load the wait itself takes away, so the choice does not flap.
`from_load` 0: always wait, as before this choice existed.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class BatchWait:
    def __init__(self, max_wait: float, from_load: float = 0.5, until_load: float = 0.3, calm_seconds: int = 2):
        if from_load > 0 and until_load > from_load:
            raise ValueError(f"until_load ({until_load}) must not exceed from_load ({from_load})")
        self.max_wait, self.from_load, self.until_load = max_wait, from_load, until_load
        # Waiting from the start, so a worker that starts on a backlog (a restart, a failover) fills its
        # batches from the first one, as before this choice existed. Only `calm_seconds` seconds in a row
        # under until_load stop it: the first second of a backlog is only partly busy (its batches started
        # mid-second), and one flip to greedy batches was seen there in the saturation benchmark.
        self.on = True
        self.calm_seconds = calm_seconds
        self._calm = 0  # decisions in a row under until_load while waiting

    @property
    def seconds(self) -> float:
        """How long take_batch waits once the queue runs dry, now."""
        return self.max_wait if self.on else 0.0

    def decide(self, load: float) -> None:
        """Called about once a second with the cores' load (s/s) since the last call."""
        if self.from_load <= 0 or load <= 0:  # always waiting, or no batch scored meanwhile: nothing to go by
            return
        if self.on:
            self._calm = self._calm + 1 if load < self.until_load else 0
            if self._calm >= self.calm_seconds:
                self.on, self._calm = False, 0
                log.info("cores busy %.2f s/s: batches go at once", load)
        elif load >= self.from_load:
            self.on = True
            log.info("cores busy %.2f s/s: batches wait up to %.0f ms to fill", load, self.max_wait * 1000)
