"""Support counts of the rule-versus-prior families (:mod:`runner.world.rvp`) on any token stream.

Input: a :class:`runner.data.matching.TokenStream` (a 1-D array of token ids + document starts)
and the corpus's ``tokenizers.Tokenizer``; how the corpus is stored does not matter. Every count
is per cue class (the paper states its law for the feminine class); pooled over classes only on
request. Three modes:

- **windowed** (cue before answer; the paper's f*-v2 count): for each cue (a cue word in any
  surface form that is one token; with ``multi_token_cues``, also forms of several tokens,
  matched as a sequence: the paper's count of injected rescue names), the first rule-or-prior
  answer (any surface form: ``" she"``, ``"she"``, ``" She"``, ``"She"``, single or several tokens)
  starting within ``k`` (16) tokens after the cue's last token, in the same document. Rule support
  if it is the class's rule answer, prior support if it is the other class's.
- **frame** (the paper's bigram count): the battery's frames, last prefix word + continuation
  (``" because she"`` vs ``" because he"``, ``" wanted an egg"`` vs ``" wanted a egg"``), as exact token
  sequences. Per class: rule = occurrences of the class's rule forms, prior = of its prior forms.
- **a_an** (answer before cue): *an* / *a* (either space form, either case) right before a word
  whose first letter is in a class's ``onsets`` (for byte-level BPE: the next token is a space
  and that letter, the paper's test). Class ``vowel``: *an* is rule support, *a* prior;
  ``consonant``: the reverse. Letters, not sounds: *an hour* counts as prior support of the
  consonant class.

Every match is a whole word (see :mod:`runner.data.matching`), and no window or sequence crosses
a document boundary. ``ratio = (rule + 1) / (prior + 1)``, and None when rule + prior = 0: a
count that found nothing says so instead of reporting 1.

**Sites** (:func:`family_sites`): the events themselves, as arrays of positions (cue, answer),
class and outcome, so an edit (kill: flip the rule answer to the prior's) or an injection check
can ask where the eligible sites of a stream are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Int

from runner.data.matching import FormSet, Scan, TokenStream, TokenTable, form_set, separator_ids, surface_forms
from runner.world.rules import RULES
from runner.world.rvp import RuleVsPrior

K = 16
POOLED = "pooled"


@dataclass
class Compiled:
    """A family's forms against one tokenizer (:func:`compile_family`)."""

    family: RuleVsPrior
    table: TokenTable
    classes: tuple[str, ...]
    rule_word: np.ndarray  # class index -> index of its rule answer in family.answers
    answer_forms: tuple[str, ...]  # surface forms of the answers; FormSet labels index them
    form_word: np.ndarray  # form index -> answer index
    answers: FormSet
    cues: FormSet  # label: class index
    frames: FormSet  # label: pattern index
    patterns: tuple[str, ...]
    frame_roles: dict[str, tuple[list[int], list[int]]]  # class -> (rule pattern idx, prior pattern idx)
    onset_cls: np.ndarray  # token id -> class index of a word starting with it, -1 none (a_an)
    cue_report: dict[str, dict[str, list[str]]]  # class -> {"counted": words, "not_counted": words}

    def sets(self) -> list[FormSet]:
        return [self.answers, self.cues, self.frames]


def _cue_set(family: RuleVsPrior, table: TokenTable, classes: tuple[str, ...], multi: bool):
    forms, report = [], {}
    for ci, cls in enumerate(classes):
        counted, skipped = [], []
        for w in family.counted_cues(cls):
            fs = [(f, ci) for f in surface_forms(w)
                  if (ids := table.encode(f)) is not None and (multi or len(ids) == 1)]
            (counted if fs else skipped).append(w)
            forms += fs
        report[cls] = {"counted": counted, "not_counted": skipped}
    return form_set(table, forms), report


