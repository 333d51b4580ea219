"""Figures, tables and report sections of the appendix measures (:mod:`mech.appendix`).

- :func:`headline`: one run-family result reduced to the figures the paper quotes;
- :func:`write_plots`: per family ``<family>_appendix.png`` (gap decomposition, top-head share,
  decodability per depth, against step);
- :func:`report_section`: a run's measures on the ``ungrok report`` page (per run);
- :func:`compare_section` / :func:`compare_table`: runs side by side (surviving vs displaced), for
  the report page of a sweep and for ``ungrok mech appendix --compare``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

APPENDIX_JSON = ("mech", "appendix.json")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _at(res: dict, key: str, step: int):
    return res["decompose"][key][res["steps"].index(step)]


def _best_depth(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: r["delta_cm"]) if rows else {}


def _best(patch: dict) -> tuple[str | None, float]:
    b = patch.get("best")
    return b, (patch["components"][b]["fraction"] if b else float("nan"))


def headline(res: dict) -> dict:
    """The quoted figures of one family's result (NaN / None where a measure was not run)."""
    h: dict = {"peak": res["peak"], "final": res["final"], "source": res.get("source")}
    if "decompose" in res:
        for name in ("peak", "final"):
            for key in ("total", "direct", "contextual"):
                h[f"{key}_{name}"] = _at(res, key, res[name])
        h["max_error"] = max(res["decompose"]["max_error"])
    if "carrier" in res:
        for name in ("peak", "final"):
            c = res["carrier"][name]
            h[f"top_head_{name}"], h[f"share_{name}"] = c["top_head"], c["share"]
            h[f"ablation_deleted_{name}"] = c["ablation"]["deleted"]
            h[f"ov_alignment_{name}"] = c["ov_alignment"]
    if "decode" in res:
        dec = res["decode"]
        for name in ("peak", "final"):
            row = dec[res["steps"].index(res[name])]
            h[f"decode_last_{name}"], h[f"decode_max_{name}"] = row[-1], float(np.nanmax(row[1:] or row))
    if "crosspatch" in res:
        cp = res["crosspatch"]
        h["patch_best_peak_into_final"] = _best(cp["peak_into_final"])
        h["patch_best_final_into_peak"] = _best(cp["final_into_peak"])
    if "direction" in res:
        for name in ("peak", "final"):
            b = _best_depth(res["direction"][name])
            h[f"direction_delta_cm_{name}"] = (b.get("depth"), b.get("delta_cm", float("nan")))
            h[f"direction_nontarget_{name}"] = b.get("nontarget_mean_abs_delta", float("nan"))
    if "bootstrap" in res:
        bs = res["bootstrap"]
        h["drop"], h["drop_ci95"] = bs["drop"], bs["ci95"]
    return h


def family_plot(res: dict, out: Path) -> str:
    """``<family>_appendix.png``: the three per-checkpoint series with the CM peak and final marked."""
    plt = _plt()
    steps = res["steps"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
    if "decompose" in res:
        for key in ("total", "direct", "contextual", "bias"):
            axes[0].plot(steps, res["decompose"][key], label=key)
        axes[0].set_title("rule-prior logit gap (conflict, heldout)", fontsize=9)
        axes[0].legend(fontsize=7)
    if "carrier" in res:
        axes[1].plot(steps, res["carrier"]["share_series"])
        axes[1].set_ylim(0, 1)
        axes[1].set_title("top head's share of |head attribution|", fontsize=9)
    if "decode" in res:
        d = np.asarray(res["decode"], float)
        for k in range(d.shape[1]):
            axes[2].plot(steps, d[:, k], label="embed" if k == 0 else f"after block {k - 1}")
        axes[2].axhline(0.5, color="gray", lw=0.5)
        axes[2].set_ylim(0.3, 1.02)
        axes[2].set_title("cue-class decodability (cross-frame)", fontsize=9)
        axes[2].legend(fontsize=7)
    for ax in axes:
        ax.axvline(res["peak"], color="k", ls="--", lw=0.8)
        ax.set_xlabel("step")
    fig.suptitle(f"{res['family']} (dashed: CM peak)", fontsize=9)
    fig.tight_layout()
    path = out / f"{res['family']}_appendix.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def write_plots(doc: dict, out: Path) -> list[str]:
    """PNGs for every family of an ``appendix.json`` document."""
    return [family_plot(res, Path(out)) for res in doc.get("families", {}).values()]


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (tuple, list)):
        return " ".join(_fmt(x) for x in v)
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:+.3f}" if abs(v) < 100 else f"{v:.0f}"
    return html.escape(str(v))


