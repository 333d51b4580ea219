"""The report page: one self-contained HTML file (PNGs embedded as data URIs, also written
beside it) for a run or a folder of runs.

Sections: the pre-registration (hash, lock time, amendments), the scoreboard (predictions and
falsifiers, PASS/FAIL/VOID, exploratory/confirmatory), the phase table (corpus x budget x seed ->
label per family), support ratio vs conflict final, interventions (a dose level voided by the
intervention-validity gate shows INTERVENTION-INVALID, not a number), public checkpoints, support
calibrations, the n-gram baseline of the runs that have a ``baseline.json``, and every run's
trajectories (followed by the sections the caller adds per run, e.g. a mechanistic localization:
``extra_sections``).

Every threshold drawn comes from the classifier in force: a run's plot from the constants its
labels were computed with (the locked prereg's, plus the amendments dated before its data), the
across-runs plots from the verdict's ``classifier``.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path
from typing import Callable, Sequence

from runner._io import write_json_atomic, write_text_atomic
from runner.analysis.audit import Calibration
from runner.analysis.dose_response import treatment
from runner.analysis.prereg import Locked, unregistered
from runner.analysis.verdicts import find_runs, verdict
from runner.report.baseline import baseline_section
from runner.report.plots import (
    plot_calibration,
    plot_cross_model,
    plot_dose_response,
    plot_run,
    plot_support,
)
from runner.report.windows import window_section
from runner.trajectory import Classifier

# A section a caller adds after each run's trajectories: run folder -> HTML fragments.
RunSection = Callable[[Path], list[str]]
# A section a caller adds once, over every unsealed run (e.g. runs side by side): folders -> fragments.
SweepSection = Callable[[list[Path]], list[str]]
# What a dose level voided by the intervention-validity gate shows instead of its figures.
INVALID_MARK = "INTERVENTION-INVALID"

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.PASS{background:#d9f2d9}.FAIL{background:#f7d4d4}.VOID{background:#eee}
.RECOVERED{color:#1a7f1a;font-weight:bold}.DISPLACED{color:#b3261e;font-weight:bold}.UNSTABLE,.PARTIAL{color:#a66a00}
.NEVER{color:#666}.exploratory{color:#a66a00}.confirmatory{color:#1a7f1a}
img{max-width:100%;border:1px solid #ddd;margin:4px 0}
code{background:#f5f5f5;padding:1px 4px}
"""
_JS = """window.addEventListener('load',()=>{const im=[...document.images];
document.body.dataset.imagesOk=im.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+im.length;});"""


def embed_png(path: Path) -> str:
    """An ``<img>`` carrying the PNG as a data URI (the page stays one self-contained file)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def fmt(v) -> str:
    """A value as the report's tables show it (3 decimals, ``[a, b]`` intervals, ``–`` for none)."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:.2f}, {v[1]:.2f}]"
    return html.escape(str(v))


def _level_cells(lv: dict) -> str:
    """A dose level's figures (mean final, mean CM final, labels, controls), or, for a level the
    intervention-validity gate voided, INTERVENTION-INVALID and the failing control families."""
    if lv.get("void"):
        fams = ", ".join(lv["void"].get("families", []))
        return (f"<td class=VOID colspan=2>{INVALID_MARK}</td><td class=l colspan=2>no verdict: control "
                f"families failing: {html.escape(fams)}</td>")
    return (f"<td>{fmt(lv['mean_final'])}</td><td>{fmt(lv['mean_cm_final'])}</td>"
            f"<td class=l>{', '.join(lv['labels'])}</td><td>{'valid' if lv['controls_valid'] else 'INVALID'}</td>")


