"""What a person looks at for one run: a trajectory table (rich) and a PNG plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import open_run_store
from .summary import write_summary


def plot_run(run_dir: str | Path, path: str | Path | None = None, figures: dict | None = None) -> Path:
    """Two rows per family. Top: conflict and agree accuracy, train (thin) and heldout (thick),
    with the EMERGED (>= 0.8) and DISPLACED (<= 0.6) bands. Bottom: the contrast margin CM and
    the prior pull PM with the collapse onset and the CM zero-crossing marked.

    ``figures``: ``{family: figures}`` to annotate with (default: the run's summary)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    store = open_run_store(run_dir)
    figures = figures if figures is not None else write_summary(run_dir)["families"]
    fams = store.families()
    fig, axes = plt.subplots(2, len(fams), figsize=(6.2 * len(fams), 6.4), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    for j, fam in enumerate(fams):
        ax, axm = axes[0, j], axes[1, j]
        s = store.series(f"{fam}/step")
        ax.axhspan(0.8, 1.02, color="tab:green", alpha=0.08, label="EMERGED / RECOVERED >= 0.8")
        ax.axhspan(-0.02, 0.6, color="tab:red", alpha=0.06, label="DISPLACED <= 0.6")
        for cond, color in (("conflict", "tab:red"), ("agree", "tab:blue")):
            for split, lw in (("train", 0.8), ("heldout", 2.0)):
                key = f"{fam}/acc_{cond}_{split}"
                if f"acc_{cond}_{split}" in store.metrics(fam):
                    ax.plot(s, store.series(key), color=color, lw=lw, alpha=1.0 if lw > 1 else 0.5,
                            label=f"{cond} ({split})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("forced-choice accuracy")
        f = figures.get(fam, {})
        ax.set_title(f"{fam}: {str(f.get('label', '?')).upper()}", fontsize=10)
        axm.plot(s, store.series(f"{fam}/cm"), color="black", label="CM = log p(rule) - log p(competitor)")
        if "pm" in store.metrics(fam):
            axm.plot(s, store.series(f"{fam}/pm"), color="tab:gray", ls="--", label="PM (prior pull, no cue)")
        axm.axhline(0, color="grey", lw=0.6)
        axm.set_ylabel("nats")
        axm.set_xlabel("step")
        for key, color in (("onset", "tab:orange"), ("cm_cross", "tab:purple")):
            if f.get(key) is not None:
                for a in (ax, axm):
                    a.axvline(f[key], color=color, ls=":", lw=1.5, label=f"{key} @ {f[key]}" if a is axm else None)
        ax.legend(fontsize=6.5, loc="lower left")
        axm.legend(fontsize=6.5, loc="lower left")
    fig.suptitle(store.attrs.get("run_id", run_dir.name), fontsize=9)
    fig.tight_layout()
    path = Path(path) if path else run_dir / "trajectory.png"
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def trajectory_table(run_dir: str | Path, every: int = 1):
    """A rich Table: step, loss, and per family conflict/agree accuracy and CM."""
    from rich.table import Table

    store = open_run_store(run_dir)
    fams = store.families()
    t = Table(title=str(store.attrs.get("run_id")))
    t.add_column("step", justify="right")
    t.add_column("loss", justify="right")
    for fam in fams:
        for col in ("conflict", "agree", "CM"):
            t.add_column(f"{fam}\n{col}", justify="right")
    steps = store.steps()
    loss = store.series("train/loss")
    cols = {fam: (store.series(f"{fam}/acc_conflict_heldout"), store.series(f"{fam}/acc_agree_heldout"),
                  store.series(f"{fam}/cm")) for fam in fams}
    for i in range(0, len(steps), every):
        row = [str(int(steps[i])), "" if np.isnan(loss[i]) else f"{loss[i]:.3f}"]
        for fam in fams:
            c, a, m = cols[fam]
            row += [f"{c[i]:.2f}", f"{a[i]:.2f}", f"{m[i]:+.2f}"]
        t.add_row(*row)
    return t


def figures_table(summary: dict):
    from rich.table import Table

    t = Table(title="figures (heldout; classifier constants in summary.json)")
    keys = ["label", "peak", "peak_step", "final", "agree_final", "control_valid", "onset", "cm_cross",
            "cross_lag", "cm_final", "margin_valid"]
    t.add_column("family")
    for k in keys:
        t.add_column(k, justify="right")
    for fam, f in summary["families"].items():
        t.add_row(fam, *[_fmt(f.get(k)) for k in keys])
    return t


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
