"""The report takes per-run sections from its caller; ``ungrok report`` passes mech's localization
section, which renders under the run's trajectories as it did when the report drew it itself."""

from __future__ import annotations

import json

from tests.unit.fake_runs import make_run, rise_then

FAM = "pronoun_gender"


def _localized(run_dir):
    """A fake ``mech/localize.json`` with its PNGs, as ``ungrok mech localize`` leaves them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = {"run_id": run_dir.name, "families": {FAM: {
        "split": {"step": 400, "reason": "CM crossing", "peak_step": 250},
        "table": [{"rank": i + 1, "component": f"L1H{i}", "competitor_pre": 0.1 * i, "competitor_post": 0.5 + i,
                   "growth": 1.0 - i / 10, "cross_step": 400 if i % 2 else None, "patch_post": -0.25}
                  for i in range(8)],
        "ablation": {"step": 1000, "before": {"cm": -0.5, "acc_conflict": 0.4, "agree_margin": 1.0},
                     "sets": {"top1": {"heads": ["L1H0"], "zero": {"cm": 0.1, "acc_conflict": 0.5, "agree_margin": 0.9},
                                       "mean": {"cm": 0.05, "acc_conflict": 0.5, "agree_margin": 0.95}}}}}}}
    mech = run_dir / "mech"
    mech.mkdir()
    (mech / "localize.json").write_text(json.dumps(doc))
    (mech / "localize.html").write_text("<p>localize</p>")
    for kind in ("dla", "patch", "attention", "embedding"):
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, 1], [0, 1])
        fig.savefig(mech / f"{FAM}_{kind}.png")
        plt.close(fig)


def test_report_renders_callers_sections_after_each_runs_trajectory(tmp_path):
    from mech.plots import report_section
    from runner.report.html import write_report

    runs = tmp_path / "runs"
    a = make_run(runs, "a", rise_then(0.5), seed=1)
    make_run(runs, "b", rise_then(1.0), seed=2)
    _localized(a)
    plain = write_report(runs, out_dir=tmp_path / "plain").read_text()
    assert "components carrying the competitor" not in plain
    page = write_report(runs, out_dir=tmp_path / "rep", extra_sections=[report_section]).read_text()
    head = f"<h4>{FAM}: components carrying the competitor (split at step 400)</h4>"
    assert page.count(head) == 1
    # under run a's trajectory image, before run b's heading; its three heatmaps embedded
    traj_a, traj_b = page.index("<h3>a <span"), page.index("<h3>b <span")
    assert traj_a < page.index(head) < traj_b
    section = page[page.index(head):traj_b]
    assert [f"{FAM}_{k}.png" in section for k in ("dla", "patch", "attention", "embedding")] == [True] * 3 + [False]
    assert "<td class=l>L1H5</td>" in section and "<td class=l>L1H6</td>" not in section  # the top 6
    assert "Ablation at step 1000: CM before -0.500." in section
    assert page.replace(section, "") == plain  # nothing else on the page changes


def test_report_cli_passes_the_mech_section(tmp_path):
    from cluster.cli import main as cli_main

    runs = tmp_path / "runs"
    _localized(make_run(runs, "a", rise_then(0.5), seed=1))
    assert cli_main(["report", str(runs), "--out", str(tmp_path / "rep")]) == 0
    assert "components carrying the competitor" in (tmp_path / "rep" / "index.html").read_text()