def _dose_sections(dr: dict, out: Path) -> list[str]:
    """The interventions: the asymmetry table, the dose-response table and its plot."""
    if not dr["groups"]:
        return []
    yes = lambda b, d: f"yes, from {d:g}" if b else "no"  # noqa: E731
    rows = "".join(
        f"<tr><td class=l>{html.escape(treatment(a))}</td><td class=l>{a['family']}</td><td class=l>{a['corpus']}</td>"
        f"<td>{fmt(a['baseline_final'])}</td><td>{yes(a['kills'], a['kills_from_dose'])}</td>"
        f"<td>{yes(a['rescues'], a['rescues_from_dose'])}</td><td>{'yes' if a['monotone_final'] else 'no'}</td>"
        f"<td>{fmt(a['max_dose'])}</td><td>{fmt(a['max_support_contested'])}</td><td>{fmt(a['rho_cm_final'])}</td></tr>"
        for a in dr["asymmetry"])
    parts = ["<h2>Interventions: the asymmetry</h2><p>Kill flips rule-winning events to counter-evidence in "
             "place; rescue injects rule-winning events. <i>Kills</i>: the seed-mean conflict final reaches "
             "DISPLACED at some dose although it was not at dose 0; <i>rescues</i>: it reaches RECOVERED although "
             "it was not at dose 0.</p><table><tr><th class=l>intervention</th>"
             "<th class=l>family</th><th class=l>corpus</th><th>baseline final</th><th>kills?</th><th>rescues?</th>"
             "<th>monotone</th><th>max dose</th><th>max contested support seen</th><th>ρ(dose, CM final)</th></tr>"
             f"{rows}</table>"]
    body = ""
    for g in dr["groups"]:
        for lv in g["levels"]:
            body += (f"<tr><td class=l>{html.escape(treatment(g))}</td><td class=l>{g['family']}</td><td class=l>"
                     f"{g['corpus']}/{g['budget']}</td><td class=l>{lv['dose_name']}</td><td>{lv['n_seeds']}</td>"
                     f"<td>{fmt(lv['support_contested'])}</td><td>{fmt(lv['support_windowed'])}</td>"
                     f"{_level_cells(lv)}</tr>")
    parts.append("<h3>Dose-response (dose 0 = the undosed runs of the same corpus and budget)</h3><table><tr>"
                 "<th class=l>intervention</th><th class=l>family</th><th class=l>corpus</th><th class=l>dose</th>"
                 "<th>seeds</th><th>support seen (contested)</th><th>support seen (windowed)</th><th>mean final</th>"
                 f"<th>mean CM final</th><th class=l>labels</th><th>controls</th></tr>{body}</table>")
    png = plot_dose_response(dr, out / "dose_response.png")
    if png:
        parts.append(embed_png(png))
    return parts


def _cross_model_sections(xm: dict, dirs: dict, out: Path) -> list[str]:
    """Public checkpoint series: per family, the models by size with peak, final and collapse depth,
    rho(size rank, final); and conflict accuracy against training step per model."""
    if not xm:
        return []
    body = ""
    for fam, a in xm.items():
        for r in a["models"]:
            body += (f"<tr><td class=l>{fam}</td><td class=l>{r['model']}</td><td>{r['n_params']:,}</td>"
                     f"<td>{r['size_rank']}</td><td>{fmt(r['peak'])} @ {r['peak_step']}</td><td>{fmt(r['final'])}</td>"
                     f"<td>{fmt(r['depth'])}</td><td class={r['label']}>{r['label']}</td></tr>")
        body += (f"<tr><td class=l>{fam}</td><td class=l colspan=7>Spearman ρ(size rank, conflict final) = "
                 f"{fmt(a['rho_size_final'])}</td></tr>")
    parts = ["<h2>Public checkpoints: across models</h2><table><tr><th class=l>family</th><th class=l>model</th>"
             "<th>parameters</th><th>size rank</th><th>peak @ step</th><th>final</th><th>collapse depth (peak − final)"
             f"</th><th>label</th></tr>{body}</table>"]
    png = plot_cross_model(xm, dirs, out / "cross_model.png")
    parts.append(embed_png(png))
    return parts


