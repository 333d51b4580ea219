"""The built-in world's opt-in a/an family (runner.world.articles): its corpus, battery, vocabulary
(default presets untouched) and the paper's kill on its token stream."""

from collections import Counter

import numpy as np
import pytest

from interventions.kill import apply_flips, as_rvp, check_in_place, draw_flips, kill_report, plan_kill, targets_of
from runner.config import CorpusConfig
from runner.data.corpora import preset_words, synthetic_rows, world_tokenizer
from runner.data.matching import TokenStream, TokenTable
from runner.data.rvp_support import class_counts, family_sites
from runner.world import vocab as V
from runner.world.articles import VOWEL_ADJECTIVES, VOWEL_NOUNS
from runner.world.presets import PRESETS
from runner.world.rules import RULES

FAM = RULES.get("a_an")


@pytest.fixture(scope="module")
def an_corpus():
    words = preset_words("stories-an")
    rows = synthetic_rows(CorpusConfig(name="stories-an", n_stories=3000))
    return words, rows


def _bigrams(words, rows):
    out = Counter()
    for row in rows:
        toks = [words[i] for i in row if i]
        out.update(zip(toks, toks[1:]))
    return out


def test_default_presets_keep_their_vocabulary_and_draw_no_article():
    assert preset_words("stories") == preset_words("web") == V.all_words() == preset_words()
    assert world_tokenizer().get_vocab_size() == len(V.all_words())
    an = preset_words("stories-an")
    assert an[: len(V.all_words())] == V.all_words()  # base ids unchanged; new words appended
    assert {"a", "an"} <= set(an) - set(V.all_words())
    assert all("a_an" not in dict(PRESETS.get(p).p_family) for p in ("stories", "web", "synthetic"))
    rows = synthetic_rows(CorpusConfig(name="stories", n_stories=300))
    assert rows.max() < len(V.all_words())


def test_an_corpus_rule_support_near_the_paper_ratio_and_a_dominates(an_corpus):
    words, rows = an_corpus
    big = _bigrams(words, rows)
    vowel = set(VOWEL_NOUNS + VOWEL_ADJECTIVES)
    s = sum(n for (a, w), n in big.items() if a == "an" and w in vowel)
    c = sum(n for (a, w), n in big.items() if a == "a" and w in vowel)
    assert s > 300 and 15 < s / c < 40  # an_support 0.959: the paper's 23.4
    assert sum(n for (a, w), n in big.items() if a == "an" and w not in vowel) == 0  # never an before a consonant
    n_a = sum(n for (a, _), n in big.items() if a == "a")
    assert n_a > 3 * sum(n for (a, _), n in big.items() if a == "an")  # the prior a far more frequent
    # the support counter reads the family the same way
    stream = TokenStream.from_rows(rows, pad_id=0)
    counts = class_counts(family_sites(stream, as_rvp(FAM), TokenTable.of(world_tokenizer("stories-an")), "a_an"))
    assert (counts["vowel"]["rule"], counts["vowel"]["prior"]) == (s, c)


def test_battery_splits_and_conditions(an_corpus):
    words, rows = an_corpus
    items = FAM.battery(32, 0)
    assert Counter((it.condition, it.split) for it in items) == {
        ("conflict", "heldout"): 32, ("conflict", "train"): 32, ("agree", "heldout"): 32, ("agree", "train"): 32}
    for it in items:
        verb, art, word = it.prefix.split()[-1], it.correct.split()[0], it.correct.split()[1]
        assert FAM.is_heldout(verb, word) == (it.split == "heldout")
        assert (art, it.distractor.split()[0]) == (("an", "a") if it.condition == "conflict" else ("a", "an"))
        assert it.correct.split()[1:] == it.distractor.split()[1:]
    # no heldout (verb, deciding word) pair occurs in training text
    seen = set()
    for row in rows:
        toks = [words[i] for i in row if i]
        seen |= {(v, w) for v, a, w in zip(toks, toks[1:], toks[2:]) if a in ("a", "an")}
    assert seen and not any(FAM.is_heldout(v, w) for v, w in seen)
    assert world_tokenizer("stories-an").encode(items[0].prefix + items[0].correct).ids.count(0) == 0


def test_kill_flips_an_to_a_before_vowel_words_in_place(an_corpus):
    words, rows = an_corpus
    tok = world_tokenizer("stories-an")
    table = TokenTable.of(tok)
    stream = TokenStream.from_rows(rows, pad_id=0)
    assert targets_of(FAM, ()) == ("vowel",)
    plan = plan_kill(stream, FAM, table, ("vowel",))
    s, c = plan.before["vowel"]["rule"], plan.before["vowel"]["prior"]
    assert len(plan.positions) == s and plan.unflippable == 0
    for rate in (0.5, 1.0):
        flips = draw_flips(plan, rate, seed=0)
        out = apply_flips(stream.ids, plan, flips)
        check_in_place(stream.ids, out, plan.positions[flips], "test")
        changed = np.flatnonzero(out != stream.ids)
        assert {words[i] for i in stream.ids[changed]} == {"an"} and {words[i] for i in out[changed]} == {"a"}
        rep = kill_report(plan, flips, rate)["classes"]["vowel"]
        after = class_counts(family_sites(TokenStream(out, stream.starts), as_rvp(FAM), table, "a_an"))["vowel"]
        assert (after["rule"], after["prior"]) == (s - rep["flipped_events"], c + rep["flipped_events"])
    assert after["rule"] == 0  # p = 1 removes all support
    flips = draw_flips(plan, 0.5, seed=0)
    assert abs(flips.mean() - 0.5) < 0.1
