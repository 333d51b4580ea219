"""Every PNG the library draws: run trajectories, support, dose-response, cross-model, calibration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runner._io import atomic_path
from runner.analysis.audit import Calibration, survival_line
from runner.analysis.dose_response import treatment
from runner.store import RunDir, open_run_store
from runner.trajectory import DISPLACED, NEVER, RECOVERED, Classifier, config_data, dose_window, summary_of

TOP, BOTTOM = 1.02, -0.02  # the accuracy axes' limits


def save(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write the figure atomically (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return Path(path)


@dataclass(frozen=True)
class Bands:
    """The thresholds an accuracy plot draws, all from one classifier (:func:`threshold_bands`)."""

    recovered: float
    displaced: float
    emerged: float

    def spans(self) -> list[tuple[float, float]]:
        """(low, high) of the RECOVERED band and of the DISPLACED band, in that order."""
        return [(self.recovered, TOP), (BOTTOM, self.displaced)]

    @property
    def survival_line(self) -> float:
        """Where an UNSTABLE / PARTIAL final counts as survived (``audit.survived``)."""
        return survival_line(Classifier(recovered=self.recovered, displaced=self.displaced))

    @property
    def recovered_label(self) -> str:
        if self.emerged == self.recovered:
            return f"EMERGED / RECOVERED >= {self.recovered:g}"
        return f"RECOVERED >= {self.recovered:g}"

    @property
    def displaced_label(self) -> str:
        return f"DISPLACED <= {self.displaced:g}"

    @property
    def emerged_label(self) -> str | None:
        """A separate EMERGED line's label, when its threshold differs from RECOVERED's."""
        return None if self.emerged == self.recovered else f"EMERGED (smoothed peak) >= {self.emerged:g}"


def threshold_bands(k: Classifier) -> Bands:
    return Bands(recovered=k.recovered, displaced=k.displaced, emerged=k.emerged)


def draw_bands(ax, k: Classifier) -> Bands:
    """The RECOVERED and DISPLACED bands (and the EMERGED line when it differs) of ``k`` on ``ax``."""
    b = threshold_bands(k)
    (r_lo, r_hi), (d_lo, d_hi) = b.spans()
    ax.axhspan(r_lo, r_hi, color="tab:green", alpha=0.08, label=b.recovered_label)
    ax.axhspan(d_lo, d_hi, color="tab:red", alpha=0.06, label=b.displaced_label)
    if b.emerged_label:
        ax.axhline(b.emerged, color="tab:green", ls="--", lw=0.7, label=b.emerged_label)
    return b


def _shade_window(ax, axm, window: tuple[int, int | None] | None, steps) -> None:
    """Shade the steps that read the intervened stream (a run dosed inside a window)."""
    if window is None:
        return
    for a in (ax, axm):
        a.axvspan(window[0], window[1] if window[1] is not None else steps[-1], color="gold", alpha=0.15,
                  label="dose window" if a is ax else None)


def _run_config(cfg: dict):
    """``cfg`` (a run's config.json) as a RunConfig; None without one, or for a public checkpoint
    series, whose config.json is not a RunConfig."""
    from pydantic import ValidationError

    from runner.config import RunConfig

    if not cfg:
        return None
    try:
        return RunConfig.model_validate(cfg)
    except ValidationError:
        return None


def _class_curves(ax, store, run_cfg, fam: str, steps) -> None:
    """Each cue class's heldout conflict accuracy, thin dashed (a run may keep the rule in one
    class and lose it in the other: the pooled curve then sits near 0.5); nothing without a
    RunConfig to regenerate the items from."""
    from runner.analysis.agree_control import class_series

    if run_cfg is None:
        return
    series = class_series(store, run_cfg, fam)
    for (c, (acc, _cm)), color in zip((series or {}).items(), ("tab:pink", "tab:brown", "tab:olive", "tab:cyan")):
        ax.plot(steps, acc, color=color, lw=0.9, ls="--", label=f"conflict (heldout, {c})")


def plot_run(run_dir: str | Path, path: str | Path | None = None, figures: dict | None = None,
             classifier: Classifier | None = None) -> Path:
    """Two rows per family. Top: conflict and agree accuracy, train (thin) and heldout (thick),
    with the classifier's RECOVERED and DISPLACED bands (:func:`draw_bands`). Bottom: the contrast
    margin CM and the prior pull PM with the collapse onset and the CM zero-crossing marked.

    ``classifier``: the constants the run's labels were computed with (default: the paper's);
    ``figures``: ``{family: figures}`` to annotate with (default: the run's summary under it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    k = classifier or Classifier()
    store = open_run_store(run_dir)
    figures = figures if figures is not None else summary_of(run_dir, k)["families"]
    fams = store.families()
    cfg = config_data(run_dir)
    window, run_cfg = dose_window(cfg), _run_config(cfg)
    fig, axes = plt.subplots(2, len(fams), figsize=(6.2 * len(fams), 6.4), squeeze=False, sharex="col",
                             gridspec_kw={"height_ratios": [3, 2]})
    for j, fam in enumerate(fams):
        ax, axm = axes[0, j], axes[1, j]
        s = store.series(f"{fam}/step")
        draw_bands(ax, k)
        for cond, color in (("conflict", "tab:red"), ("agree", "tab:blue")):
            for split, lw in (("train", 0.8), ("heldout", 2.0)):
                key = f"{fam}/acc_{cond}_{split}"
                if f"acc_{cond}_{split}" in store.metrics(fam):
                    ax.plot(s, store.series(key), color=color, lw=lw, alpha=1.0 if lw > 1 else 0.5,
                            label=f"{cond} ({split})")
        _class_curves(ax, store, run_cfg, fam, s)
        ax.set_ylim(BOTTOM, TOP)
        ax.set_ylabel("forced-choice accuracy")
        f = figures.get(fam, {})
        ax.set_title(f"{fam}: {str(f.get('label', '?')).upper()}", fontsize=10)
        axm.plot(s, store.series(f"{fam}/cm"), color="black", label="CM = log p(rule) - log p(competitor)")
        if "pm" in store.metrics(fam):
            axm.plot(s, store.series(f"{fam}/pm"), color="tab:gray", ls="--", label="PM (prior pull, no cue)")
        axm.axhline(0, color="grey", lw=0.6)
        _shade_window(ax, axm, window, s)
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
    path = Path(path) if path else RunDir(run_dir).trajectory_png
    save(fig, path, dpi=100)
    return path


def plot_support(v: dict, path: Path, classifier: Classifier | None = None) -> Path | None:
    """Conflict final against the support ratio per run, with the DISPLACED and RECOVERED lines of
    ``classifier`` (the verdict's across-runs classifier; default: the paper's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = [f for f, a in v["across"].items() if any(r["support_ratio"] for r in a["runs"])]
    if not fams:
        return None
    colors = {RECOVERED: "tab:green", DISPLACED: "tab:red", NEVER: "tab:gray"}
    fig, axes = plt.subplots(1, len(fams), figsize=(5.5 * len(fams), 4), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        a = v["across"][fam]
        for r in a["runs"]:
            if r["support_ratio"]:
                ax.scatter(r["support_ratio"], r["final"], color=colors.get(r["label"], "tab:orange"), s=30)
        law = a["support_law"].get("support_ratio", {})
        ax.set_xscale("log")
        b = threshold_bands(classifier or Classifier())
        ax.axhline(b.displaced, color="tab:red", ls=":", lw=0.8)
        ax.axhline(b.recovered, color="tab:green", ls=":", lw=0.8)
        ax.set_xlabel("support ratio (windowed, pooled over cue classes)")
        ax.set_ylabel("conflict final (heldout)")
        rho = law.get("spearman_rho")
        ax.set_title(f"{fam}: Spearman rho = {rho:.2f}" if rho is not None else fam, fontsize=10)
    fig.tight_layout()
    save(fig, path, dpi=100)
    return path


def plot_cross_model(xm: dict, dirs: dict, path: Path) -> Path:
    """One panel per family: heldout conflict accuracy against step (symlog), a line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fams = list(xm)
    cols = min(3, len(fams))
    rows = (len(fams) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, fam in zip(axes.flat, fams):
        for r in xm[fam]["models"]:
            st = open_run_store(dirs[r["model"]])
            ax.plot(st.series(f"{fam}/step"), st.series(f"{fam}/acc_conflict_heldout"), marker=".",
                    label=f"{r['model']} ({r['n_params'] / 1e6:.3g}M)")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_ylim(BOTTOM, TOP)
        ax.axhline(0.5, color="grey", lw=0.5)  # chance (two-way forced choice), not a threshold
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("conflict accuracy (heldout)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(fams):]:
        ax.axis("off")
    fig.tight_layout()
    save(fig, path, dpi=90)
    return path


def plot_dose_response(dr: dict, path: Path) -> Path | None:
    """One panel per (intervention, family): CM_final per seed (dots) and seed mean (line) vs dose."""
    if not dr["groups"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = dr["groups"]
    fig, axes = plt.subplots(1, len(gs), figsize=(4.2 * len(gs), 3.4), squeeze=False)
    for ax, g in zip(axes[0], gs):
        xs = [lv["dose"] for lv in g["levels"]]
        for lv in g["levels"]:
            ax.scatter([lv["dose"]] * len(lv["cm_finals"]), lv["cm_finals"], color="tab:gray", s=14, zorder=3)
        ax.plot(xs, [lv["mean_cm_final"] for lv in g["levels"]], color="black", marker="o", label="seed mean")
        ax.axhline(0, color="tab:red", lw=0.7, ls=":")
        ax.set_xscale("symlog", linthresh=min([x for x in xs if x > 0] or [0.01]))
        ax.set_xlabel(f"{treatment(g)} dose (0 = baseline)")
        ax.set_ylabel("CM final (nats)")
        rho = g["rho_cm_final"]
        ax.set_title(f"{g['family']} on {g['corpus']}/{g['budget']}\nrho(dose, CM final) = "
                     f"{rho:+.2f}" if rho is not None else f"{g['family']} on {g['corpus']}", fontsize=9)
    fig.tight_layout()
    save(fig, path, dpi=100)
    return path


def plot_calibration(cal: Calibration, path: Path) -> Path:
    """Final conflict accuracy against the support ratio of each calibration run, f* and its
    interval, the survival line(s) of the calibration's classifier, and the audited corpus's ratio
    with its CI (when it has been assessed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fit, audited = cal.fit, cal.audited
    colors = {RECOVERED: "tab:green", DISPLACED: "tab:red"}
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    for p in cal.points:
        ax.scatter(p["ratio"], p["final"], color=colors.get(p["label"], "tab:orange"), s=28, zorder=3)
    if fit.get("f_star"):
        ax.axvline(fit["f_star"], color="black", lw=1, label=f"f* = {fit['f_star']:.3g} ({fit['method']})")
        if fit.get("ci"):
            ax.axvspan(*fit["ci"], color="grey", alpha=0.2, label="f* interval")
    if audited:
        ax.errorbar([audited["ratio"]], [0.5], xerr=[[audited["ratio"] - audited["ci"][0]],
                                                      [audited["ci"][1] - audited["ratio"]]],
                    fmt="D", color="tab:blue", label=f"audited: {audited['ratio']:.3g} ({audited.get('call', '')})")
    ax.set_xscale("log")
    ax.set_xlabel(f"support ratio ({cal.mode}, pooled over cue classes)")
    ax.set_ylabel("conflict final (heldout)")
    lines = cal.survival_lines or [survival_line(cal.classifier)]
    for line in lines:  # where survived() splits UNSTABLE / PARTIAL
        ax.axhline(line, color="tab:orange", lw=0.6, ls=":")
    ax.set_title(f"{cal.family}: calibration (green recovered, red displaced, orange UNSTABLE or PARTIAL:\n"
                 f"survived iff final >= {' or '.join(f'{x:.3g}' for x in lines)}, dotted line; "
                 "the audited corpus drawn at y = 0.5)", fontsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path, dpi=100)
    return path
