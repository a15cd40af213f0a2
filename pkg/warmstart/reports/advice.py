"""The answer as one page: from a remedies experiment (the batch protocol), per dataset x model x optimiser,
what a warm start costs in accuracy against random init, what it saves in compute, which remedy recovers
the most and the cheapest that recovers everything, and a one-line recommendation, with the uncertainty
stated: the seeds' paired differences, their 95% t interval, and "not enough evidence" where it is too wide.

Every number is the leaderboard's (``reports.stats.leaderboard``): each arm at the setting chosen on
validation accuracy, its accuracy on the test split (validation only where runs lack a test accuracy, and
then the page says so), its paired differences to the warm start and to random init with their 95% t
intervals, the warm start's gap to random init and whether it is distinguishable from zero, gap closed (a
ratio of means, only where there is a gap) and compute relative to random init. Compute is phase 2's (the
phase-1 model is the one the user already has): samples processed (machine-free) and training time.
"""
from __future__ import annotations

from warmstart.core.io import atomic_path
from warmstart.reports.registry import Lazy, register_report
from warmstart.reports.stats import LEVEL, SPLIT_NAMES, leaderboard, paired_interval  # noqa: F401 (paired_interval: public here)
from warmstart.reports.style import figure, finish, label_points, style_of
from warmstart.reports.tables import markdown

pd = Lazy("pandas")

MEANINGFUL = 0.01  # an accuracy difference (1 point) worth acting on: a CI reaching past it is not "no cost"
KEYS = ["dataset", "model", "optimizer"]


def _ci(row, split: str, name: str) -> dict:
    return {"mean": row[f"{split}_{name}_mean"], "low": row[f"{split}_{name}_low"],
            "high": row[f"{split}_{name}_high"], "n": int(row["paired_seeds"])}


def verdict(ci: dict, meaningful: float = MEANINGFUL) -> str:
    """What the seeds say about a difference (remedy or warm start minus random init): 'worse' or
    'better' when the interval excludes 0, 'same' when it lies within +-``meaningful``, else 'unclear'
    (also with fewer than 2 seeds)."""
    if ci["n"] < 2 or ci["low"] != ci["low"]:
        return "unclear"
    if ci["high"] < 0:
        return "worse"
    if ci["low"] > 0:
        return "better"
    if -meaningful <= ci["low"] and ci["high"] <= meaningful:
        return "same"
    return "unclear"


def setting_name(setting: str) -> str:
    """'sp shrink=0.3 perturb=0.01' -> 'sp (shrink=0.3, perturb=0.01)'; a bare label stays as it is."""
    label, *options = str(setting).split(" ")
    return f"{label} ({', '.join(options)})" if options else label


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def recovers(arm: dict) -> bool:
    """Whether an arm recovers what the warm start lost: distinguishably better than the warm start (its
    interval excludes 0) and at least random init's mean accuracy (on the report split)."""
    return arm["vs_warm"] == "better" and arm["vs_random_mean"] >= 0


