"""Every threshold a plot draws comes from the classifier in force (the locked prereg, amended),
never from the default constants."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from runner.trajectory import Classifier
from tests.unit.fake_runs import make_run, rise_then

PREREG = """title = "thresholds"
[classifier]
recovered = 0.9
displaced = 0.45
"""


@pytest.fixture
def drawn(monkeypatch):
    """``{png name: {"spans": [(lo, hi)], "lines": [y]}}`` of every figure saved meanwhile."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    per_fig: dict = defaultdict(lambda: {"spans": [], "lines": []})
    out: dict = {}
    span, line, save = Axes.axhspan, Axes.axhline, Figure.savefig

    def axhspan(self, ymin, ymax, *a, **kw):
        per_fig[id(self.figure)]["spans"].append((round(ymin, 6), round(ymax, 6)))
        return span(self, ymin, ymax, *a, **kw)

    def axhline(self, y=0, *a, **kw):
        per_fig[id(self.figure)]["lines"].append(round(y, 6))
        return line(self, y, *a, **kw)

    def savefig(self, fname, *a, **kw):
        name = Path(fname).name  # ".<stem>.<random>.tmp.png" while written atomically
        name = name[1:].split(".")[0] + ".png" if name.startswith(".") else name
        out[name] = per_fig.pop(id(self), {"spans": [], "lines": []})
        return save(self, fname, *a, **kw)

    monkeypatch.setattr(Axes, "axhspan", axhspan)
    monkeypatch.setattr(Axes, "axhline", axhline)
    monkeypatch.setattr(Figure, "savefig", savefig)
    return out


def test_threshold_bands_follow_the_classifier():
    from runner.report.plots import threshold_bands

    b = threshold_bands(Classifier(emerged=0.85, recovered=0.9, displaced=0.45))
    assert (b.recovered, b.displaced, b.emerged) == (0.9, 0.45, 0.85)
    assert b.spans() == [(0.9, 1.02), (-0.02, 0.45)]
    assert b.survival_line == pytest.approx(0.675)
    assert "0.9" in b.recovered_label and "0.45" in b.displaced_label
    d = threshold_bands(Classifier())
    assert d.spans() == [(0.8, 1.02), (-0.02, 0.6)] and d.recovered_label == "EMERGED / RECOVERED >= 0.8"


def test_plot_run_draws_the_given_classifier(tmp_path, drawn):
    from runner.report.plots import plot_run

    run = make_run(tmp_path, "r", rise_then(0.5))
    plot_run(run, tmp_path / "r.png", classifier=Classifier(recovered=0.9, displaced=0.45))
    assert drawn["r.png"]["spans"] == [(0.9, 1.02), (-0.02, 0.45)]


def test_report_draws_the_locked_and_amended_thresholds(tmp_path, drawn):
    """Each run's trajectory plot uses the constants its labels were computed with (the locked
    values, plus amendments dated before its data); the across-runs plots use the verdict's."""
    from runner.analysis.prereg import amend, load_locked, lock
    from runner.config import CorpusConfig
    from runner.data.corpora import build_corpus
    from runner.report.html import write_report

    corpus = build_corpus(CorpusConfig(name="web", n_stories=200, seed=0), tmp_path / "corpora")
    runs = tmp_path / "runs"
    for i, final in enumerate((0.5, 0.625, 1.0)):
        make_run(runs, f"r{i}", rise_then(final), seed=i, corpus_path=corpus,
                 first_scored_utc="2999-01-01T00:00:00+00:00" if i == 2 else "2000-01-01T00:00:00+00:00")
    prereg = tmp_path / "p.toml"
    prereg.write_text(PREREG)
    lock(prereg)
    amend(prereg, {"classifier.displaced": 0.55}, "after r2 was planned")
    write_report(runs, load_locked(prereg), out_dir=tmp_path / "rep")
    assert drawn["r0.png"]["spans"] == [(0.9, 1.02), (-0.02, 0.45)]  # data before the amendment
    assert drawn["r2.png"]["spans"] == [(0.9, 1.02), (-0.02, 0.55)]  # data after it
    assert sorted(drawn["support_vs_final.png"]["lines"]) == [0.45, 0.9]
    import json

    v = json.loads((tmp_path / "rep" / "verdict.json").read_text())
    assert v["classifier"]["displaced"] == 0.45
    assert [r["classifier"]["displaced"] for r in v["runs"]] == [0.45, 0.45, 0.55]