def write_calibration(cal: Calibration, cal_dir: str | Path) -> Path:
    """``<cal_dir>/<family>-<mode>.json`` (:meth:`Calibration.to_json`) and its plot beside it: what
    :func:`_calibration_sections` shows (``ungrok audit --calibration`` writes it into
    ``<first sweep>/calibration``)."""
    cal_dir = Path(cal_dir)
    dest = write_json_atomic(cal_dir / f"{cal.family}-{cal.mode}.json", cal.to_json(), default=float)
    plot_calibration(cal, dest.with_suffix(".png"))
    return dest


def _calibration_classifier(c: dict) -> str:
    lines = c.get("survival_lines") or []
    if not lines:  # written before calibrations recorded their classifier: the paper's constants
        return ""
    pr = c.get("prereg")
    src = (f"the locked prereg <code>{html.escape(pr['path'])}</code> (sha256 <code>{pr['sha256'][:16]}…</code>)"
           if pr else "no prereg: the paper's constants")
    k = c.get("classifier") or {}
    return (f" UNSTABLE and PARTIAL runs count as survived iff final &gt;= "
            f"{' or '.join(f'{x:.3g}' for x in lines)} (displaced {fmt(k.get('displaced'))}, recovered "
            f"{fmt(k.get('recovered'))}; {src}).")


def _calibration_sections(path: Path, out: Path) -> list[str]:
    """Support calibrations fitted on this sweep by ``ungrok audit --calibration`` (f*, inputs, plot)."""
    files = sorted((path / "calibration").glob("*.json")) if (path / "calibration").is_dir() else []
    if not files:
        return []
    parts = ["<h2>Support calibration (critical ratio f*)</h2>"]
    for f in files:
        c = json.loads(f.read_text())
        fit, aud = c["fit"], c.get("audited") or {}
        surv = lambda p: "" if p.get("survived") is None else ("yes" if p["survived"] else "no")  # noqa: E731
        rows = "".join(f"<tr><td class=l>{html.escape(p['run'])}</td><td>{fmt(p['ratio'])}</td>"
                       f"<td class={p['label']}>{p['label']}</td><td>{fmt(p['final'])}</td><td>{surv(p)}</td></tr>"
                       for p in c["points"])
        parts.append(f"<h3>{c['family']} ({c['mode']} support)</h3><p>f* = {fmt(fit.get('f_star'))} "
                     f"interval {fmt(fit.get('ci'))} ({fit.get('method')}, {fit.get('n_points')} runs"
                     f"{'; ' + html.escape(fit['why']) if fit.get('why') else ''}). Last audited corpus: "
                     f"<code>{html.escape(str(aud.get('corpus')))}</code>, ratio {fmt(aud.get('ratio'))} "
                     f"{fmt(aud.get('ci'))}: <b>{html.escape(str(aud.get('call')))}</b>."
                     f"{_calibration_classifier(c)}</p><table><tr><th class=l>run</th><th>support ratio seen</th>"
                     f"<th>label</th><th>final</th><th>survived</th></tr>{rows}</table>")
        png = f.with_suffix(".png")
        if png.exists():
            dest = out / f"calibration-{png.name}"
            shutil.copy(png, dest)
            parts.append(embed_png(dest))
    return parts


