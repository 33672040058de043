from streams.gaps import find_gaps, progress_key


def test_gap_only_when_a_batch_starts_past_the_next_expected_offset() -> None:
    firsts = {("c", 0): 10, ("c", 1): 5, ("c", 2): 7, ("c", 3): 0}
    done = {("c", 0): 9, ("c", 1): 1, ("c", 2): 9, ("c", 3): None}
    # partition 0 continues, 1 skipped offsets 2..4, 2 re-delivers (no gap), 3 has no history yet
    assert find_gaps(firsts, done) == {("c", 1): (2, 5)}


def test_a_partition_never_processed_is_owed_everything_from_its_log_start() -> None:
    firsts = {("c", 0): 4, ("c", 1): 0, ("c", 2): 7}
    done = {("c", 0): None, ("c", 1): None, ("c", 2): None}
    # 0: records 0..3 were skipped before anything was processed; 1 starts at the beginning; 2's log
    # starts at 7 (retention), so nothing is owed
    assert find_gaps(firsts, done, {("c", 0): 0, ("c", 2): 7}) == {("c", 0): (0, 4)}
    assert find_gaps(firsts, done) == {}  # without log starts, no judgement


def test_progress_keys_are_distinct_per_topic_and_partition() -> None:
    assert progress_key("a", 1) != progress_key("a", 10) != progress_key("a1", 0)