def advice(summary) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """(one row per condition: the page's numbers; one row per arm at its chosen setting: the leaderboard's
    row plus its verdicts against the warm start and random init), from a remedies experiment's summary.
    Where the gap (random - warm) is not distinguishable from zero there is no gap closed and no "cheapest
    full recovery"; a remedy whose difference to the warm start has an interval that includes 0 is "not
    enough evidence"; an arm whose interventions never acted is left out of both."""
    _, best = leaderboard(summary, None)
    best = best[best["protocol"] == "batch"]
    split = best["report_split"].iloc[0] if len(best) else "test"
    arms, out = [], []
    for cond, part in best.groupby(KEYS, sort=False):
        rows = []
        for r in part.to_dict("records"):
            vs_warm, vs_random = _ci(r, split, "vs_warm"), _ci(r, split, "vs_random")
            rows.append({**r, "vs_random_mean": vs_random["mean"], "vs_random_low": vs_random["low"],
                         "vs_random_high": vs_random["high"], "vs_random": verdict(vs_random),
                         "vs_warm_mean": vs_warm["mean"], "vs_warm_low": vs_warm["low"],
                         "vs_warm_high": vs_warm["high"], "vs_warm": verdict(vs_warm)})
        arms += rows
        warm = next(r for r in rows if r["role"] == "baseline")
        target = next(r for r in rows if r["role"] == "target")
        remedies = [r for r in rows if r["role"] == "remedy" and r["status"] != "not exercised"]
        gap = bool(warm["gap_exists"])
        most = sorted(remedies, key=lambda r: (-r["vs_warm_mean"], r["samples_rel"]))[:1]
        cheapest = sorted((r for r in remedies if gap and recovers(r)),
                          key=lambda r: (r["samples_rel"], r["time_rel"]))[:1]
        acc = f"{split}_acc_mean"
        row = {**dict(zip(KEYS, cond)), "report_split": split, "seeds": int(warm["paired_seeds"]),
               "random_acc": target[acc], "warm_acc": warm[acc],
               "warm_cost_mean": -warm["vs_random_mean"], "warm_cost_low": -warm["vs_random_high"],
               "warm_cost_high": -warm["vs_random_low"], "warm_vs_random": warm["vs_random"], "gap_exists": gap,
               "warm_samples_rel": warm["samples_rel"], "warm_time_rel": warm["time_rel"],
               "not_exercised": ", ".join(r["remedy"] for r in rows if r["status"] == "not exercised"),
               "best_remedy": None, "best_setting": None, "best_gap_closed": float("nan"),
               "best_vs_warm_mean": float("nan"), "best_vs_warm_low": float("nan"),
               "best_vs_warm_high": float("nan"), "best_vs_warm": None,
               "best_acc": float("nan"), "best_samples_rel": float("nan"), "best_time_rel": float("nan"),
               "best_vs_random": None,
               "cheapest_recovering": None, "cheapest_acc": float("nan"), "cheapest_samples_rel": float("nan"),
               "cheapest_time_rel": float("nan")}
        if most:
            m = most[0]
            row.update(best_remedy=m["remedy"], best_setting=m["setting"], best_gap_closed=m["gap_closed"],
                       best_vs_warm_mean=m["vs_warm_mean"], best_vs_warm_low=m["vs_warm_low"],
                       best_vs_warm_high=m["vs_warm_high"], best_vs_warm=m["vs_warm"],
                       best_acc=m[acc], best_samples_rel=m["samples_rel"], best_time_rel=m["time_rel"],
                       best_vs_random=m["vs_random"])
        if cheapest:
            c = cheapest[0]
            row.update(cheapest_recovering=c["setting"], cheapest_acc=c[acc],
                       cheapest_samples_rel=c["samples_rel"], cheapest_time_rel=c["time_rel"])
        row["recommendation"] = recommendation(row)
        out.append(row)
    return pd.DataFrame(out), pd.DataFrame(arms)


def recommendation(row: dict) -> str:
    """One line. Not enough evidence when the warm start's cost is unclear at this many seeds; otherwise
    a plain warm start when it costs nothing measurable, the cheapest remedy that matches random init
    when it saves compute, else random init."""
    cost = row["warm_vs_random"]
    if cost == "unclear":
        return (f"not enough evidence: run more seeds (the warm start's cost, {_points(row['warm_cost_mean'])} "
                f"points, has a {LEVEL:.0%} interval of [{_points(row['warm_cost_low'])}, "
                f"{_points(row['warm_cost_high'])}] at {row['seeds']} seed(s))")
    if cost in ("same", "better"):
        return (f"warm-start: {_points(row['warm_acc'] - row['random_acc'])} points against random init, "
                f"{row['warm_samples_rel']:.2f}x compute")
    if row["cheapest_recovering"] is not None and row["cheapest_samples_rel"] < 1:
        return (f"warm-start with {setting_name(row['cheapest_recovering'])}: "
                f"{_points(row['cheapest_acc'] - row['warm_acc'])} points, {row['cheapest_samples_rel']:.2f}x compute")
    if row["cheapest_recovering"] is not None:
        return (f"train from random init: the cheapest remedy that matches it, "
                f"{setting_name(row['cheapest_recovering'])}, needs {row['cheapest_samples_rel']:.2f}x its compute")
    return (f"train from random init: a warm start costs {_points(row['warm_cost_mean'])} points and no remedy "
            f"recovers them (or warm-start plainly for {row['warm_samples_rel']:.2f}x compute)")


def _interval(mean: float, low: float, high: float) -> str:
    return f"{_points(mean)} [{_points(low)}, {_points(high)}]" if low == low else f"{_points(mean)} (one seed: no interval)"


def _time(rel: float) -> str:
    return f"{rel:.2f}x the time" if rel == rel else "time not comparable (stacked unlike random init)"