def _prereg_sections(v: dict) -> list[str]:
    pr = v["prereg"]
    if not pr["sha256"]:
        return ["<p><b>No pre-registration given</b>: default constants, every figure is exploratory.</p>"]
    parts = [f"<h2>Pre-registration</h2><p><code>{html.escape(pr['path'])}</code> sha256 "
             f"<code>{pr['sha256'][:16]}…</code>, locked {pr['locked_utc']}, commit "
             f"<code>{html.escape(str(pr['git_commit']))}</code>. Runs whose data was first scored before "
             "the lock are <span class=exploratory>exploratory</span>; after it, "
             "<span class=confirmatory>confirmatory</span>.</p>"]
    if pr["amendments"]:
        rows = "".join(f"<tr><td>{a['n']}</td><td class=l>{a['utc']}</td>"
                       f"<td class=l>{html.escape(str(a['changes'] or ''))}</td><td class=l>{_added(a)}</td>"
                       f"<td class=l>{html.escape(a['reason'])}</td><td class=l><code>{a['hash'][:12]}</code></td></tr>"
                       for a in pr["amendments"])
        parts.append("<h3>Amendments (changed constants apply to data produced after their date; added "
                     "predictions are scored only on data first scored after it)</h3><table><tr><th>#</th>"
                     "<th class=l>UTC</th><th class=l>changes</th><th class=l>predictions added</th>"
                     f"<th class=l>reason</th><th class=l>hash</th></tr>{rows}</table>")
    parts += _unseal_sections(pr.get("unseals", []))
    return parts


def _added(a: dict) -> str:
    return html.escape(", ".join(p["id"] for kind in a.get("add", {}).values() for p in kind))


def _unseal_sections(unseals: list[dict]) -> list[str]:
    """Every unseal of quarantined seeds so far (the prereg's unseal chain): who, when, why."""
    if not unseals:
        return []
    rows = "".join(f"<tr><td>{u['n']}</td><td class=l>{u['utc']}</td><td class=l>{html.escape(str(u['user']))}</td>"
                   f"<td class=l>{html.escape(u['command'])}</td><td>{html.escape(str(u['seeds']))}</td>"
                   f"<td class=l>{html.escape(u['reason'])}</td><td class=l><code>{u['hash'][:12]}</code></td></tr>"
                   for u in unseals)
    return ["<h3>Quarantine unsealed (hash-chained log beside the prereg)</h3><table><tr><th>#</th>"
            "<th class=l>UTC</th><th class=l>who</th><th class=l>command</th><th>seeds</th><th class=l>why</th>"
            f"<th class=l>hash</th></tr>{rows}</table>"]


def _why_or_values(p: dict) -> str:
    if p.get("why"):
        return p["why"]
    out = ", ".join(fmt(x) for x in p.get("values", []))
    if p.get("instrument_invalid"):
        out += f" (margin instrument invalid, left out: seeds {p['instrument_invalid']['seeds']})"
    return out


def _registered(p: dict) -> str:
    reg = p.get("registered", {})
    return "lock" if reg.get("by", "lock") == "lock" else f"{reg['by']}, {reg['utc'][:10]}"


def _scoreboard_sections(v: dict) -> list[str]:
    parts = []
    for title, key in (("Scoreboard: predictions", "predictions"), ("Falsifiers", "falsifiers"),
                       ("Scoreboard: dose-response predictions", "dose_predictions")):
        if v[key]:
            rows = "".join(
                f"<tr class={p['result']}><td class=l>{html.escape(p['id'])}</td>"
                f"<td class=l>{html.escape(_registered(p))}</td><td class=l>{html.escape(p['text'])}</td>"
                f"<td class=l>{html.escape(p['family'])} {html.escape(str(p['select']))}: {html.escape(p['rule'])}</td>"
                f"<td>{p['result']}</td><td class='l {p['status']}'>{p['status']}</td>"
                f"<td class=l>{html.escape(_why_or_values(p))}</td></tr>"
                for p in v[key])
            parts.append(f"<h2>{title}</h2><table><tr><th class=l>id</th><th class=l>registered</th>"
                         f"<th class=l>claim</th><th class=l>rule</th>"
                         f"<th>result</th><th class=l>status</th><th class=l>values / why VOID</th></tr>{rows}</table>")
    parts += _intervention_gate_sections(v.get("intervention_gate", []))
    return parts


