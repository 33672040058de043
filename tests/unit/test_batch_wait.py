"""streams.batch_wait: batches wait to fill only while the cores are busy, with a band against flapping."""
import pytest

from streams.batch_wait import BatchWait


def test_batches_wait_while_the_cores_are_busy_and_go_at_once_after_two_calm_seconds():
    wait = BatchWait(0.005, from_load=0.5, until_load=0.3)
    assert wait.seconds == 0.005  # a worker may start on a backlog: full batches from the first one
    seen = []
    for load in (0.0, 0.1, 0.4, 0.1, 0.2, 0.49, 0.5, 0.45, 0.31, 0.3, 0.29, 0.0, 0.29, 0.4, 0.49, 0.8, 0.0):
        wait.decide(load)
        seen.append(wait.seconds)
    # 0.0: nothing scored (idle, or still starting up), nothing to go by: the choice stays, and so does
    # the count of calm seconds; one second at 0.4 starts that count over
    assert seen == [0.005, 0.005, 0.005, 0.005, 0.0, 0.0, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005, 0.0,
                    0.0, 0.0, 0.005, 0.005]


def test_from_load_zero_always_waits():
    wait = BatchWait(0.02, from_load=0.0, until_load=0.3)  # the default until_load: from_load 0 alone says it
    assert wait.seconds == 0.02
    for load in (0.0, 3.0, 0.0):
        wait.decide(load)
        assert wait.seconds == 0.02


def test_a_band_upside_down_is_refused():
    with pytest.raises(ValueError, match="until_load"):
        BatchWait(0.005, from_load=0.3, until_load=0.5)