ROWS = [("CM peak / final step", ("peak", "final")),
        ("gap at peak: total / direct / contextual", ("total_peak", "direct_peak", "contextual_peak")),
        ("gap at final: total / direct / contextual", ("total_final", "direct_final", "contextual_final")),
        ("top head, share at peak", ("top_head_peak", "share_peak")),
        ("top head, share at final", ("top_head_final", "share_final")),
        ("zero-ablating it deletes (peak / final)", ("ablation_deleted_peak", "ablation_deleted_final")),
        ("OV alignment (peak / final)", ("ov_alignment_peak", "ov_alignment_final")),
        ("decodability after the last block (peak / final)", ("decode_last_peak", "decode_last_final")),
        ("best peak component into final: fraction", ("patch_best_peak_into_final",)),
        ("best final component into peak: fraction", ("patch_best_final_into_peak",)),
        ("direction projected out at final: depth, ΔCM", ("direction_delta_cm_final",)),
        ("  mean |ΔCM| of other families", ("direction_nontarget_final",)),
        ("peak→final drop [95% CI]", ("drop", "drop_ci95")), ("rows read from", ("source",))]


def compare_table(columns: list[tuple[str, dict]]) -> str:
    """HTML table, one column per (title, :func:`headline`)."""
    head = "".join(f"<th>{html.escape(t)}</th>" for t, _ in columns)
    body = "".join("<tr><td class=l>" + html.escape(name) + "</td>" + "".join(
        "<td>" + " / ".join(_fmt(h.get(k)) for k in keys) + "</td>" for _, h in columns) + "</tr>"
        for name, keys in ROWS)
    return f"<table><tr><th class=l>measure</th>{head}</tr>{body}</table>"


def _load(run_dir: Path) -> dict | None:
    path = run_dir.joinpath(*APPENDIX_JSON)
    return json.loads(path.read_text()) if path.exists() else None


def _label(run_dir: Path, family: str) -> str:
    try:
        return json.loads((run_dir / "summary.json").read_text())["families"][family]["label"]
    except (FileNotFoundError, KeyError, ValueError):
        return "?"


def report_section(run_dir: str | Path) -> list[str]:
    """A run's appendix measures on the report page (``[]`` when it has none)."""
    from runner.report.html import embed_png

    run_dir = Path(run_dir)
    doc = _load(run_dir)
    if not doc:
        return []
    parts = []
    for fam, res in doc["families"].items():
        parts.append(f"<h4>{html.escape(fam)}: mechanism measures (appendix I)</h4>"
                     + compare_table([(f"{run_dir.name} ({_label(run_dir, fam)})", headline(res))]))
        png = run_dir / "mech" / f"{fam}_appendix.png"
        if png.exists():
            parts.append(embed_png(png))
    return parts


def compare_section(run_dirs: list[Path]) -> list[str]:
    """The runs with appendix measures side by side per family (``[]`` when fewer than two): a
    sweep-level section of the report page (``runner.report.html.write_report(sweep_sections=...)``),
    given every unsealed run."""
    runs = [Path(d) for d in run_dirs if _load(Path(d))]
    fams = list(dict.fromkeys(f for d in runs for f in (_load(d) or {}).get("families", {})))
    parts = []
    for fam in fams:
        cols = columns_for(runs, fam)
        if len(cols) >= 2:
            parts.append(f"<h3>{html.escape(fam)}: mechanism measures side by side</h3>" + compare_table(cols))
    return (["<h2>Mechanism (appendix I)</h2>"] + parts) if parts else []


def _txt(v) -> str:
    if isinstance(v, (tuple, list)):
        return " ".join(_txt(x) for x in v)
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:+.3f}" if abs(v) < 100 else f"{v:.0f}"
    return "-" if v is None else str(v)


def compare_lines(columns: list[tuple[str, dict]], width: int = 30) -> list[str]:
    """The :func:`compare_table` as text lines (for a terminal)."""
    lines = [f"{'measure':<52}" + "".join(f"{t[:width]:<{width + 2}}" for t, _ in columns)]
    for name, keys in ROWS:
        cells = [" / ".join(_txt(h.get(k)) for k in keys) for _, h in columns]
        lines.append(f"{name:<52}" + "".join(f"{c[:width]:<{width + 2}}" for c in cells))
    return lines


def columns_for(run_dirs: list[Path], family: str) -> list[tuple[str, dict]]:
    """(title, headline) of every run in ``run_dirs`` whose appendix holds ``family``."""
    out = []
    for d in run_dirs:
        doc = _load(Path(d))
        if doc and family in doc["families"]:
            out.append((f"{Path(d).name} ({_label(Path(d), family)})", headline(doc["families"][family])))
    return out
