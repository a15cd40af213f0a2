"""The leaderboard: each remedy at the setting chosen on validation accuracy, reported on the test split
(``reports.stats.leaderboard``), as CSV, Markdown and a chart a person reads at a glance: each arm's
accuracy minus the warm start's (points, 95% t interval over paired seeds) against its compute relative to
random init, one labelled point per arm; per protocol two rows of panels (compute as samples processed,
the machine-free axis; then as time), one column per condition (dataset / model / optimiser). The chart is
driven by the arms in the rows (their ``remedy`` labels), so it grows with the registry: a label column
beside each panel keeps 15 or more arms readable.
"""
from __future__ import annotations

import math

from warmstart.core.io import atomic_path
from warmstart.reports.registry import register_report
from warmstart.reports.stats import LEVEL, SPLIT_NAMES, leaderboard
from warmstart.reports.style import figure, finish, label_points, log_axis, style_of
from warmstart.reports.tables import markdown

PROTOCOL_NAMES = {"batch": "batch (phase 2)", "online": "online (final round)"}
KEYS = ["dataset", "model", "optimizer"]
VIEWS = (("samples_rel", "compute: samples processed relative to random init"),
         ("time_rel", "compute: time relative to random init (per-run share)"))


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x != x


def points(mean: float, low: float, high: float, n: int | None = None) -> str:
    """A paired difference in points: '+1.2 [+0.3, +2.1]', or '+1.2 (1 seed: no interval)'."""
    if _nan(mean):
        return "n/a"
    if _nan(low):
        return f"{100 * mean:+.1f} ({n if n is not None else 1} seed: no interval)"
    return f"{100 * mean:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def gap_sentence(r, split: str) -> str:
    """The condition's gap, random init minus the warm start, and whether there is one to close."""
    name = SPLIT_NAMES[split]
    gap = points(r[f"{split}_gap_mean"], r[f"{split}_gap_low"], r[f"{split}_gap_high"])
    if r["gap_exists"]:
        return f"random - warm = {gap} points ({name} acc.): a gap, distinguishable from zero"
    return f"random - warm = {gap} points ({name} acc.): no gap to close (not distinguishable from zero)"


def leaderboard_table(best):
    """The Markdown table's columns, each naming the split its numbers are on."""
    import pandas as pd

    split = best["report_split"].iloc[0] if len(best) else "test"
    name = SPLIT_NAMES[split]

    def delta(r, which):
        if r["status"] == "not exercised":
            return "not exercised"
        return points(r[f"{split}_{which}_mean"], r[f"{split}_{which}_low"], r[f"{split}_{which}_high"],
                      r["paired_seeds"])

    def gap(r):
        if r["status"] == "not exercised":
            return "not exercised"
        return "no gap to close" if not r["gap_exists"] else f"{r['gap_closed']:.2f}"

    def units(r):
        if not r["interventions"]:
            return "-"
        return "n/a (not recorded)" if _nan(r["units_reset_mean"]) else f"{r['units_reset_mean']:.1f}"

    def time(r):
        if _nan(r["time_rel"]):
            return f"n/a ({r['stacked_seeds']:g} seed(s) per stack, unlike random init)"
        return f"{r['time_rel']:.2f}x"

    rows = [r for _, r in best.iterrows()]
    table = {"protocol": best["protocol"], **{k: best[k] for k in KEYS}, "arm": best["remedy"],
             "setting": best["setting"], "settings tried": best["grid_size"],
             "val. acc. % (selection)": [f"{100 * r['val_acc_mean']:.1f}" for r in rows]}
    if split == "test":
        table["test acc. %"] = [f"{100 * r['test_acc_mean']:.1f} ({0 if _nan(r['test_acc_std']) else 100 * r['test_acc_std']:.1f})"
                                for r in rows]
    table.update({
        f"{name} acc. - warm (points, {LEVEL:.0%} CI)": [delta(r, "vs_warm") for r in rows],
        f"{name} acc. - random (points, {LEVEL:.0%} CI)": [delta(r, "vs_random") for r in rows],
        f"gap closed ({name})": [gap(r) for r in rows],
        "units reset / run": [units(r) for r in rows],
        "samples vs random": [f"{r['samples_rel']:.2f}x" for r in rows],
        "time vs random": [time(r) for r in rows],
        "converged": [f"{r['converged']} of {r['seeds']}" for r in rows]})
    return pd.DataFrame(table)


def note(best) -> str:
    split = best["report_split"].iloc[0] if len(best) else "test"
    chosen = ("Each arm at its setting **chosen on validation accuracy** (the highest mean over its grid; "
              "'settings tried': the grid's size) and **reported on the test split**, which played no part "
              "in the choice.") if split == "test" else (
              "**Reported on validation accuracy, the same data each arm's setting was chosen on** (the "
              "highest mean over its grid; 'settings tried': the grid's size): some runs have no test "
              "accuracy (made before it was recorded, or a data set without a test split), so an arm with "
              "a larger grid is favoured. Run them again for test numbers.")
    return (f"{chosen} Differences are paired per seed (the same seed's warm-start and random-init runs): "
            f"mean and {LEVEL:.0%} Student-t interval over seeds (n - 1 degrees of freedom; one seed: no "
            f"interval). Gap closed = mean(arm - warm) / mean(random - warm), shown only where random - warm "
            f"is distinguishable from zero (its interval excludes 0); otherwise 'no gap to close'. An arm "
            f"whose interventions reset no unit in any run is 'not exercised' (it never acted: its "
            f"differences are the warm start's noise). Units reset: per run (online: per stream, all rounds). "
            f"Compute, relative to random init: samples processed (training and init; the machine-free "
            f"axis) and time (training and init, interventions included; a stacked run's time is its share "
            f"of its stack's, so an arm's time is compared only where its runs were stacked as random "
            f"init's were, else n/a). Batch: phase 2; online: the whole stream, accuracy of the final round.")