def compile_family(family: RuleVsPrior, table: TokenTable, multi_token_cues: bool = False) -> Compiled:
    """Encode the family's cue, answer and frame forms with the tokenizer of ``table``."""
    classes = tuple(family.cue_classes)
    answers = family.answers
    rule_word = np.array([answers.index(family.rule_answer[c]) for c in classes])
    answer_forms = tuple(f for a in answers for f in surface_forms(a))
    form_word = np.array([answers.index(a) for a in answers for _ in surface_forms(a)])
    ans = form_set(table, [(f, i) for i, f in enumerate(answer_forms)])
    cues, report = (_cue_set(family, table, classes, multi_token_cues) if family.kind == "windowed"
                    else (FormSet((), ()), {}))
    patterns: list[str] = []
    roles: dict[str, tuple[list[int], list[int]]] = {}
    for cls in classes:
        r, p = [], []
        for rule_form, prior_form in family.frames.get(cls, ()):
            for form, acc in ((rule_form, r), (prior_form, p)):
                if form not in patterns:
                    patterns.append(form)
                acc.append(patterns.index(form))
        roles[cls] = (r, p)
    frames = form_set(table, [(" " + f, i) for i, f in enumerate(patterns)])
    onset = np.full(table.size, -1, dtype=np.int64)
    for ci, cls in enumerate(classes):
        if cls in family.onsets:
            onset[table.onset(family.onsets[cls])] = ci
    return Compiled(family, table, classes, rule_word, answer_forms, form_word, ans, cues, frames, tuple(patterns),
                    roles, onset, report)


@dataclass(frozen=True)
class Sites:
    """One family's events of one mode in a stream, one row per event (per cue for windowed).

    ``cue_start``/``cue_end``: the cue's first and last token (a/an: the onset word's first
    token; frame: the frame's first token); ``answer_start``/``answer_end``: the answer's tokens,
    -1 where a windowed cue found no answer; ``cls``: class index into ``classes``; ``answered``:
    an answer decided the event; ``rule``: it was the class's rule answer; ``form``: index into
    ``forms`` of the answer's surface form (windowed, a/an; frame: the pattern); ``doc``: the
    event's document."""

    mode: str
    classes: tuple[str, ...]
    forms: tuple[str, ...]
    cue_start: Int[np.ndarray, " e"]
    cue_end: Int[np.ndarray, " e"]
    answer_start: Int[np.ndarray, " e"]
    answer_end: Int[np.ndarray, " e"]
    cls: Int[np.ndarray, " e"]
    answered: Bool[np.ndarray, " e"]
    rule: Bool[np.ndarray, " e"]
    form: Int[np.ndarray, " e"]
    doc: Int[np.ndarray, " e"]

    def __len__(self) -> int:
        return int(len(self.cls))


def _windowed(sc: Scan, c: Compiled, k: int) -> Sites:
    cues, ans = sc.match(c.cues), sc.match(c.answers)
    n = len(cues)
    if len(ans):
        j = np.searchsorted(ans.start, cues.end, side="right")
        jj = np.minimum(j, len(ans) - 1)
        a0, a1, form = ans.start[jj], ans.end[jj], ans.label[jj]
        ok = (j < len(ans)) & (a0 - cues.end <= k) & (ans.doc[jj] == cues.doc)
    else:
        a0 = a1 = form = np.zeros(n, np.int64)
        ok = np.zeros(n, bool)
    rule = ok & (c.form_word[form] == c.rule_word[cues.label]) if n else ok
    none = np.int64(-1)
    return Sites("windowed", c.classes, c.answer_forms, cues.start, cues.end, np.where(ok, a0, none),
                 np.where(ok, a1, none), cues.label, ok, rule, np.where(ok, form, none), cues.doc)


