"""Faust's own ceiling: an agent that only counts its batches, on a pre-filled topic; batches taken with
Faust's take_events ("take_events"); straight from the agent's channel queue (streams.app.take_batch) with
Faust's per-message wait_first lightened (streams/fast_drain.py `install`) and each event acked on its own
("queue", the worker until the tenth round); as the worker until the twelfth round: also each record put
straight on the agent's queue (`hand_over_directly`, a RawBytes topic) and a batch acked in one pass
(`ack_events`) ("direct"); or as the worker now: also each fetch walked in a plain loop (`drain_in_bulk`,
"bulk").

The worker cannot be faster than this on the same machine; compare with bench_pipeline.py's (a) and (b).

    .venv/bin/python bench/bench_faust_ceiling.py                # starts its own broker
    .venv/bin/python bench/bench_faust_ceiling.py --events 40000 --max-wait 0.05
"""
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pipeline import PARTITIONS, fill, make_events  # noqa: E402
from deploy.kafka import local_broker  # noqa: E402
from streams.topics import ensure_topics  # noqa: E402

MODES = ("take_events", "queue", "direct", "bulk")

APP = '''
import os, time, faust
n_target = int(os.environ["CEIL_EVENTS"])
app = faust.App("ceiling-%d" % time.time_ns(), broker="kafka://" + os.environ["CEIL_BOOTSTRAP"], web_enabled=False,
                consumer_auto_offset_reset="earliest", broker_max_poll_records=2000, stream_buffer_maxsize=4096)
mode = os.environ["CEIL_MODE"]
if mode in ("direct", "bulk"):
    from streams import fast_drain
    topic = app.topic("clicks", schema=fast_drain.RawBytes(), partitions=int(os.environ["CEIL_PARTITIONS"]))
    fast_drain.install(app.consumer)
    fast_drain.hand_over_directly(app)
    if mode == "bulk":
        fast_drain.drain_in_bulk(app)
else:
    topic = app.topic("clicks", key_serializer="raw", value_serializer="raw", partitions=int(os.environ["CEIL_PARTITIONS"]))
seen = {"n": 0, "t0": None}

if mode == "queue":
    @app.task
    async def lighten_consumer():
        from streams import fast_drain
        fast_drain.install(app.consumer)

async def from_queue(stream, max_n, wait):
    from streams.app import take_batch
    from streams.gaps import ack_events
    while True:
        events = await take_batch(stream.channel.queue, max_n, wait)
        yield events
        if mode in ("direct", "bulk"):
            ack_events(app.consumer, events)
        else:
            for ev in events:
                ev.ack()

@app.agent(topic)
async def count(stream):
    wait = float(os.environ["CEIL_WAIT"])
    batches = stream.take_events(512, within=wait) if mode == "take_events" else from_queue(stream, 512, wait)
    async for events in batches:
        seen["t0"] = seen["t0"] or time.perf_counter()
        seen["n"] += len(events)
        if seen["n"] >= n_target:
            print("RATE %.0f" % (seen["n"] / (time.perf_counter() - seen["t0"])), flush=True)
            os._exit(0)

app.main()
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--max-wait", type=float, default=0.05)
    ap.add_argument("--repeat", type=int, default=2, help="runs of each variant")
    ap.add_argument("--modes", default=",".join(MODES), help=f"which of {', '.join(MODES)}")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
    cfg = local_broker.BrokerConfig(data_dir=work / "kafka", port=local_broker.free_port_pair())
    local_broker.start(cfg)
    try:
        ensure_topics(cfg.bootstrap, {"clicks": PARTITIONS})
        asyncio.run(fill(cfg.bootstrap, "clicks", make_events(args.events, seed=1)))
        (work / "ceiling_app.py").write_text(APP)
        rates = {}
        modes = args.modes.split(",")
        for mode in modes * args.repeat:  # alternated, so drift on a noisy box hits all alike
            env = {**os.environ, "CEIL_EVENTS": str(args.events), "CEIL_BOOTSTRAP": cfg.bootstrap,
                   "CEIL_PARTITIONS": str(PARTITIONS), "CEIL_WAIT": str(args.max_wait), "CEIL_MODE": mode,
                   "PYTHONPATH": str(REPO)}
            done = subprocess.run([sys.executable, str(work / "ceiling_app.py"), "worker", "-l", "warn"],
                                  env=env, capture_output=True, text=True, timeout=600)
            out = done.stdout + done.stderr  # Faust's worker routes print() through its logging
            rate = next((float(line.split()[-1]) for line in out.splitlines() if "RATE" in line), None)
            if rate is None:
                print(out[-3000:])
            rates.setdefault(mode, []).append(rate or float("nan"))
    finally:
        local_broker.stop(cfg)
    print("| case | events/s (each run) |\n|---|---|")
    window = f"{args.max_wait * 1000:.0f} ms"
    for mode, label in (("take_events", f"stream.take_events(512, within={window})"),
                        ("queue", f"take_batch(queue, 512, max_wait={window}) + fast_drain.install, Event.ack"),
                        ("direct", "the same + hand_over_directly + ack_events"),
                        ("bulk", "the same + drain_in_bulk, as the worker")):
        if mode not in rates:
            continue
        runs = ", ".join(f"{r:,.0f}" for r in rates[mode])
        print(f"| empty Faust agent, {label} | {runs} |")


if __name__ == "__main__":
    main()
