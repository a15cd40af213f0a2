"""The leaderboard: each remedy at its best setting (``report_stats.leaderboard``), as CSV, Markdown and a
chart a person reads at a glance: gap closed against compute, one labelled point per arm, one panel per
protocol (rows) and condition (columns: dataset / model / optimiser). The chart is driven by the arms in
the rows (their ``remedy`` labels), so it grows with the registry: a label column beside each panel keeps
15 or more arms readable.
"""
from __future__ import annotations

from .io import atomic_path
from .report_registry import register_report
from .report_stats import leaderboard
from .report_style import figure, finish, label_points, log_axis, style_of
from .report_tables import markdown

PROTOCOL_NAMES = {"batch": "batch (phase 2)", "online": "online (final round)"}


def leaderboard_chart(best, pdf_path, title: str = "") -> None:
    """Gap closed (mean over seeds, bars: one std) against time relative to random init (log axis), one
    point per arm at its best setting, labelled beside the panel; reference lines at gap 0 (the warm
    start), gap 1 (random init) and compute 1 (random init's). Rows: protocols; columns: conditions."""
    keys = ["dataset", "model", "optimizer"]
    protocols = list(dict.fromkeys(best["protocol"])) or ["batch"]
    conditions = list(dict.fromkeys(best[keys].itertuples(index=False, name=None))) or [("", "", "")]
    arms = best.groupby(["protocol"] + keys, sort=False).size().max() if len(best) else 1
    fig, axes = figure(len(protocols), len(conditions), panel=(4.0, max(3.2, 0.17 * arms + 1.0)),
                       extra_width=1.4 * len(conditions))
    for row, protocol in zip(axes, protocols):
        for ax, cond in zip(row, conditions):
            part = best[(best["protocol"] == protocol)]
            for c, v in zip(keys, cond):
                part = part[part[c] == v]
            # gap closed is undefined (inf, NaN) where some seed's warm start ties random init: not drawn
            part = part[part["gap_closed_mean"].abs().lt(float("inf")) & part["time_rel"].abs().lt(float("inf"))]
            ax.axhline(0, color=style_of("warm")[0], lw=0.8, ls=":")
            ax.axhline(1, color=style_of("random")[0], lw=0.8, ls=":")
            ax.axvline(1, color="grey", lw=0.8, ls=":")
            for remedy, r in zip(part["remedy"], part.itertuples(index=False)):
                color, marker = style_of(remedy)
                ax.errorbar(r.time_rel, r.gap_closed_mean, yerr=0 if r.gap_closed_std != r.gap_closed_std else r.gap_closed_std,
                            color=color, marker=marker, ms=5, lw=0, elinewidth=1, capsize=2)
            if len(part):
                log_axis(ax, "x")
                ax.margins(x=0.15, y=0.1)
                label_points(ax, part["time_rel"], part["gap_closed_mean"], part["remedy"])
            ax.set_xlabel("compute: time relative to random init")
            ax.set_ylabel("gap closed (1 = random init, 0 = warm)")
            ax.set_title(f"{PROTOCOL_NAMES.get(protocol, protocol)}: {' / '.join(map(str, cond))}")
    finish(fig, pdf_path, title)


@register_report("leaderboard", ("summary", "rounds"), outputs=("csv", "md", "pdf"),
                 shows="remedies for warm starting: accuracy, gap closed and compute")
def write_leaderboard(summary, rounds, csv_path, md_path, pdf_path, title: str = ""):
    """The leaderboard: per protocol, each remedy at its best setting, sorted by gap closed, as CSV and
    Markdown; the chart (PDF and PNG) plots each arm's gap closed (mean, bars one std over seeds) against
    its compute relative to random init, each point labelled, one panel per protocol and condition
    (dataset / model / optimiser; online: the final round)."""
    settings, best = leaderboard(summary, rounds)
    with atomic_path(csv_path) as tmp:
        best.to_csv(tmp, index=False, float_format="%.4f")
    shown = best.assign(
        **{"val. acc. %": [f"{100 * m:.1f} ({100 * s:.1f})" for m, s in zip(best["val_acc_mean"], best["val_acc_std"].fillna(0))],
           "gap closed": [f"{m:.2f} ({s:.2f})" for m, s in zip(best["gap_closed_mean"], best["gap_closed_std"].fillna(0))],
           "time vs random": [f"{t:.2f}x" for t in best["time_rel"]],
           "samples vs random": [f"{t:.2f}x" for t in best["samples_rel"]],
           "converged": [f"{c} of {n}" for c, n in zip(best["converged"], best["seeds"])]})
    columns = ["protocol", "dataset", "model", "optimizer", "remedy", "setting", "val. acc. %", "gap closed",
               "time vs random", "samples vs random", "grid_size", "converged"]
    note = ("Each remedy at its best setting (the highest mean validation accuracy over its grid; grid_size "
            "settings tried), mean (std) over seeds. Gap closed: (remedy - warm) / (random - warm), per seed. "
            "Compute: training plus init time (and samples processed) in phase 2 (batch) or over the whole "
            "stream (online), relative to random init.")
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# {title}\n\n{note}\n\n{markdown(shown[columns])}")
    leaderboard_chart(best, pdf_path, title)
    return best
