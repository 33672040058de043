"""`intentstream tail`'s one-line view of an intent (the demo's live display)."""
from schemas.events import EVENT_TYPES
from streams.commands import COUNT_LABELS, format_intent


def _intent(**over) -> dict:
    intent = {"user_id": "u42", "session_events": 7, "p_purchase": 0.64, "intent": "medium", "cart_value": 53.98,
              "latency_ms": 2.5, "recent_counts": {"product_view": 3, "add_to_cart": 1, "add_to_wishlist": 2}}
    return intent | over


def test_every_event_type_has_its_own_label():
    labels = [COUNT_LABELS[t] for t in EVENT_TYPES]  # a KeyError: a type without a label
    assert len(set(labels)) == len(labels)


def test_line_shows_the_counts_under_distinct_labels():
    line = format_intent(_intent(), color=False)
    assert "[prod:3 cart+:1 wish:2]" in line
    assert "user u42" in line and "#7" in line and "p=0.640 ██████····" in line and "cart    53.98" in line


def test_an_unknown_type_keeps_its_name_and_color_wraps_the_line():
    line = format_intent(_intent(recent_counts={"share": 1}, intent="high"), color=True)
    assert "[share:1]" in line
    assert line.startswith("\033[1;32m") and line.endswith("\033[0m")
