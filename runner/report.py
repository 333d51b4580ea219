"""What a person looks at for one run: a trajectory table (rich) and a PNG plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import RunStore
from .summary import write_summary


def plot_run(run_dir: str | Path, path: str | Path | None = None) -> Path:
    """One panel per family: heldout conflict/agree accuracy (left axis) and CM (right axis),
    with the collapse onset and the CM zero-crossing marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    store = RunStore(run_dir / "store.zarr")
    summary = write_summary(run_dir)
    fams = store.families()
    fig, axes = plt.subplots(1, len(fams), figsize=(6.5 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        s = store.series(f"{fam}/step")
        ax.plot(s, store.series(f"{fam}/acc_conflict_heldout"), color="tab:red", label="conflict (heldout)")
        ax.plot(s, store.series(f"{fam}/acc_agree_heldout"), color="tab:blue", label="agree (heldout)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("step")
        ax.set_ylabel("forced-choice accuracy")
        ax2 = ax.twinx()
        ax2.plot(s, store.series(f"{fam}/cm"), color="black", ls="--", lw=1, label="CM (nats)")
        ax2.axhline(0, color="grey", lw=0.5)
        ax2.set_ylabel("contrast margin CM (nats)")
        f = summary["families"][fam]
        for key, color in (("onset", "tab:orange"), ("cm_cross", "tab:purple")):
            if f.get(key) is not None:
                ax.axvline(f[key], color=color, ls=":", label=f"{key} {f[key]}")
        ax.set_title(f"{fam}: {f.get('label')}")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower left")
    fig.suptitle(store.attrs.get("run_id", run_dir.name), fontsize=9)
    fig.tight_layout()
    path = Path(path) if path else run_dir / "trajectory.png"
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def trajectory_table(run_dir: str | Path, every: int = 1):
    """A rich Table: step, loss, and per family conflict/agree accuracy and CM."""
    from rich.table import Table

    store = RunStore(Path(run_dir) / "store.zarr")
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
