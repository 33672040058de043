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
    # partition 0 processed through 15; the batch's own events 14, 15 are acked by the agent itself
    checked: dict = {}
    # partition 1 has no committed offset yet: acked from the batch's first offset (1, read back by find_gaps)
    n = acknowledge_through(consumer, {("c", 0): (14, 15), ("c", 1): (1, 3)},
                            {("c", 0, 14), ("c", 0, 15), ("c", 1, 3)}, checked)
    assert consumer.acked == [("c", 0, 10), ("c", 0, 12), ("c", 0, 13), ("c", 1, 1), ("c", 1, 2)] and n == 5
    # the next batch only looks past what was covered (14 and 15 were the previous batch's own events)
    consumer.acked.clear()
    n = acknowledge_through(consumer, {("c", 0): (16, 18)}, {("c", 0, 18)}, checked)
    assert consumer.acked == [("c", 0, 16), ("c", 0, 17)] and n == 2
    # Faust set the committed offset back (a seek after a rebalance): start over from it
    consumer._acked_index[TP("c", 0)].update({14, 15, 18})  # the batches' own events, acked by the agent
    consumer.acked.clear()
    consumer._committed_offset[TP("c", 0)] = 5
    acknowledge_through(consumer, {("c", 0): (19, 19)}, {("c", 0, 19)}, checked)
    assert consumer.acked == [("c", 0, o) for o in (5, 6, 7, 8, 9)]


def test_progress_round_trip_and_the_older_single_offset_form() -> None:
    from streams.gaps import decode_progress, encode_progress

    assert decode_progress(encode_progress(41, 30)) == (41, 30)
    assert decode_progress(b"41") == (41, 41)  # written before delivery was tracked: nothing owed
    assert decode_progress(None) == (None, None)
