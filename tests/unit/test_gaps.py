from streams.gaps import acknowledge_through, find_gaps, progress_key


def test_gap_when_a_batch_starts_past_the_next_expected_offset() -> None:
    batch = {("c", 0): [10, 11], ("c", 1): [5], ("c", 2): [7, 8, 9, 10], ("c", 3): [0, 1]}
    done = {("c", 0): 9, ("c", 1): 1, ("c", 2): 9, ("c", 3): None}
    # 0 continues; 1 skipped offsets 2..4; 2 re-delivers 7..9 and continues; 3 has no history yet
    assert find_gaps(batch, done) == [(("c", 1), 2, 5)]


def test_holes_inside_a_batch_are_gaps_too_but_not_below_the_last_processed_offset() -> None:
    # Faust delivered 16..19, skipped 20..28, delivered 29..30; 3 and 5 were processed before (done = 12)
    batch = {("c", 0): [3, 5, 13, 16, 17, 18, 19, 29, 30, 30]}
    assert find_gaps(batch, {("c", 0): 12}) == [(("c", 0), 14, 16), (("c", 0), 20, 29)]


def test_a_partition_never_processed_is_owed_everything_from_its_log_start() -> None:
    batch = {("c", 0): [4, 5], ("c", 1): [0], ("c", 2): [7]}
    done = {("c", 0): None, ("c", 1): None, ("c", 2): None}
    # 0: records 0..3 were skipped before anything was processed; 1 starts at the beginning; 2's log
    # starts at 7 (retention), so nothing is owed
    assert find_gaps(batch, done, {("c", 0): 0, ("c", 2): 7}) == [(("c", 0), 0, 4)]
    assert find_gaps(batch, done) == []  # without log starts, counted from the batch's first offset


def test_progress_keys_are_distinct_per_topic_and_partition() -> None:
    assert progress_key("a", 1) != progress_key("a", 10) != progress_key("a1", 0)


class _FakeConsumer:
    """The three pieces of Faust's Consumer that acknowledge_through touches."""

    def __init__(self, committed):
        from collections import defaultdict

        self._committed_offset = committed
        self._acked_index = defaultdict(set)
        self.acked = []

    def ack(self, message):
        self._acked_index[message.tp].add(message.offset)
        self.acked.append((message.topic, message.partition, message.offset))


def test_everything_processed_through_the_batch_is_acked_except_the_batchs_own_events() -> None:
    from faust.types import TP

    consumer = _FakeConsumer({TP("c", 0): 10})
    consumer._acked_index[TP("c", 0)].add(11)  # already acked by Faust
    # partition 0 processed through 15; the batch's own events (14, 15; 3 of partition 1) were acked before
    checked: dict = {}
    # partition 1 has no committed offset yet: acked from the batch's first offset (1, read back by find_gaps)
    consumer._acked_index[TP("c", 0)].update({14, 15})
    consumer._acked_index[TP("c", 1)].add(3)
    n = acknowledge_through(consumer, {("c", 0): (14, 15), ("c", 1): (1, 3)}, checked)
    assert consumer.acked == [("c", 0, 10), ("c", 0, 12), ("c", 0, 13), ("c", 1, 1), ("c", 1, 2)] and n == 5
    # the next batch only looks past what was covered (14 and 15 were the previous batch's own events)
    consumer.acked.clear()
    consumer._acked_index[TP("c", 0)].add(18)
    n = acknowledge_through(consumer, {("c", 0): (16, 18)}, checked)
    assert consumer.acked == [("c", 0, 16), ("c", 0, 17)] and n == 2
    # Faust set the committed offset back (a seek after a rebalance): start over from it
    consumer._acked_index[TP("c", 0)].add(19)
    consumer.acked.clear()
    consumer._committed_offset[TP("c", 0)] = 5
    acknowledge_through(consumer, {("c", 0): (19, 19)}, checked)
    assert consumer.acked == [("c", 0, o) for o in (5, 6, 7, 8, 9)]


def test_progress_round_trip_and_the_older_single_offset_form() -> None:
    from streams.gaps import decode_progress, encode_progress

    assert decode_progress(encode_progress(41, 30)) == (41, 30)
    assert decode_progress(b"41") == (41, 41)  # written before delivery was tracked: nothing owed
    assert decode_progress(None) == (None, None)


def test_ack_events_keeps_fausts_books_exactly_as_event_ack_does() -> None:
    """Two identical consumers of a real Faust app: one acks each event with Event.ack, the other with
    ack_events; every piece of bookkeeping must come out the same (fails if Faust's internals move)."""
    import faust
    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    from streams.gaps import ack_events

    def setup():
        app = faust.App("ack-test", broker="kafka://127.0.0.1:1", store="memory://")
        consumer = app.consumer
        app.topics._acking_topics.update({"c", "d"})  # "e": a topic without acks (Faust acks but keeps no books)
        consumer._committed_offset[TP("c", 0)] = 5  # offsets below it are acked without joining the books
        events = []
        for topic, partition, offset in [("c", 0, 4), ("c", 0, 5), ("c", 0, 6), ("c", 1, 0), ("c", 1, 2),
                                         ("d", 0, 9), ("e", 0, 1), ("c", 0, 6)]:  # the last: a second copy of 6
            message = ConsumerMessage(topic, partition, offset, 0.0, 0, None, b"k", b"v", None, 1, 1,
                                      TP(topic, partition))
            message.incref(1)
            consumer._unacked_messages.add(message)
            events.append(faust.Event(app, b"k", b"v", None, message))
        events[2].message.incref(1)  # held by a second reader: one ack leaves it unacked
        events[3].message.acked = True  # marked acked beforehand (a revoked partition's record)
        return consumer, events

    def books(consumer, events):
        return ({tp: sorted(v) for tp, v in consumer._acked_index.items() if v},
                {tp: list(v) for tp, v in consumer._acked.items() if v}, consumer._n_acked,
                sorted((m.topic, m.partition, m.offset) for m in consumer._unacked_messages),
                [(ev.message.acked, ev.message.refcount) for ev in events])

    by_faust, by_us = setup(), setup()
    for ev in by_faust[1]:
        ev.ack()
    ack_events(*by_us)
    expected = books(*by_faust)
    assert books(*by_us) == expected
    # and the case is not trivial: some offsets joined the books, some did not, one is still held
    acked_index, _, n_acked, still_unacked, flags = expected
    assert acked_index == {TP("c", 0): [5, 6], TP("c", 1): [2], TP("d", 0): [9]} and n_acked == 4
    assert ("c", 0, 6) in still_unacked and flags[2] == (False, 1)
