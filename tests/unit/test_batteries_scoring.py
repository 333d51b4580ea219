import json

import numpy as np
import pytest
import torch

from runner.data.corpora import world_tokenizer
from runner.scoring import aggregate, continuation_logprobs, encode_battery
from runner.world import vocab as V
from runner.world.batteries import BatteryError, read_battery, select, write_battery
from runner.world.rules import RULES


@pytest.mark.parametrize("family", ["pronoun_gender", "number_agreement"])
def test_battery_splits_disjoint(family):
    fam = RULES.get(family)
    items = fam.battery(n_per_cell=40, n_neutral=8)
    off = fam.offsets

    def pair(it):
        ws = it.prefix.split()
        tpl = len(fam.template[: off["answer"]])
        tgt = ws[-tpl:]
        return tgt[off["cue"]], tgt[off["key"]]

    heldout = {pair(it) for it in items if it.split == "heldout" and it.condition != "neutral"}
    train = {pair(it) for it in items if it.split == "train"}
    assert heldout and train and not heldout & train
    assert all(fam.is_heldout(*p) for p in heldout)
    assert not any(fam.is_heldout(*p) for p in train)
    for it in select(items, condition="conflict"):
        assert it.correct != it.distractor
    assert {it.condition for it in items} == {"conflict", "agree", "neutral"}


def test_battery_roundtrip(tmp_path):
    items = RULES.get("pronoun_gender").battery(n_per_cell=4, n_neutral=2)
    p = write_battery(items, tmp_path / "b.jsonl")
    assert read_battery(p) == items
    assert not list(tmp_path.glob(".*tmp"))


def test_reference_battery_loads(reference_battery):
    items = read_battery(reference_battery)
    assert len(items) == 3156
    assert {"conflict", "agree"} <= {it.condition for it in items}
    assert all(it.split in ("train", "heldout") for it in items)


@pytest.mark.parametrize("line,field", [
    ('{"family": "x"}', "condition"),
    ("not json", "not valid JSON"),
    ('{"family":"f","condition":"conflict","probe":"p","split":"test","template_id":"t","prefix":"a",'
     '"correct":" b","distractor":" c","item_id":"i"}', "split"),
])
def test_malformed_battery_line_names_line_and_field(tmp_path, line, field):
    good = json.dumps(RULES.get("pronoun_gender").battery(n_per_cell=1, n_neutral=0)[0].model_dump())
    p = tmp_path / "bad.jsonl"
    p.write_text(good + "\n" + line + "\n")
    with pytest.raises(BatteryError, match=f"bad.jsonl:2: .*{field}"):
        read_battery(p)


class _FixedLM(torch.nn.Module):
    """Logits depend only on the current token: row ``table[token]``."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, tokens):
        return self.table[tokens]


def test_scoring_matches_hand_computed_logprob():
    tok = world_tokenizer()
    vsz = tok.get_vocab_size()
    g = torch.Generator().manual_seed(0)
    table = torch.randn(vsz, vsz, generator=g)
    items = RULES.get("pronoun_gender").battery(n_per_cell=2, n_neutral=1)
    enc = encode_battery(items, tok, tok.token_to_id(V.BOS), n_ctx=64)
    lpc, lpd = continuation_logprobs(_FixedLM(table), enc)
    lsm = torch.log_softmax(table, -1)
    for i, it in enumerate(items):
        last = tok.token_to_id(it.prefix.split()[-1])
        assert lpc[i] == pytest.approx(float(lsm[last, tok.token_to_id(it.correct.strip())]), abs=1e-5)
        assert lpd[i] == pytest.approx(float(lsm[last, tok.token_to_id(it.distractor.strip())]), abs=1e-5)


def test_multi_token_continuation_sums_tokens():
    from runner.world.batteries import ProbeItem

    tok = world_tokenizer()
    table = torch.randn(tok.get_vocab_size(), tok.get_vocab_size(), generator=torch.Generator().manual_seed(1))
    it = ProbeItem(family="f", condition="conflict", probe="f.conflict", split="heldout", template_id="t",
                   prefix="Sue cried", correct=" because she", distractor=" because he", item_id="x")
    enc = encode_battery([it], tok, tok.token_to_id(V.BOS), n_ctx=64)
    lpc, _ = continuation_logprobs(_FixedLM(table), enc)
    lsm = torch.log_softmax(table, -1)
    t = tok.token_to_id
    assert lpc[0] == pytest.approx(float(lsm[t("cried"), t("because")] + lsm[t("because"), t("she")]), abs=1e-5)


def test_aggregate_cm_pm():
    items = RULES.get("pronoun_gender").battery(n_per_cell=2, n_neutral=2)
    lpc = np.array([-1.0] * len(items))
    lpd = np.array([-3.0 if it.condition == "conflict" else -0.5 for it in items])
    a = aggregate(items, lpc, lpd)
    assert a["pronoun_gender/cm"] == pytest.approx(2.0)
    assert a["pronoun_gender/pm"] == pytest.approx(-0.5)
    assert a["pronoun_gender/acc_conflict_heldout"] == 1.0
    assert a["pronoun_gender/acc_agree_train"] == 0.0