def leaderboard_chart(best, pdf_path, title: str = "") -> None:
    """Per protocol two rows of panels, one column per condition: each arm's accuracy on the report split
    minus the warm start's (points; bars: the 95% t interval over paired seeds; none with one seed)
    against its compute relative to random init, samples processed (first row) and time (second row),
    log axis; one labelled point per arm. Reference lines: 0 (the warm start), random init's difference
    (gap closed 1, drawn only where the gap is distinguishable from zero; the panel says 'no gap to
    close' otherwise) and compute 1. An arm not exercised is a hollow point labelled so; an arm whose time
    is not comparable (stacked unlike random init) is left out of the time row, and the panel names it."""
    protocols = list(dict.fromkeys(best["protocol"])) or ["batch"]
    conditions = list(dict.fromkeys(best[KEYS].itertuples(index=False, name=None))) or [("", "", "")]
    arms = best.groupby(["protocol"] + KEYS, sort=False).size().max() if len(best) else 1
    split = best["report_split"].iloc[0] if len(best) else "test"
    fig, axes = figure(2 * len(protocols), len(conditions), panel=(4.0, max(3.2, 0.17 * arms + 1.0)),
                       extra_width=1.8 * len(conditions))
    for p, protocol in enumerate(protocols):
        for (view, xlabel), row in zip(VIEWS, axes[2 * p: 2 * p + 2]):
            for ax, cond in zip(row, conditions):
                part = best[best["protocol"] == protocol]
                for c, v in zip(KEYS, cond):
                    part = part[part[c] == v]
                _panel(ax, part, view, split)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"{SPLIT_NAMES[split]} acc. minus warm start (points)")
                ax.set_title(f"{PROTOCOL_NAMES.get(protocol, protocol)}: {' / '.join(map(str, cond))}")
    finish(fig, pdf_path, title)


def _panel(ax, part, view: str, split: str) -> None:
    from matplotlib.transforms import blended_transform_factory

    mean, low, high = (f"{split}_vs_warm_{k}" for k in ("mean", "low", "high"))
    ax.axhline(0, color=style_of("warm")[0], lw=0.8, ls=":")
    ax.axvline(1, color="grey", lw=0.8, ls=":")
    left = blended_transform_factory(ax.transAxes, ax.transData)
    if len(part):
        r = part.iloc[0]
        if r["gap_exists"]:
            gap = 100 * r[f"{split}_gap_mean"]
            ax.axhline(gap, color=style_of("random")[0], lw=0.8, ls=":")
            ax.text(0.01, gap, "gap closed 1", transform=left, fontsize=6, va="bottom", color="0.3")
            ax.text(0.01, 0, "gap closed 0", transform=left, fontsize=6, va="bottom", color="0.3")
        else:
            ax.text(0.01, 0.98, "no gap to close: random - warm\nnot distinguishable from zero",
                    transform=ax.transAxes, fontsize=6, va="top", color="0.3")
    shown = part[part[view].abs().lt(float("inf"))]
    left_out = [str(x) for x in part.loc[~part.index.isin(shown.index), "remedy"]]
    labels = []
    for r in shown.itertuples(index=False):
        color, marker = style_of(r.remedy)
        m, lo, hi = getattr(r, mean), getattr(r, low), getattr(r, high)
        err = None if _nan(lo) else [[100 * (m - lo)], [100 * (hi - m)]]
        idle = r.status == "not exercised"
        ax.errorbar(getattr(r, view), 100 * m, yerr=err, color=color, marker=marker, ms=5, lw=0, elinewidth=1,
                    capsize=2, mfc="none" if idle else color)
        labels.append(f"{r.remedy} (not exercised)" if idle else r.remedy)
    if len(shown):
        log_axis(ax, "x")
        ax.margins(x=0.15, y=0.1)
        label_points(ax, shown[view], 100 * shown[mean], labels,
                     colors=[style_of(x)[0] for x in shown["remedy"]])
    if left_out:
        ax.text(0.99, 0.01, "not comparable, left out: " + ", ".join(left_out), transform=ax.transAxes,
                fontsize=6, ha="right", va="bottom", color="0.3")


@register_report("leaderboard", ("summary", "rounds"), outputs=("csv", "md", "pdf"),
                 shows="remedies for warm starting: accuracy against the warm start and random init, and compute")
def write_leaderboard(summary, rounds, csv_path, md_path, pdf_path, title: str = ""):
    """The leaderboard: per protocol and condition, each remedy at the setting chosen on validation
    accuracy, reported on the test split, sorted by its accuracy minus the warm start's, as CSV and
    Markdown; the chart (PDF and PNG) plots each arm's accuracy minus the warm start's (mean, bars the 95%
    t interval over paired seeds) against its compute relative to random init (samples processed; time
    below), each point labelled, one panel per protocol, compute axis and condition (dataset / model /
    optimiser; online: the final round)."""
    settings, best = leaderboard(summary, rounds)
    with atomic_path(csv_path) as tmp:
        best.to_csv(tmp, index=False, float_format="%.4f")
    split = best["report_split"].iloc[0] if len(best) else "test"
    gaps = []
    for (protocol, *cond), part in best.groupby(["protocol"] + KEYS, sort=False):
        gaps.append(f"- {protocol}, {' / '.join(map(str, cond))}: {gap_sentence(part.iloc[0], split)}")
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# {title}\n\n{note(best)}\n\n" + "\n".join(gaps) + f"\n\n{markdown(leaderboard_table(best))}")
    leaderboard_chart(best, pdf_path, title)
    return best
