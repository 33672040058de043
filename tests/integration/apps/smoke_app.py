"""Smallest real Faust app: one agent, one RocksDB (rocksdict) table with a changelog.

Run as a worker process by tests/integration/test_faust_smoke.py; configured by environment so the
test can point it at its own broker, topics and state dir:
SMOKE_ID, SMOKE_BOOTSTRAP, SMOKE_DATADIR.
"""
import os

import faust

smoke_id = os.environ["SMOKE_ID"]
app = faust.App(
    f"smoke-{smoke_id}",
    broker=f"kafka://{os.environ['SMOKE_BOOTSTRAP']}",
    store="rocksdb://",
    datadir=os.environ["SMOKE_DATADIR"],
    web_enabled=False,
    topic_partitions=2,
    topic_replication_factor=1,
)

inputs = app.topic(f"smoke-in-{smoke_id}", key_serializer="raw", value_serializer="raw", partitions=2)
outputs = app.topic(f"smoke-out-{smoke_id}", key_serializer="raw", value_serializer="raw", partitions=1)
counts = app.Table("counts", default=int, partitions=2, options={"driver": "rocksdict"})


@app.agent(inputs)
async def count(stream):
    async for key, _value in stream.items():
        user = key.decode()
        counts[user] += 1
        await outputs.send(key=key, value=f"{user}={counts[user]}".encode())


if __name__ == "__main__":
    app.main()
