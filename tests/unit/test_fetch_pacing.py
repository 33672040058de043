"""streams.fetch_pacing: when fetches are paced, and what the live fetcher is set to."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams.fetch_pacing import FetchPacing


def test_paced_from_the_rate_where_fetches_get_no_more_frequent_and_off_below_half_of_it() -> None:
    pacing = FetchPacing(min_bytes=4096, max_wait_ms=5)  # paced from 200 clicks/s
    assert pacing.on_rate == 200
    seen = []
    for clicks, seconds in [(0, 1.0), (199, 1.0), (200, 1.0), (150, 1.0), (101, 1.0), (99, 1.0), (400, 2.0)]:
        pacing.taken(clicks, full=False)
        seen.append(pacing.decide(seconds))
    # on at 200/s; stays on at 150 and 101 (above half); off at 99; on again at 400 clicks in 2 s
    assert seen == [False, False, True, True, True, False, True]


def test_each_decision_counts_only_the_clicks_taken_since_the_last() -> None:
    pacing = FetchPacing(max_wait_ms=10)  # 100 clicks/s
    pacing.taken(60, full=False)
    pacing.taken(60, full=False)
    assert pacing.decide(1.0) is True
    assert pacing.decide(1.0) is False  # nothing taken since
    assert pacing.decide(0.0) is False  # no time passed: no rate, no division by zero


def test_not_paced_while_the_worker_is_behind_and_most_batches_are_full() -> None:
    pacing = FetchPacing(max_wait_ms=5)
    for _ in range(3):
        pacing.taken(2048, full=True)
    pacing.taken(100, full=False)
    assert pacing.decide(1.0) is False  # 6,244 clicks/s, but 3 of 4 batches full
    pacing.taken(2048, full=True)
    pacing.taken(300, full=False)
    assert pacing.decide(1.0) is True  # half full: keeping up
    for _ in range(2):
        pacing.taken(2048, full=True)
    pacing.taken(30, full=False)
    assert pacing.decide(1.0) is False  # fell behind: off again


def test_apply_sets_the_live_fetcher_and_restores_what_the_consumer_was_created_with() -> None:
    fetcher = SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500)
    consumer = SimpleNamespace(_fetcher=fetcher, _fetch_min_bytes=1, _fetch_max_wait_ms=1500)
    pacing = FetchPacing(min_bytes=65_536, max_wait_ms=5)
    pacing.taken(1000, full=False)
    pacing.decide(1.0)
    pacing.apply(consumer)
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (65_536, 5)
    pacing.decide(1.0)
    pacing.apply(consumer)
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, 1500)
    pacing.apply(SimpleNamespace(_fetch_min_bytes=1, _fetch_max_wait_ms=1500))  # not started: no fetcher yet


def test_a_wait_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="max_wait_ms"):
        FetchPacing(max_wait_ms=0)
