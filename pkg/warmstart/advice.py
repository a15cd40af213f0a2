"""The answer as one page: from a remedies experiment (the batch protocol), per dataset x model x optimiser,
what a warm start costs in accuracy against random init, what it saves in compute, which remedy recovers
the most and the cheapest that recovers everything, and a one-line recommendation, with the uncertainty
stated: the seeds' paired differences, their 95% t interval, and "not enough evidence" where it is too wide.

Every number is the leaderboard's (``report_stats.leaderboard``: the arms' means, gap closed and compute
relative to random init; ``report_stats._protocol_rows``: the per-seed rows it averages); the advice only
adds the paired differences to random init and their intervals. Compute is phase 2's (the phase-1 model is
the one the user already has): samples processed (machine-free) and training time, relative to random init.
"""
from __future__ import annotations

import math

from .io import atomic_path
from .report_registry import Lazy, register_report
from .report_stats import _protocol_rows, leaderboard
from .report_style import figure, finish, label_points, style_of
from .report_tables import markdown

pd = Lazy("pandas")

LEVEL = 0.95  # the confidence level of every interval on the page
MEANINGFUL = 0.01  # an accuracy difference (1 point) worth acting on: a CI reaching past it is not "no cost"
KEYS = ["dataset", "model", "optimizer"]


def paired_interval(diffs, level: float = LEVEL) -> dict:
    """Mean, sample std (ddof 1) and ``level`` t interval of per-seed differences; the interval is NaN
    with fewer than 2 seeds."""
    values = [float(d) for d in diffs if d == d]
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    if n < 2:
        return {"mean": mean, "std": float("nan"), "low": float("nan"), "high": float("nan"), "n": n}
    from scipy.stats import t

    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": n}


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