def sentences(row) -> list[str]:
    """The page's plain sentences for one condition."""
    n, cost = row["seeds"], row["warm_vs_random"]
    split = SPLIT_NAMES[row["report_split"]]
    lines = []
    spread = (f"{LEVEL:.0%} interval [{_points(row['warm_cost_low'])}, {_points(row['warm_cost_high'])}]"
              if n >= 2 else "one seed: no interval, no spread to judge by")
    judged = {"worse": "a real cost, distinguishable from zero", "better": "a real gain, distinguishable from zero",
              "same": f"indistinguishable from zero and within {100 * MEANINGFUL:.0f} point",
              "unclear": f"not distinguishable from zero at {n} seed(s)"}[cost]
    lines.append(f"A warm start costs {_points(row['warm_cost_mean'])} {split} accuracy points against random "
                 f"init ({100 * row['warm_acc']:.1f}% vs {100 * row['random_acc']:.1f}%; {spread}): {judged}.")
    time = (f"{row['warm_time_rel']:.2f}x the training time" if row["warm_time_rel"] == row["warm_time_rel"]
            else "a training time not comparable (stacked unlike random init)")
    saving = (f", saving {100 * (1 - row['warm_samples_rel']):.0f}% of the samples"
              + (f" and {100 * (1 - row['warm_time_rel']):.0f}% of the time" if row["warm_time_rel"] == row["warm_time_rel"] else ""))
    lines.append(f"It needs {row['warm_samples_rel']:.2f}x the training samples and {time} of random init in "
                 f"phase 2{saving}.")
    if not row["gap_exists"]:
        lines.append("No gap to close: the warm start is not distinguishably worse than random init, so no "
                     "remedy's gap closed or full recovery is given.")
    if row["best_remedy"] is not None:
        diff = _interval(row["best_vs_warm_mean"], row["best_vs_warm_low"], row["best_vs_warm_high"])
        closed = f"gap closed {row['best_gap_closed']:.2f} (1 = random init), " if row["gap_exists"] else ""
        evidence = ("" if row["best_vs_warm"] == "better" else
                    "; not enough evidence that it beats the plain warm start (its interval includes 0)"
                    if row["best_vs_warm"] in ("unclear", "same") else
                    "; it is worse than the plain warm start" if row["best_vs_warm"] == "worse" else "")
        lines.append(f"The remedy with the largest gain over the warm start is {setting_name(row['best_setting'])}: "
                     f"{diff} points over it, {closed}{100 * row['best_acc']:.1f}% at "
                     f"{row['best_samples_rel']:.2f}x the samples ({_time(row['best_time_rel'])}) of random init"
                     f"{evidence}.")
    if row["gap_exists"] and row["cheapest_recovering"] is not None:
        lines.append(f"The cheapest that recovers (distinguishably better than the warm start, at least random "
                     f"init's mean) is {setting_name(row['cheapest_recovering'])}, at "
                     f"{row['cheapest_samples_rel']:.2f}x the samples ({_time(row['cheapest_time_rel'])}).")
    elif row["gap_exists"]:
        lines.append("No remedy recovers as much as random init (distinguishably better than the warm start "
                     "and at least random init's mean).")
    if row["not_exercised"]:
        lines.append(f"Not exercised (their interventions reset no unit in any run, so they never acted): "
                     f"{row['not_exercised']}.")
    return lines


def note(split: str) -> str:
    chosen = ("Each remedy's setting is chosen on validation accuracy (the leaderboard's choice) and its "
              "numbers are on the test split, which played no part in the choice." if split == "test" else
              "Each remedy's setting is chosen on validation accuracy and, because some runs have no test "
              "accuracy, its numbers are on that same validation set: optimistic, more so for larger grids.")
    return (f"From the batch protocol of a remedies experiment: phase 2 (the whole pool) after a phase-1 model "
            f"on part of it. {chosen} Accuracy differences are paired per seed (mean and {LEVEL:.0%} t interval "
            f"over seeds); a difference is 'distinguishable from zero' when its interval excludes 0, and 'not "
            f"enough evidence' is said when an interval includes 0 (for the warm start's cost: and reaches "
            f"past +-{100 * MEANINGFUL:.0f} point). Gap closed and the cheapest full recovery are given only "
            f"where the warm start's gap to random init is distinguishable from zero. Compute: samples "
            f"processed (machine-free) and time, training plus init, relative to random init. In a "
            f"recommendation to warm-start with a remedy, the points are its gain over the plain warm start.")


NOTE = note("test")


