"""Offline scores: the full-sequence GRU pass over each session, with the serving featurization.

The reference the live worker is held to (DESIGN §5: step-by-step equals the full pass), and the
way to score a file of historical events without Kafka.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import torch

from models.features import FeatureSpec, stack_inputs, step_values
from models.gru import IntentGRU
from models.state import UserState
from schemas.events import ClickEvent


@torch.no_grad()
def offline_scores(events: Iterable[ClickEvent], model: IntentGRU, spec: FeatureSpec) -> dict[str, float]:
    """event_id -> P(purchase later in the session), for events given in per-user arrival order."""
    states: dict[str, UserState] = {}
    sessions: dict[str, list] = defaultdict(list)
    for ev in events:
        state = states.get(ev.user_id)
        if state is None:
            state = states[ev.user_id] = UserState.new(ev.user_id)
        step = state.apply(ev)
        sessions[step.session.session_id].append((ev.event_id, step_values(step, spec)))
    scores: dict[str, float] = {}
    model.eval()
    for steps in sessions.values():
        cat, num, roll = (torch.from_numpy(x)[None] for x in stack_inputs([v for _e, v in steps], spec))
        p = torch.sigmoid(model(cat, num, roll))[0].double().numpy()
        scores.update({event_id: float(pi) for (event_id, _s), pi in zip(steps, p)})
    return scores