def _intervention_gate_sections(cells: list[dict]) -> list[str]:
    """The intervention-validity gate per dosed cell (only when the prereg names control families)."""
    if not cells:
        return []
    rows = "".join(
        f"<tr class={'PASS' if c['valid'] else 'VOID'}><td class=l>"
        f"{html.escape('/'.join(str(x) for x in c['cell'].values() if x))}</td>"
        f"<td class=l>{'valid' if c['valid'] else 'INTERVENTION-INVALID'}</td><td class=l>"
        + html.escape(", ".join(f"{f} {x['held']}/{x['of']}" for f, x in c["families"].items()))
        + f"</td><td class=l>{html.escape(', '.join(c['failing']))}</td></tr>" for c in cells)
    return ["<h3>Intervention gate (control families RECOVERED and control-valid per dosed cell)</h3><table><tr>"
            "<th class=l>cell</th><th class=l>status</th><th class=l>seeds holding</th><th class=l>failing</th></tr>"
            f"{rows}</table>"]


def _by_class(x: dict) -> str:
    """Each cue class's label and final under the pooled final (descriptive; absent with one class)."""
    by = x.get("by_class")
    return ("<br><small>" + " · ".join(f"{html.escape(c)} {f.get('label')} {fmt(f.get('final'))}"
                                       for c, f in by.items()) + "</small>") if by else ""


def _phase_table(v: dict) -> str:
    fams = sorted({f for r in v["runs"] for f in r["families"]})
    head = "".join(f"<th>{f}<br>label</th><th>final [95% CI]</th><th>peak</th><th>control</th><th>onset</th>"
                   f"<th>CM cross (lag)</th>" for f in fams)
    rows = []
    for r in sorted(v["runs"], key=lambda r: (r["corpus"], r["budget"], r.get("dose", "none"), r["seed"])):
        cells = ""
        for f in fams:
            x = r["families"].get(f, {})
            lag = f" ({x['cross_lag']:+d})" if x.get("cross_lag") is not None else ""
            cells += (f"<td class={x.get('label', '')}>{x.get('label', 'sealed' if r['sealed'] else '–')}</td>"
                      f"<td>{fmt(x.get('final'))} {fmt(x.get('final_ci'))}{_by_class(x)}</td>"
                      f"<td>{fmt(x.get('peak'))}</td>"
                      f"<td>{'valid' if x.get('control_valid') else ('INVALID' if x else '–')}</td>"
                      f"<td>{fmt(x.get('onset'))}</td><td>{fmt(x.get('cm_cross'))}{lag}</td>")
        status = "sealed" if r["sealed"] else r["status"] + ("" if r["complete"] else " (still training)")
        rows.append(f"<tr><td class=l>{r['corpus']}</td><td class=l>{r['budget']}</td>"
                    f"<td class=l>{r.get('dose', 'none')}</td><td>{r['seed']}</td>"
                    f"<td class='l {status}'>{status}</td>{cells}</tr>")
    return ("<h2>Phase table</h2><table><tr><th class=l>corpus</th><th class=l>budget</th><th class=l>dose</th>"
            "<th>seed</th>"
            f"<th class=l>status</th>{head}</tr>{''.join(rows)}</table>")


def _support_law_sections(v: dict, out: Path) -> list[str]:
    law_rows = ""
    for f, a in v["across"].items():
        for mode, law in a["support_law"].items():
            classes = ", ".join(law.get("classes") or [])
            law_rows += (f"<tr><td class=l>{f}</td><td class=l>{mode}{f' ({classes})' if classes else ''}</td>"
                         f"<td>{fmt(law['spearman_rho'])}</td>"
                         f"<td>{law['n']}</td><td>{'yes' if law['separates'] else 'no'}</td>"
                         f"<td>{fmt(law['threshold'])}</td></tr>")
    if not law_rows:
        return []
    parts = ["<h2>Support-frequency law</h2><p>Support ratio of the cue class(es) the conflict probes test."
             "</p><table><tr><th class=l>family</th><th class=l>ratio (classes)</th>"
             "<th>Spearman ρ (ratio, final)</th><th>runs</th><th>ratio alone separates survivors</th>"
             f"<th>threshold</th></tr>{law_rows}</table>"]
    sp = plot_support(v, out / "support_vs_final.png", Classifier(**v["classifier"]))
    if sp:
        parts.append(embed_png(sp))
    return parts


