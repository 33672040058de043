"""How many of the worker's core processes score: one while it keeps up easily, all of them under load.

Every batch is split into one share per scoring core (by partition), and each share costs its own round
trips: to the core process and back, a changelog flush and its acknowledgement, an intents request. Below
saturation that per-share cost is most of the worker's CPU, and on the 2-core machine CPU is what the
click→intent latency queues for: at 5k events/s one core process measured p50 29 ms / p99 49 ms against
39 / 62 ms for two (docs/BENCHMARKS.md, issue 6), while at saturation two score 1.2-1.3x the events of one.

So the worker scores with one core process until the cores are busy for more than `spread_load` seconds
per second (a core's own time on its batches, wall clock: at 5k events/s one measured 0.64 s/s on that
machine), then with all of them, and goes back to one once they have been busy for less than
`gather_load` s/s for `gather_after_s`. A full batch (`backlog`) spreads at once: the clicks are already
waiting (a restart, a backfill, a burst), and a second on one core would only add to them. A change of
layout moves partitions between cores; the shell applies it between batches, once every batch in flight
is delivered, and each core then starts with an empty state cache (`epoch`), as after a rebalance: a
cached state of a partition that moved away and back would be stale.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class CoreLayout:
    def __init__(self, n_cores: int, spread_load: float = 0.85, gather_load: float = 0.6,
                 gather_after_s: float = 5.0):
        self.n_cores = n_cores
        self.spread_load, self.gather_load, self.gather_after_s = spread_load, gather_load, gather_after_s
        self.scoring = 1  # core processes that get batches now: the first `scoring` of them
        self.wanted = 1  # what the last decision asked for; `apply` makes it so
        self.epoch = 0  # changes with every change of layout
        self._busy_s = 0.0  # the cores' own time on batches answered since the last decision
        self._calm_s = 0.0  # how long the load has stayed below gather_load while spread

    def scored(self, busy_s: float) -> None:
        """A core answered a batch it spent `busy_s` seconds on."""
        self._busy_s += busy_s

    def decide(self, elapsed_s: float) -> float:
        """Called about once a second: the load since the last call (returned, in s/s) chooses the layout
        wanted."""
        load = self._busy_s / elapsed_s if elapsed_s > 0 else 0.0
        self._busy_s = 0.0
        if self.n_cores == 1:
            return load
        if self.wanted == 1:
            if load > self.spread_load:
                self.wanted, self._calm_s = self.n_cores, 0.0
                log.info("cores busy %.2f s/s: spreading the partitions over %d core processes", load, self.n_cores)
        else:
            self._calm_s = self._calm_s + elapsed_s if load < self.gather_load else 0.0
            if self._calm_s >= self.gather_after_s:
                self.wanted = 1
                log.info("cores busy under %.2f s/s for %.0f s: scoring with one core process", self.gather_load,
                         self._calm_s)
        return load

    def backlog(self) -> None:
        """A batch came full: more clicks wait than one core process scores in a batch. Spread now."""
        if self.n_cores > 1 and self.wanted == 1:
            self.wanted, self._calm_s = self.n_cores, 0.0
            log.info("a full batch: spreading the partitions over %d core processes", self.n_cores)

    @property
    def changing(self) -> bool:
        return self.wanted != self.scoring

    def apply(self) -> None:
        """Make the wanted layout the one in use; call once no batch is in a core or in delivery."""
        self.scoring = self.wanted
        self.epoch += 1

    def core_of(self, partition: int) -> int:
        return partition % self.scoring
