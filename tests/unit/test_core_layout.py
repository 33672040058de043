"""streams.core_layout: one core process scores until the cores are busy, then all; back to one when calm."""
from streams.core_layout import CoreLayout


def test_one_core_scores_until_the_load_passes_the_spread_mark():
    layout = CoreLayout(2, spread_load=0.6, gather_load=0.35)
    assert (layout.scoring, layout.core_of(0), layout.core_of(1), layout.core_of(5)) == (1, 0, 0, 0)
    layout.scored(0.3)
    layout.scored(0.2)
    layout.decide(1.0)  # 0.5 s/s: one keeps up
    assert not layout.changing
    layout.scored(0.7)
    layout.decide(1.0)
    assert layout.changing and layout.scoring == 1  # wanted, not applied: batches may be in flight
    layout.apply()
    assert (layout.scoring, layout.epoch) == (2, 1) and [layout.core_of(p) for p in range(4)] == [0, 1, 0, 1]


def test_back_to_one_only_after_the_load_stayed_low_for_a_while():
    layout = CoreLayout(3, spread_load=0.6, gather_load=0.35, gather_after_s=5.0)
    layout.scored(2.0)
    layout.decide(1.0)
    layout.apply()
    assert layout.scoring == 3
    for second in range(4):  # calm for 4 s, then one busy second: the count starts over
        layout.scored(0.1)
        layout.decide(1.0)
    layout.scored(0.5)  # between the marks: not calm
    layout.decide(1.0)
    for second in range(4):
        layout.scored(0.1)
        layout.decide(1.0)
        assert not layout.changing, second
    layout.decide(1.0)  # the fifth calm second
    assert layout.changing
    layout.apply()
    assert (layout.scoring, layout.epoch) == (1, 2)


def test_the_load_is_per_second_of_elapsed_time():
    layout = CoreLayout(2, spread_load=0.6)
    layout.scored(1.0)
    assert layout.decide(2.0) == 0.5  # over 2 s
    assert not layout.changing
    layout.scored(1.0)
    assert abs(layout.decide(1.5) - 2 / 3) < 1e-9
    assert layout.changing
    assert layout.decide(1.0) == 0.0  # the count restarts with each decision


def test_a_single_core_never_changes():
    layout = CoreLayout(1, spread_load=0.0)
    layout.scored(5.0)
    assert layout.decide(1.0) == 5.0  # still measured: BatchWait uses it
    assert not layout.changing and layout.core_of(7) == 0


def test_a_full_batch_spreads_at_once_and_the_load_still_gathers_later():
    layout = CoreLayout(2, spread_load=0.85, gather_load=0.6, gather_after_s=2.0)
    layout.backlog()
    assert layout.changing  # no decision needed
    layout.apply()
    assert (layout.scoring, layout.epoch) == (2, 1)
    layout.backlog()  # already spread: nothing changes
    assert not layout.changing and layout.epoch == 1
    for _second in range(2):  # the backlog is gone: calm seconds gather again
        layout.scored(0.1)
        layout.decide(1.0)
    assert layout.changing
    layout.apply()
    assert layout.scoring == 1
    single = CoreLayout(1)
    single.backlog()  # a single core has nothing to spread over
    assert not single.changing and single.wanted == 1


def test_a_backlog_while_gathering_cancels_the_gathering():
    layout = CoreLayout(2, gather_after_s=2.0)
    layout.backlog()
    layout.apply()
    layout.scored(0.1)
    layout.decide(1.0)
    layout.decide(1.0)  # calm long enough: one core is wanted, not yet applied
    assert layout.changing and layout.wanted == 1
    layout.backlog()
    assert not layout.changing and layout.wanted == 2
