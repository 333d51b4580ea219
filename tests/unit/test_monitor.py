"""The live monitor's trend rule, its replay, and its plumbing (events, hook, log) on a scripted model."""

import numpy as np
import torch

from runner.train.monitor import (
    Monitor,
    TrendConfig,
    frozen_probe_set,
    replay,
    trend_warning,
)
from runner.world.rules import RULES

K = TrendConfig(every=50, window=8, horizon=1000, confidence=0.9, min_step=100)


def test_falling_margin_warns_with_a_projected_crossing():
    steps = np.arange(0, 2001, 50)
    cm = np.where(steps < 1000, 2.0, 2.0 - (steps - 1000) / 400)  # falls 1 nat per 400 steps after 1000
    w = trend_warning(steps[:27], cm[:27], K)  # at step 1300: CM 1.25 by the last-3 median
    assert w is not None and w["slope"] < 0 and w["slope_ci"][1] < 0
    assert abs(w["projected_crossing"] - 1800) <= 60
    assert trend_warning(steps[:22], cm[:22], K) is None  # at step 1050 the window is mostly flat


def test_noise_rising_and_negative_margins_do_not_warn():
    rng = np.random.default_rng(0)
    steps = np.arange(0, 3001, 50)
    assert trend_warning(steps, 1.5 + 0.2 * rng.standard_normal(len(steps)), K) is None
    assert trend_warning(steps, np.linspace(0.1, 3, len(steps)), K) is None
    assert trend_warning(steps, np.linspace(-0.5, -2, len(steps)), K) is None  # already crossed
    slow = 3.0 - steps / 10_000  # falling, but the crossing is 27,000 steps away
    assert trend_warning(steps, slow, K) is None


def test_replay_warns_once_per_episode():
    steps = np.arange(0, 4001, 50)
    cm = np.where(steps < 1000, 2.0, 2.0 - (steps - 1000) / 400)
    ws = replay(steps, cm, K)
    assert len(ws) == 1 and ws[0]["step"] < 1800  # before the crossing at 1800


class _Scripted(torch.nn.Module):
    """Logits that favour the rule answer by a margin that shrinks by 0.5 nats per call."""

    def __init__(self, answers: dict[int, int]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.answers, self.margin = answers, 3.0

    def forward(self, toks):
        logits = torch.zeros(*toks.shape, 400)
        self.margin -= 0.5
        for rule, comp in self.answers.items():
            logits[..., rule] += self.margin / 2
            logits[..., comp] -= self.margin / 2
        return logits


class _Store:
    def __init__(self):
        self.events, self.attrs = [], {}

    def set_attr(self, key, value):
        self.attrs[key] = value

    def add_event(self, e):
        self.events.append(e)


def test_monitor_logs_stores_and_calls_the_hook():
    from runner.data.corpora import world_tokenizer
    from runner.world import vocab as V

    tok = world_tokenizer()
    fam = RULES.get("pronoun_gender")
    items = frozen_probe_set(fam.battery(16, 4), ["pronoun_gender"], n=8)
    she, he = tok.token_to_id("she"), tok.token_to_id("he")
    # the scripted model favours "she" over "he" by a shrinking margin: CM (feminine items gain,
    # masculine items lose) drifts steadily, which the monitor must flag exactly once
    model = _Scripted({she: he})
    got, lines, store = [], [], _Store()
    mon = Monitor(items, tok, tok.token_to_id(V.BOS), 64, pad_id=tok.token_to_id(V.PAD),
                  trend=TrendConfig(every=10, window=4, horizon=100, min_step=0), on_warning=got.append,
                  store=store, log=lines.append)
    for step in range(0, 101):
        mon.observe(step, model)
    cms = mon.history["pronoun_gender"]["cm"]
    assert mon.history["pronoun_gender"]["step"] == list(range(0, 101, 10))
    assert len(got) == 1 and store.events == got and got[0]["family"] == "pronoun_gender"
    assert any("WARNING pronoun_gender" in line for line in lines)
    assert cms[0] != cms[-1]