def _trajectory_sections(v: dict, dirs: dict[str, Path], out: Path, extra_sections: Sequence[RunSection]) -> list[str]:
    """Every run's plot under the classifier its labels were computed with, then the caller's sections."""
    parts = ["<h2>Trajectories</h2>"]
    for r in v["runs"]:
        if r["sealed"]:
            parts.append(f"<p>{r['run']}: sealed (quarantined seed {r['seed']}; pass --unseal REASON)</p>")
            continue
        png = plot_run(dirs[r["run"]], out / f"{r['run']}.png", figures=r["families"],
                       classifier=Classifier(**r["classifier"]))
        parts.append(f"<h3>{r['run']} <span class={r['status']}>({r['status']})</span></h3>{embed_png(png)}")
        for section in extra_sections:
            parts += section(dirs[r["run"]])
    return parts


def write_report(path: str | Path, locked: Locked | None = None, unseal: str | None = None,
                 out_dir: str | Path | None = None, extra_sections: Sequence[RunSection] = (),
                 sweep_sections: Sequence[SweepSection] = (), computed: dict | None = None) -> Path:
    """Compute the verdict and write ``<out_dir>/index.html`` (default ``<path>/report``); ``path``
    may be a list of paths reported together.

    ``extra_sections``: callables ``run folder -> [HTML fragment, ...]`` whose fragments follow that
    run's trajectories (e.g. ``mech.plots.report_section``, the run's localization); embed images
    with :func:`embed_png`. ``sweep_sections``: callables ``[run folder, ...] -> [HTML fragment, ...]``
    given every unsealed run once, shown before the trajectories (e.g.
    ``mech.appendix_report.compare_section``, runs side by side). ``computed``: the verdict of
    the same ``path`` and ``locked`` a caller already holds (``ungrok demo``), used as it is."""
    locked = locked or unregistered()
    v = computed if computed is not None else verdict(path, locked, unseal, command="report")
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    out = Path(out_dir) if out_dir else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    dirs = {d.name: d for d in find_runs(paths[0] if len(paths) == 1 else paths)}
    parts = ["<h1>ungrok report</h1><p>" + ", ".join(f"<code>{html.escape(str(Path(p).resolve()))}</code>"
                                                    for p in paths) + "</p>"]
    parts += _prereg_sections(v)
    if v["unsealed"]:
        u = v["unsealed"]
        parts.append(f"<p><b>Quarantined seeds {html.escape(str(u['seeds']))} were unsealed for this report</b> by "
                     f"{html.escape(str(u['user']))} at {u['utc']}: {html.escape(u['reason'])} (unseal record "
                     f"{u['n']}).</p>")
    parts += _scoreboard_sections(v)
    parts.append(_phase_table(v))
    parts += _support_law_sections(v, out)
    parts += _dose_sections(v["dose_response"], out)
    parts += _cross_model_sections(v["cross_model"], dirs, out)
    for p in paths:
        parts += _calibration_sections(Path(p), out)
    unsealed = [dirs[r["run"]] for r in v["runs"] if not r["sealed"]]
    for section in sweep_sections:
        parts += section(unsealed)
    parts += baseline_section(unsealed, v["runs"])
    parts += window_section(unsealed, v["runs"])
    parts += _trajectory_sections(v, dirs, out, extra_sections)
    page = (f"<!doctype html><html><head><meta charset=utf-8><title>ungrok report</title><style>{_CSS}</style>"
            f"<script>{_JS}</script></head><body>{''.join(parts)}</body></html>")
    dest = write_text_atomic(out / "index.html", page)
    write_json_atomic(out / "verdict.json", v, default=str)
    return dest
