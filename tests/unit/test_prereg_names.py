"""The prereg lock refuses names no verdict knows (issue 20): a falsifier with ``quantity =
"fianl"`` used to lock cleanly and score FAIL [None] forever, so it could never fire."""

import shutil
from pathlib import Path

import pytest

from cluster.cli import main as cli_main
from runner.analysis.prereg import PreregError, amend, lock, lock_path

REPO = Path(__file__).resolve().parents[2]

BASE = """
title = "t"
[[predictions]]
id = "P1"
family = "pronoun_gender"
select = { corpus = "web", budget = "packed" }
quantity = "final"
op = "<="
value = 0.6
seeds = "all"
[[falsifiers]]
id = "F1"
family = "pronoun_gender"
select = { corpus = "web", dose = "kill:0.5" }
quantity = "label"
op = "=="
value = "RECOVERED"
"""


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "prereg.toml"
    p.write_text(text)
    return p


def test_a_clean_prereg_and_the_examples_lock(tmp_path):
    lock(_write(tmp_path, BASE))
    for src in ("examples/prereg.toml", "examples/prereg_interventions.toml", "examples/prereg_tour.toml",
                "examples/paper/prereg.toml"):
        dst = tmp_path / ("x_" + src.replace("/", "_"))
        shutil.copy(REPO / src, dst)
        lock(dst)


@pytest.mark.parametrize("old,new,needle", [
    ('quantity = "label"', 'quantity = "fianl"', "falsifiers[0] (F1): quantity 'fianl' is unknown"),
    ('quantity = "final"', 'quantity = "cm_finale"', "did you mean 'cm_final'?"),
    ('corpus = "web", budget', 'corpsu = "web", budget', "predictions[0] (P1): select key 'corpsu' is unknown"),
    ('dose = "kill:0.5"', 'dose = "kil:0.5"', "unknown intervention 'kil'"),
    ('budget = "packed"', 'budget = "pakced"', "select.budget 'pakced' is not valid"),
    ('value = "RECOVERED"', 'value = "recovered"', "label value 'recovered' is unknown"),
    ('family = "pronoun_gender"\nselect = { corpus = "web", budget', 'family = "pronoun_gendr"\nselect = '
     '{ corpus = "web", budget', "family 'pronoun_gendr' is unknown (did you mean 'pronoun_gender'?)"),
])
def test_a_typo_is_refused_at_lock_naming_the_key_and_valid_names(tmp_path, old, new, needle):
    assert old in BASE
    path = _write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(PreregError) as e:
        lock(path)
    assert needle in str(e.value)
    assert any(w in str(e.value) for w in ("valid:", "registered:", "use 'packed'"))  # and what is allowed
    assert not lock_path(path).exists()


def test_cli_lock_refuses_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, BASE.replace('quantity = "label"', 'quantity = "fianl"'))
    assert cli_main(["prereg", "lock", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "quantity 'fianl' is unknown (did you mean 'final'?)" in err and "Traceback" not in err


def test_unknown_gate_family_and_dose_intervention(tmp_path):
    gate = BASE + '\n[intervention_gate]\nfamilies = ["det_an_choise"]\n'
    with pytest.raises(PreregError, match="intervention_gate: family 'det_an_choise' is unknown"):
        lock(_write(tmp_path, gate))
    dose = BASE + ('\n[[dose_predictions]]\nid = "D1"\nfamily = "pronoun_gender"\nintervention = "kil"\n'
                   'corpus = "stories"\nquantity = "rho_cm_final"\nop = "<"\nvalue = 0\n')
    with pytest.raises(PreregError, match="dose_predictions\\[0\\] \\(D1\\): intervention 'kil' is unknown"):
        lock(_write(tmp_path, dose))


def test_a_family_of_ones_own_battery_is_not_a_typo(tmp_path):
    lock(_write(tmp_path, BASE.replace('family = "pronoun_gender"', 'family = "negation_bare_verb"')))


def test_amendment_additions_are_checked_too(tmp_path):
    path = _write(tmp_path, BASE)
    lock(path)
    bad = {"falsifiers": [{"id": "F2", "family": "pronoun_gender", "quantity": "fianl", "op": "<", "value": 0.5}]}
    with pytest.raises(PreregError, match="amendment additions: falsifiers\\[0\\] \\(F2\\): quantity 'fianl'"):
        amend(path, {}, "add a falsifier", add=bad)
