"""The real worker, with the records faust-streaming sometimes loses made to go missing on purpose.

faust-streaming 0.15.3 can drop records it fetched (streams/gaps.py, `unstall_fetching` in
streams/app.py): the client's fetch position moves past them, but they never reach the agent. Seen only
now and then, around rebalances. This launcher makes it happen every time: every record of DROP_TOPIC's
partition DROP_PARTITION at or after offset DROP_FROM is held back from the consumer the first time the
client returns it, and handed over normally after that (once the worker seeks back to it).

    DROP_TOPIC=clicks DROP_PARTITION=0 DROP_FROM=100 python -m tests.integration.apps.worker_dropping_fetched worker ...
"""
from __future__ import annotations

import logging
import os
import sys

from aiokafka.consumer.fetcher import Fetcher

from streams.cli import main

log = logging.getLogger("drop-fetched")
TOPIC, PARTITION, FIRST = os.environ["DROP_TOPIC"], int(os.environ["DROP_PARTITION"]), int(os.environ["DROP_FROM"])
dropped: set[int] = set()  # offsets held back once already
fetched_records = Fetcher.fetched_records


async def fetched_records_dropping_once(self, partitions, timeout=0, max_records=None):
    drained = await fetched_records(self, partitions, timeout=timeout, max_records=max_records)
    for tp, records in drained.items():
        if tp.topic == TOPIC and tp.partition == PARTITION:
            held = {r.offset for r in records if r.offset >= FIRST and r.offset not in dropped}
            if held:
                dropped.update(held)
                drained[tp] = [r for r in records if r.offset not in held]
                log.warning("dropped fetched offsets %d..%d of %s/%d", min(held), max(held), TOPIC, PARTITION)
    return {tp: records for tp, records in drained.items() if records}


Fetcher.fetched_records = fetched_records_dropping_once

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