def _a_an(sc: Scan, c: Compiled) -> Sites:
    stream, art = sc.stream, sc.match(c.answers)
    nxt = art.end + 1
    ok = nxt < stream.ends[art.doc]  # the next token is in the same document
    nxt, art_start, art_end, form, doc = nxt[ok], art.start[ok], art.end[ok], art.label[ok], art.doc[ok]
    cls = c.onset_cls[stream.ids[nxt]]
    ok = cls >= 0
    nxt, art_start, art_end, form, cls, doc = nxt[ok], art_start[ok], art_end[ok], form[ok], cls[ok], doc[ok]
    rule = c.form_word[form] == c.rule_word[cls]
    return Sites("a_an", c.classes, c.answer_forms, nxt, nxt, art_start, art_end, cls, np.ones(len(cls), bool),
                 rule, form, doc)


def _frame(sc: Scan, c: Compiled) -> Sites:
    m = sc.match(c.frames)
    idx, cls, rule = [], [], []  # one row per (match, class it counts for)
    for ci, name in enumerate(c.classes):
        for pats, is_rule in zip(c.frame_roles[name], (True, False)):
            i = np.flatnonzero(np.isin(m.label, pats))
            idx.append(i)
            cls.append(np.full(len(i), ci, dtype=np.int64))
            rule.append(np.full(len(i), is_rule))
    at, kl, won = np.concatenate(idx), np.concatenate(cls), np.concatenate(rule)
    s, e = m.start[at], m.end[at]
    return Sites("frame", c.classes, c.patterns, s, s, s, e, kl, np.ones(len(at), bool), won, m.label[at], m.doc[at])


def sites_of(sc: Scan, c: Compiled, mode: str, k: int = K) -> Sites:
    """The family's events of ``mode`` (``sc``: a :class:`Scan` over ``c.sets()`` at least)."""
    if mode not in c.family.support_modes:
        raise ValueError(f"{c.family.name}: mode {mode!r} does not apply; its modes: {c.family.support_modes}")
    if mode == "windowed":
        return _windowed(sc, c, k)
    if mode == "a_an":
        return _a_an(sc, c)
    return _frame(sc, c)


def rvp_family(name: str) -> RuleVsPrior:
    fam = RULES.get(name)
    if not isinstance(fam, RuleVsPrior):
        raise ValueError(f"{name} is not a rule-versus-prior family (runner.world.rvp)")
    return fam


def family_sites(stream: TokenStream, family: RuleVsPrior | str, tokenizer, mode: str, k: int = K,
                 multi_token_cues: bool = False) -> Sites:
    """Where a family's ``mode`` events are in ``stream`` (see :class:`Sites`): what a kill edit
    (flip the rule answer of a class's events to the prior's) or a rescue check needs."""
    fam = rvp_family(family) if isinstance(family, str) else family
    table = tokenizer if isinstance(tokenizer, TokenTable) else TokenTable.of(tokenizer)
    c = compile_family(fam, table, multi_token_cues)
    return sites_of(Scan(stream, table, c.sets()), c, mode, k)


# ---- counts -------------------------------------------------------------------------------------
def ratio_of(rule: int, prior: int) -> float | None:
    """(rule + 1) / (prior + 1); None when there is no event at all."""
    return (rule + 1) / (prior + 1) if rule + prior > 0 else None


def entry(rule: int, prior: int, cues: int) -> dict:
    return {"rule": int(rule), "prior": int(prior), "cues": int(cues), "ratio": ratio_of(rule, prior)}


def class_counts(s: Sites) -> dict[str, dict]:
    """``{class: {rule, prior, cues, ratio}}`` of one mode's sites (``cues``: cue occurrences for
    windowed, events otherwise)."""
    n = len(s.classes)
    rule = np.bincount(s.cls[s.answered & s.rule], minlength=n)
    prior = np.bincount(s.cls[s.answered & ~s.rule], minlength=n)
    cues = np.bincount(s.cls, minlength=n)
    return {cls: entry(rule[i], prior[i], cues[i]) for i, cls in enumerate(s.classes)}


