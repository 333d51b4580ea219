"""Heatmaps (component x step) and a small HTML page for a localization result.

Per family: ``<family>_dla.png`` (competitor contribution -DLA of every component, with CM and
LD above it), ``<family>_patch.png`` (patching effect per head and per layer), ``<family>_attention.png``
(attention from the prediction position to the cue and to the competitor's evidence, per head),
``<family>_embedding.png`` (the embedding-level cosine). A dashed line marks the split step (the
CM crossing). ``localize.html`` lists the ranked tables and includes the PNGs by relative path.
:func:`report_section` is the run's localization as a section of the ``ungrok report`` page (the
cluster layer passes it to ``runner.report.html.write_report(extra_sections=...)``).
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from runner._io import write_text_atomic


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heat(ax, data: np.ndarray, rows: list[str], steps: list[int], title: str, split: int | None,
          cmap: str = "RdBu_r", symmetric: bool = True):
    data = np.asarray(data, float)
    lim = np.nanmax(np.abs(data)) if np.isfinite(data).any() else 1.0
    kw = {"vmin": -lim, "vmax": lim} if symmetric else {"vmin": 0.0, "vmax": max(lim, 1e-9)}
    im = ax.imshow(data, aspect="auto", cmap=cmap, interpolation="nearest",
                   extent=(steps[0], steps[-1], len(rows) - 0.5, -0.5), **kw)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    if split is not None:
        ax.axvline(split, color="k", ls="--", lw=1)
    ax.figure.colorbar(im, ax=ax, fraction=0.03)


def family_plots(result: dict, out: Path) -> list[str]:
    """Write the family's PNGs into ``out``; returns their paths."""
    plt = _plt()
    fam, steps = result["family"], result["steps"]
    split = result["split"]["step"]
    paths = []

    fig, (a0, a1) = plt.subplots(2, 1, figsize=(9, 7), gridspec_kw={"height_ratios": [1, 3]}, sharex=False)
    cm = np.array([np.nan if x is None else x for x in result["cm_store"]], float)
    a0.plot(steps, cm, label="CM (store, summed log-probs)")
    a0.plot(steps, result["ld_conflict"], label="LD (first-token logits)", alpha=0.7)
    a0.axhline(0, color="gray", lw=0.5)
    a0.axvline(split, color="k", ls="--", lw=1)
    a0.legend(fontsize=7)
    a0.set_title(f"{fam}: margins on conflict items", fontsize=9)
    _heat(a1, -np.asarray(result["dla"]), result["components"], steps,
          "competitor contribution (-DLA on LD, red = pulls to competitor)", split)
    fig.tight_layout()
    paths.append(str(out / f"{fam}_dla.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    ph = np.asarray(result["patch_heads"])  # (layer, head, step)
    L, H, _ = ph.shape
    rows = [f"L{l}H{h}" for l in range(L) for h in range(H)] + [f"attn{l}" for l in range(L)] + \
        [f"mlp{l}" for l in range(L)]
    data = np.concatenate([ph.reshape(L * H, -1), np.asarray(result["patch_attn_out"]),
                           np.asarray(result["patch_mlp_out"])], 0)
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(rows) + 1.5))
    _heat(ax, data, rows, steps, f"{fam}: patching conflict -> switched evidence (LD change; blue = carries "
          "competitor evidence)", split)
    fig.tight_layout()
    paths.append(str(out / f"{fam}_patch.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 0.3 * L * H + 1.8))
    heads = [f"L{l}H{h}" for l in range(L) for h in range(H)]
    for ax, key, title in zip(axes, ("attn_cue", "attn_evidence"), ("to the cue", "to the competitor's evidence")):
        _heat(ax, np.asarray(result[key]).reshape(L * H, -1), heads, steps, f"{fam}: attention {title}", split,
              cmap="viridis", symmetric=False)
    fig.tight_layout()
    paths.append(str(out / f"{fam}_attention.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.plot(steps, result["embedding_cos"])
    ax.axvline(split, color="k", ls="--", lw=1)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_title(f"{fam}: cos(cue-class embedding difference, rule-answer unembedding difference)", fontsize=8)
    ax.set_xlabel("step")
    fig.tight_layout()
    paths.append(str(out / f"{fam}_embedding.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _table_html(result: dict, n: int = 12) -> str:
    cols = ["rank", "component", "competitor_pre", "competitor_post", "growth", "cross_step", "sign_step",
            "patch_post", "attn_evidence_post", "attn_cue_post"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = []
    for r in result["table"][:n]:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"<td>{v:.3f}</td>" if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _ablation_html(ab: dict) -> str:
    rows = [("before", "", ab["before"])]
    for name, e in ab.get("sets", {}).items():
        rows += [(f"{name} ({m})", ", ".join(e["heads"]), e[m]) for m in ("zero", "mean")]
    body = "".join(f"<tr><td>{html.escape(n)}</td><td>{html.escape(h)}</td><td>{v['cm']:+.3f}</td>"
                   f"<td>{v['acc_conflict']:.3f}</td><td>{v['agree_margin']:+.3f}</td></tr>" for n, h, v in rows)
    return (f"<p>Head ablation at step {ab['step']} (CM on heldout conflict probes)</p><table><tr><th>set</th>"
            f"<th>heads</th><th>CM</th><th>conflict acc</th><th>agree margin</th></tr>{body}</table>")


def write_plots(doc: dict, out: Path) -> dict:
    """PNGs for every family in a ``localize.json`` document plus ``localize.html``; returns
    ``{"html": path, "png": [paths]}`` (what a report includes)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs: list[str] = []
    parts = [f"<h1>Localization: {html.escape(str(doc.get('run_id')))}</h1>"]
    for fam, res in doc.get("families", {}).items():
        paths = family_plots(res, out)
        pngs += paths
        sp = res["split"]
        parts.append(f"<h2>{html.escape(fam)}</h2><p>split at step {sp['step']} ({html.escape(sp['reason'])}); "
                     f"CM peak at {sp['peak_step']}</p>" + _table_html(res) + _ablation_html(res["ablation"]))
        parts += [f'<img src="{Path(p).name}" style="max-width:100%">' for p in paths]
    page = write_text_atomic(out / "localize.html", "<!doctype html><meta charset='utf-8'><title>mech localize</title>"
                             "<style>td,th{padding:2px 6px;font:12px monospace;border-bottom:1px solid #ddd}</style>"
                             + "\n".join(parts))
    return {"html": str(page), "png": pngs}


def report_assets(out_dir: str | Path) -> dict:
    """Paths a report can include for a run already localized (``<out_dir>/mech``): the HTML page
    and the PNGs; regenerates them from ``localize.json`` if missing."""
    import json

    mdir = Path(out_dir) / "mech"
    path = mdir / "localize.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run mech.localize.localize_run first")
    doc = json.loads(path.read_text())
    pngs = [str(mdir / f"{fam}_{kind}.png") for fam in doc.get("families", {})
            for kind in ("dla", "patch", "attention", "embedding")]
    if not (mdir / "localize.html").exists() or not all(Path(p).exists() for p in pngs):
        return write_plots(doc, mdir)
    return {"html": str(mdir / "localize.html"), "png": pngs}


REPORT_KINDS = ("dla", "patch", "attention")  # the heatmaps the report page embeds, in this order


def report_section(run_dir: str | Path) -> list[str]:
    """A localized run (``ungrok mech localize``) on the report page: per family its top ranked
    components, the ablation check and the heatmaps (embedded); ``[]`` for a run not localized."""
    import json

    from runner.report.html import embed_png, fmt

    run_dir = Path(run_dir)
    if not (run_dir / "mech" / "localize.json").exists():
        return []
    pngs = {Path(p).name: Path(p) for p in report_assets(run_dir)["png"]}
    parts = []
    for fam, res in json.loads((run_dir / "mech" / "localize.json").read_text()).get("families", {}).items():
        rows = "".join(f"<tr><td>{t['rank']}</td><td class=l>{t['component']}</td><td>{fmt(t['competitor_pre'])}</td>"
                       f"<td>{fmt(t['competitor_post'])}</td><td>{fmt(t['growth'])}</td><td>{fmt(t['cross_step'])}</td>"
                       f"<td>{fmt(t.get('patch_post'))}</td></tr>" for t in res["table"][:6])
        ab = res["ablation"]
        abl = "".join(f"<tr><td class=l>{name} {e['heads']}</td><td>{fmt(e['zero']['cm'])}</td>"
                      f"<td>{fmt(e['mean']['cm'])}</td>"
                      f"<td>{fmt(e['zero']['agree_margin'])}</td></tr>" for name, e in ab["sets"].items())
        parts.append(f"<h4>{fam}: components carrying the competitor (split at step {res['split']['step']})</h4>"
                     "<table><tr><th>rank</th><th class=l>component</th><th>competitor before</th><th>after</th>"
                     f"<th>growth</th><th>crosses at</th><th>patching after</th></tr>{rows}</table>"
                     f"<p>Ablation at step {ab['step']}: CM before {fmt(ab['before']['cm'])}.</p><table><tr>"
                     "<th class=l>heads ablated</th><th>CM (zero)</th><th>CM (mean)</th><th>agree margin (zero)</th>"
                     f"</tr>{abl}</table>")
        for kind in REPORT_KINDS:
            png = pngs.get(f"{fam}_{kind}.png")
            if png is not None and png.exists():
                parts.append(embed_png(png))
    return parts
