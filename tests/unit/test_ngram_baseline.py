"""The n-gram baseline (runner.analysis.ngram): stupid backoff on a hand-computable toy stream."""

import numpy as np
import pytest

from runner.analysis.ngram import StupidBackoff, score_battery
from runner.data.corpora import world_tokenizer
from runner.world.batteries import ProbeItem

PAD = 0
# two rows (no n-gram crosses a row, padding never counted): tokens 1..4
ROWS = np.array([[1, 2, 3, 1, 2, 4, PAD, PAD],
                 [1, 2, 3, 3, 1, 2, 3, PAD]])


def _fit(order, queries):
    return StupidBackoff(order, vocab=5).fit(ROWS, PAD, queries)


def test_counts_and_scores_by_hand():
    q = [([1, 2], 3), ([1, 2], 4), ([4], 1), ([2], 2), ([9, 9], 3)]
    bi = _fit(2, q)
    # N = 13 tokens; bigrams "2 3" x3, "2 4" x1, "2" x4; "4 1" never (4 is last in its row)
    assert bi.n_tokens == 13
    assert bi.score([1, 2], 3) == pytest.approx(3 / 4)
    assert bi.score([1, 2], 4) == pytest.approx(1 / 4)
    assert bi.score([4], 1) == pytest.approx(0.4 * 4 / 13)  # backoff to the unigram "1": 4 of 13
    assert bi.score([2], 2) == pytest.approx(0.4 * 4 / 13)
    tri = _fit(3, q)
    assert tri.score([1, 2], 3) == pytest.approx(3 / 4)  # "1 2 3" x3 of "1 2" x4
    assert tri.score([9, 9], 3) == pytest.approx(0.4 * 0.4 * 4 / 13)  # unseen contexts: two backoffs
    assert tri.logscore([1], [2, 3]) == pytest.approx(np.log(4 / 4) + np.log(3 / 4))


def test_unseen_token_has_a_finite_floor():
    lm = _fit(2, [([1], 0)])
    assert 0 < lm.score([1], 0) < 1e-2


def test_battery_scored_like_the_model():
    tok = world_tokenizer()
    text = "<bos> Mary cried because she was sad . Tom cried because he was sad ."
    row = np.array(tok.encode(text).ids)
    rows = np.tile(row, (10, 1))
    items = [ProbeItem(family="pronoun_gender", condition=c, probe=f"pronoun_gender.{c}", split="heldout",
                       template_id="t", prefix=p, correct=" she", distractor=" he", chance=0.5, item_id=f"{c}/0")
             for c, p in (("agree", "Lucy cried because"), ("conflict", "Tom laughed because"))]
    res = score_battery(rows, tok.token_to_id("<pad>"), items, tok, tok.token_to_id("<bos>"), 64, orders=(2,))
    f = res["order2"]
    # after "because" she and he are seen equally often: a tie is not correct
    assert f["pronoun_gender/acc_agree_heldout"] == 0.0 and f["pronoun_gender/cm"] == pytest.approx(0.0)
    assert f["control_valid"] == {"pronoun_gender": False}