def _best_cell(r) -> str:
    if r["best_setting"] is None or r["best_setting"] != r["best_setting"]:
        return "-"
    diff = _interval(r["best_vs_warm_mean"], r["best_vs_warm_low"], r["best_vs_warm_high"])
    closed = f"gap closed {r['best_gap_closed']:.2f}, " if r["gap_exists"] else ""
    evidence = "" if r["best_vs_warm"] == "better" else " (not enough evidence)"
    return f"{setting_name(r['best_setting'])}: {diff} vs warm, {closed}{r['best_samples_rel']:.2f}x{evidence}"


def _recovery_cell(r) -> str:
    if not r["gap_exists"]:
        return "no gap to close"
    s = r["cheapest_recovering"]
    return "none" if s is None or s != s else f"{setting_name(s)} at {r['cheapest_samples_rel']:.2f}x"


@register_report("advice", "summary", outputs=("csv", "md", "pdf"),
                 shows="the answer for your data: warm-start or not, and with which remedy")
def write_advice(summary, csv_path, md_path, pdf_path, title: str = ""):
    """The advice page (Markdown: sentences, one small table and the recommendation per condition), its
    numbers as CSV, and a chart (PDF and PNG): each arm's accuracy difference to random init (mean and
    95% interval over seeds) against its compute."""
    page, arms = advice(summary)
    with atomic_path(csv_path) as tmp:
        page.to_csv(tmp, index=False, float_format="%.4f")
    split = page["report_split"].iloc[0] if len(page) else "test"
    records = page.to_dict("records")
    table = pd.DataFrame({
        "dataset / model / optimiser": [" / ".join(map(str, r)) for r in page[KEYS].itertuples(index=False)],
        "seeds": page["seeds"],
        f"warm-start cost ({SPLIT_NAMES[split]} acc. points, {LEVEL:.0%} CI)": [
            _interval(r["warm_cost_mean"], r["warm_cost_low"], r["warm_cost_high"]) for r in records],
        "warm compute": [f"{r['warm_samples_rel']:.2f}x samples, {_time(r['warm_time_rel'])}" for r in records],
        "largest gain over warm": [_best_cell(r) for r in records],
        "cheapest full recovery": [_recovery_cell(r) for r in records],
    })
    parts = [f"# {title}", "", note(split), ""]
    for row in records:
        parts += [f"## {row['dataset']} / {row['model']} / {row['optimizer']}", "",
                  f"**Recommendation: {row['recommendation']}.**", "", *[f"- {s}" for s in sentences(row)], ""]
    parts += ["## In one table", "", markdown(table)]
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(parts))
    advice_chart(arms, pdf_path, title)
    return page


def advice_chart(arms, pdf_path, title: str = "") -> None:
    """Per condition: accuracy (the report split's) minus random init's (points; bars: the 95% interval
    over paired seeds) against samples relative to random init, one labelled point per arm at its chosen
    setting (hollow: not exercised)."""
    conditions = list(dict.fromkeys(arms[KEYS].itertuples(index=False, name=None))) or [("", "", "")]
    fig, axes = figure(1, len(conditions), extra_width=1.2 * len(conditions))
    for ax, cond in zip(axes[0], conditions):
        part = arms
        for k, v in zip(KEYS, cond):
            part = part[part[k] == v]
        ax.axhline(0, color=style_of("random")[0], lw=0.8, ls=":")
        ax.axvline(1, color="grey", lw=0.8, ls=":")
        for r in part.itertuples(index=False):
            color, marker = style_of(r.remedy)
            low, high = r.vs_random_low, r.vs_random_high
            err = [[100 * (r.vs_random_mean - low)], [100 * (high - r.vs_random_mean)]] if low == low else None
            ax.errorbar(r.samples_rel, 100 * r.vs_random_mean, yerr=err, color=color, marker=marker, ms=5, lw=0,
                        elinewidth=1, capsize=2, mfc="none" if r.status == "not exercised" else color)
        if len(part):
            ax.margins(x=0.2, y=0.15)
            label_points(ax, part["samples_rel"], 100 * part["vs_random_mean"], part["remedy"])
        ax.set_xlabel("compute: samples relative to random init")
        split = SPLIT_NAMES[part["report_split"].iloc[0]] if len(part) else "test"
        ax.set_ylabel(f"{split} acc. minus random init (points)")
        ax.set_title(" / ".join(map(str, cond)))
    finish(fig, pdf_path, title)