def advice(summary) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """(one row per condition: the page's numbers; one row per arm at its best setting: the leaderboard's
    row plus the paired difference to random init), from a remedies experiment's summary."""
    settings, best = leaderboard(summary, None)
    best = best[best["protocol"] == "batch"]
    rows = _protocol_rows(summary, "batch")
    arms, out = [], []
    for cond, part in best.groupby(KEYS, sort=False):
        mine = rows
        for k, v in zip(KEYS, cond):
            mine = mine[mine[k] == v]
        target = mine[mine["role"] == "target"].set_index("seed")["val_acc"]
        for r in part.itertuples(index=False):
            acc = mine[(mine["remedy"] == r.remedy) & (mine["setting"] == r.setting)].set_index("seed")["val_acc"]
            ci = paired_interval((acc - target.reindex(acc.index)).dropna())
            arms.append({**r._asdict(), "vs_random_mean": ci["mean"], "vs_random_std": ci["std"],
                         "vs_random_low": ci["low"], "vs_random_high": ci["high"], "paired_seeds": ci["n"],
                         "vs_random": verdict(ci)})
        arm = pd.DataFrame(arms[-len(part):])
        warm = arm[arm["role"] == "baseline"].iloc[0]
        target_row = arm[arm["role"] == "target"].iloc[0]
        remedies = arm[arm["role"] == "remedy"]
        # every setting of every remedy that matches random init's mean accuracy (gap closed >= 1)
        cond_settings = settings[(settings["protocol"] == "batch") & (settings["role"] == "remedy")]
        for k, v in zip(KEYS, cond):
            cond_settings = cond_settings[cond_settings[k] == v]
        recovering = cond_settings[cond_settings["val_acc_mean"] >= target_row["val_acc_mean"]]
        most = remedies.sort_values(["gap_closed_mean", "samples_rel"], ascending=[False, True]).head(1)
        cheapest = recovering.sort_values(["samples_rel", "time_rel"]).head(1)
        row = {**dict(zip(KEYS, cond)), "seeds": int(warm["paired_seeds"]),
               "random_acc": target_row["val_acc_mean"], "warm_acc": warm["val_acc_mean"],
               "warm_cost_mean": -warm["vs_random_mean"], "warm_cost_std": warm["vs_random_std"],
               "warm_cost_low": -warm["vs_random_high"], "warm_cost_high": -warm["vs_random_low"],
               "warm_vs_random": warm["vs_random"],
               "warm_samples_rel": warm["samples_rel"], "warm_time_rel": warm["time_rel"],
               "best_remedy": None, "best_setting": None, "best_gap_closed": float("nan"),
               "best_acc": float("nan"), "best_samples_rel": float("nan"), "best_time_rel": float("nan"),
               "best_vs_random": None,
               "cheapest_recovering": None, "cheapest_acc": float("nan"), "cheapest_samples_rel": float("nan"),
               "cheapest_time_rel": float("nan")}
        if len(most):
            m = most.iloc[0]
            row.update(best_remedy=m["remedy"], best_setting=m["setting"], best_gap_closed=m["gap_closed_mean"],
                       best_acc=m["val_acc_mean"], best_samples_rel=m["samples_rel"], best_time_rel=m["time_rel"],
                       best_vs_random=m["vs_random"])
        if len(cheapest):
            c = cheapest.iloc[0]
            row.update(cheapest_recovering=c["setting"], cheapest_acc=c["val_acc_mean"],
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


def sentences(row) -> list[str]:
    """The page's plain sentences for one condition."""
    n, cost = row["seeds"], row["warm_vs_random"]
    lines = []
    spread = (f"std {100 * row['warm_cost_std']:.1f}, {LEVEL:.0%} interval [{_points(row['warm_cost_low'])}, "
              f"{_points(row['warm_cost_high'])}]" if n >= 2 else "one seed: no spread to judge by")
    judged = {"worse": "a real cost, distinguishable from zero", "better": "a real gain, distinguishable from zero",
              "same": f"indistinguishable from zero and within {100 * MEANINGFUL:.0f} point",
              "unclear": f"not distinguishable from zero at {n} seed(s)"}[cost]
    lines.append(f"A warm start costs {_points(row['warm_cost_mean'])} accuracy points against random init "
                 f"({100 * row['warm_acc']:.1f}% vs {100 * row['random_acc']:.1f}%; {spread}): {judged}.")
    lines.append(f"It needs {row['warm_samples_rel']:.2f}x the training samples and {row['warm_time_rel']:.2f}x "
                 f"the training time of random init in phase 2, saving {100 * (1 - row['warm_samples_rel']):.0f}% "
                 f"of the samples and {100 * (1 - row['warm_time_rel']):.0f}% of the time.")
    if row["best_remedy"] is not None:
        lines.append(f"The remedy that recovers the most is {setting_name(row['best_setting'])}: gap closed "
                     f"{row['best_gap_closed']:.2f} (1 = random init), {100 * row['best_acc']:.1f}% at "
                     f"{row['best_samples_rel']:.2f}x the samples ({row['best_time_rel']:.2f}x the time) of random init.")
    if row["cheapest_recovering"] is not None:
        lines.append(f"The cheapest that recovers at least as much as random init (mean accuracy) is "
                     f"{setting_name(row['cheapest_recovering'])}, at {row['cheapest_samples_rel']:.2f}x the samples "
                     f"({row['cheapest_time_rel']:.2f}x the time).")
    else:
        lines.append("No remedy setting recovers as much as random init.")
    return lines


NOTE = (f"From the batch protocol of a remedies experiment: phase 2 (the whole pool) after a phase-1 model on "
        f"part of it. Accuracy differences are paired per seed against random init (mean, sample std and "
        f"{LEVEL:.0%} t interval over seeds); a difference is 'distinguishable from zero' when its interval "
        f"excludes 0, and 'not enough evidence' is said when the warm start's interval includes 0 but reaches "
        f"past +-{100 * MEANINGFUL:.0f} point. Compute: samples processed (machine-free) and time, training "
        f"plus init, relative to random init. Each remedy at its best setting as the leaderboard picks it. In a "
        f"recommendation to warm-start with a remedy, the points are its gain over the plain warm start.")


@register_report("advice", "summary", outputs=("csv", "md", "pdf"),
                 shows="the answer for your data: warm-start or not, and with which remedy")
def write_advice(summary, csv_path, md_path, pdf_path, title: str = ""):
    """The advice page (Markdown: sentences, one small table and the recommendation per condition), its
    numbers as CSV, and a chart (PDF and PNG): each arm's accuracy difference to random init (mean and
    95% interval over seeds) against its compute."""
    page, arms = advice(summary)
    with atomic_path(csv_path) as tmp:
        page.to_csv(tmp, index=False, float_format="%.4f")
    table = pd.DataFrame({
        "dataset / model / optimiser": [" / ".join(map(str, r)) for r in page[KEYS].itertuples(index=False)],
        "seeds": page["seeds"],
        "warm-start cost (points)": [f"{_points(m)} [{_points(lo)}, {_points(hi)}]" if n >= 2 else _points(m)
                                     for m, lo, hi, n in zip(page["warm_cost_mean"], page["warm_cost_low"],
                                                             page["warm_cost_high"], page["seeds"])],
        "warm compute": [f"{s:.2f}x samples, {t:.2f}x time" for s, t in zip(page["warm_samples_rel"], page["warm_time_rel"])],
        "best remedy": [f"{setting_name(s)}: {g:.2f} at {c:.2f}x" if s is not None else "-"
                        for s, g, c in zip(page["best_setting"], page["best_gap_closed"], page["best_samples_rel"])],
        "cheapest full recovery": [f"{setting_name(s)} at {c:.2f}x" if s is not None else "none"
                                   for s, c in zip(page["cheapest_recovering"], page["cheapest_samples_rel"])],
    })
    parts = [f"# {title}", "", NOTE, ""]
    for row in page.to_dict("records"):
        parts += [f"## {row['dataset']} / {row['model']} / {row['optimizer']}", "",
                  f"**Recommendation: {row['recommendation']}.**", "", *[f"- {s}" for s in sentences(row)], ""]
    parts += ["## In one table", "", markdown(table)]
    with atomic_path(md_path) as tmp:
        tmp.write_text("\n".join(parts))
    advice_chart(arms, pdf_path, title)
    return page


def advice_chart(arms, pdf_path, title: str = "") -> None:
    """Per condition: accuracy minus random init's (points; bars: the 95% interval over seeds) against
    samples relative to random init, one labelled point per arm at its best setting."""
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
                        elinewidth=1, capsize=2)
        if len(part):
            ax.margins(x=0.2, y=0.15)
            label_points(ax, part["samples_rel"], 100 * part["vs_random_mean"], part["remedy"])
        ax.set_xlabel("compute: samples relative to random init")
        ax.set_ylabel("accuracy minus random init (points)")
        ax.set_title(" / ".join(map(str, cond)))
    finish(fig, pdf_path, title)