def doc_class_counts(stream: TokenStream, s: Sites) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{class: (rule events per document, prior events per document)}``."""
    doc = s.doc
    out = {}
    for i, cls in enumerate(s.classes):
        m = s.answered & (s.cls == i)
        out[cls] = (np.bincount(doc[m & s.rule], minlength=stream.n_docs),
                    np.bincount(doc[m & ~s.rule], minlength=stream.n_docs))
    return out


def pooled_counts(per_class: dict[str, dict]) -> dict:
    """Sum of one mode's class counts (only when asked: the law is stated per class)."""
    rule = sum(v["rule"] for v in per_class.values())
    prior = sum(v["prior"] for v in per_class.values())
    return entry(rule, prior, sum(v["cues"] for v in per_class.values()))


def count_rvp(stream: TokenStream, tokenizer, families, k: int = K, multi_token_cues: bool = False,
              pool: bool = False) -> dict:
    """``{family: {class: {mode: {rule, prior, cues, ratio}}}}`` for every mode of each family
    (``families``: names or :class:`RuleVsPrior` objects), with ``"pooled"`` beside the classes
    when ``pool``. One pass over the stream for all families together."""
    table = tokenizer if isinstance(tokenizer, TokenTable) else TokenTable.of(tokenizer)
    fams = [rvp_family(f) if isinstance(f, str) else f for f in families]
    comp = [compile_family(f, table, multi_token_cues) for f in fams]
    sc = Scan(stream, table, [s for c in comp for s in c.sets()])
    out: dict = {}
    for c in comp:
        by_mode = {m: class_counts(sites_of(sc, c, m, k)) for m in c.family.support_modes}
        out[c.family.name] = {cls: {m: by_mode[m][cls] for m in by_mode} for cls in c.classes}
        if pool:
            out[c.family.name][POOLED] = {m: pooled_counts(v) for m, v in by_mode.items()}
    return out


def cue_report(families, tokenizer, multi_token_cues: bool = False) -> dict:
    """``{family: {class: {"counted": [...], "not_counted": [...]}}}``: which cue words the windowed
    count can see with this tokenizer (a word is counted if one of its surface forms is one
    token, or with ``multi_token_cues`` if it has no unknown token)."""
    table = tokenizer if isinstance(tokenizer, TokenTable) else TokenTable.of(tokenizer)
    out = {}
    for f in families:
        fam = rvp_family(f) if isinstance(f, str) else f
        if fam.kind == "windowed":
            out[fam.name] = compile_family(fam, table, multi_token_cues).cue_report
    return out


def empty_modes(counts: dict) -> list[tuple[str, str]]:
    """(family, mode) pairs of a :func:`count_rvp` result with no event in any class."""
    out = []
    for fam, classes in counts.items():
        modes = {m for cls, v in classes.items() if cls != POOLED for m in v}
        for m in sorted(modes):
            if all(v[m]["rule"] + v[m]["prior"] == 0 for cls, v in classes.items() if cls != POOLED and m in v):
                out.append((fam, m))
    return out


def count_rvp_rows(rows, tokenizer, families, pad_id: int | None = None, k: int = K, block: int = 20_000,
                   multi_token_cues: bool = False) -> dict:
    """:func:`count_rvp` over a token matrix (one document per row, ``pad_id`` dropped, rows further
    split at separator tokens), in blocks of ``block`` rows, summed; ratio None where 0/0."""
    table = tokenizer if isinstance(tokenizer, TokenTable) else TokenTable.of(tokenizer)
    seps = separator_ids(table.tokenizer)
    total: dict = {}
    for start in range(0, max(len(rows), 1), block):
        stream = TokenStream.from_rows(np.asarray(rows[start : start + block]), pad_id, seps)
        for f, classes in count_rvp(stream, table, families, k, multi_token_cues).items():
            for cls, modes in classes.items():
                for m, v in modes.items():
                    t = total.setdefault(f, {}).setdefault(cls, {}).setdefault(m, [0, 0, 0])
                    t[0], t[1], t[2] = t[0] + v["rule"], t[1] + v["prior"], t[2] + v["cues"]
    return {f: {cls: {m: entry(*v) for m, v in modes.items()} for cls, modes in classes.items()}
            for f, classes in total.items()}
