"""The numbers the reports print, computed from an experiment's summary, epoch and round tables: Table 1's
and Tables 2-5's cells, Figure 1's curves, the transfer cross-over, the Pareto front, Figure 5's
correlation and its interval, Figure 7's damage and phase-1 convergence, and the leaderboard.

No plotting here: ``reports.figures``, ``reports.tables`` and ``reports.leaderboard`` draw these. Every
function takes and returns data frames (pandas is imported on first use). The leaderboard statistics
(``leaderboard``) are public: other reports (and the advice) build on them.
"""
from __future__ import annotations

import math

from warmstart.reports.registry import Lazy

pd = Lazy("pandas")
np = Lazy("numpy")

CONDITION = ["dataset", "model", "optimizer"]


# -- inits: order from the data --------------------------------------------------------------------------

def init_order(frame) -> list[str]:
    """The inits of the frame's phase-2 rows (or all rows of a rounds table) in the order they appear,
    baselines (no parent) first."""
    rows = frame[frame["phase"] == 2] if "phase" in frame.columns else frame
    seen = list(dict.fromkeys(zip(rows["init"], rows["baseline"])))
    return [i for i, b in seen if b] + [i for i, b in seen if not b]


def baselines(frame) -> list[str]:
    rows = frame[frame["phase"] == 2] if "phase" in frame.columns else frame
    return list(dict.fromkeys(rows.loc[rows["baseline"].astype(bool), "init"]))


def select_rows(frame, keys: list[str], values) -> "pd.DataFrame":
    """The rows whose ``keys`` columns equal ``values`` (one condition of a figure's panel)."""
    sel = frame
    for c, v in zip(keys, values):
        sel = sel[sel[c] == v]
    return sel


# -- Table 1 -------------------------------------------------------------------------------------------

def batch_table(summary):
    """Phase-2 validation accuracy (percent), mean and std over seeds, and phase-2 training time, one row
    per dataset x model x optimiser x init, in the config's order, baselines first. Std is the sample
    std (ddof=1). ``converged`` counts the runs that reached the stop threshold (not the epoch cap)."""
    phase2 = summary[summary["phase"] == 2]
    order = {c: list(dict.fromkeys(summary[c])) for c in CONDITION}
    grouped = phase2.groupby(CONDITION + ["init"], sort=False)
    table = grouped.agg(
        val_acc_mean=("val_acc", lambda s: 100 * s.mean()),
        val_acc_std=("val_acc", lambda s: 100 * s.std(ddof=1) if len(s) > 1 else float("nan")),
        train_time_s_mean=("train_time_s", "mean"),
        epochs_mean=("epochs", "mean"),
        converged=("converged", "sum"),
        runs=("converged", "size"),
        seeds=("seed", "nunique"),
    ).reset_index()
    for c in CONDITION:
        table[c] = pd.Categorical(table[c], categories=order[c], ordered=True)
    table["init"] = pd.Categorical(table["init"], categories=init_order(summary), ordered=True)
    return table.sort_values(CONDITION + ["init"]).reset_index(drop=True)


def accuracy_cell(mean: float, std: float, converged: int, runs: int) -> str:
    """A table cell: 'mean (std)' in percent, the std left out with one seed, and '[n of m converged]' when
    some of the cell's runs hit the epoch cap."""
    cell = f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ({std:.1f})"
    # a run that hit max_epochs is capped, not converged: say how many of the cell's runs converged
    return cell if converged == runs else f"{cell} [{converged} of {runs} converged]"


def batch_table_wide(table):
    """The paper's layout: rows dataset x init, columns model x optimiser, cells 'mean (std)', plus a
    'time' row per dataset: mean phase-2 training seconds per init, in the row order."""
    rows = []
    inits = list(table["init"].cat.categories)
    for dataset, per_dataset in table.groupby("dataset", sort=True, observed=True):
        columns = per_dataset[["model", "optimizer"]].drop_duplicates()
        col_names = [f"{m} {o}" for m, o in zip(columns["model"], columns["optimizer"])]
        present = [i for i in inits if (per_dataset["init"] == i).any()]
        for init in present:
            sub = per_dataset[per_dataset["init"] == init]
            row = {"dataset": dataset, "row": f"{init} val. acc. %"}
            for name, (_, r) in zip(col_names, sub.iterrows()):
                row[name] = accuracy_cell(r["val_acc_mean"], r["val_acc_std"], r["converged"], r["runs"])
            rows.append(row)
        times = {}
        for name, (m, o) in zip(col_names, zip(columns["model"], columns["optimizer"])):
            cell = per_dataset[(per_dataset["model"] == m) & (per_dataset["optimizer"] == o)].set_index("init")
            times[name] = " / ".join(f"{cell.loc[i, 'train_time_s_mean']:.1f}" for i in present if i in cell.index)
        rows.append({"dataset": dataset, "row": f"phase-2 train s ({' / '.join(present)})", **times})
    return pd.DataFrame(rows).fillna("")


# -- Figure 1 ------------------------------------------------------------------------------------------

def init_curves(epochs) -> dict[str, "pd.DataFrame"]:
    """Per init, the epochs its phase-2 models went through: an init with a parent continues after its
    parent's phase-1 epochs (renumbered to follow them); a baseline starts at epoch 1."""
    phase1 = epochs[epochs["phase"] == 1]
    offset = phase1.groupby("seed")["epoch"].max()
    curves = {}
    for init in init_order(epochs):
        part = epochs[(epochs["phase"] == 2) & (epochs["init"] == init)].copy()
        if part.empty:
            continue
        if part["parent_run_id"].notna().any():
            part["epoch"] = part["epoch"] + part["seed"].map(offset).fillna(0).astype(int)
            part = pd.concat([phase1, part], ignore_index=True)
        curves[init] = part
    return curves


def phase1_epochs(sel) -> int:
    """The number of phase-1 epochs (the longest seed's), where phase 2 begins on Figure 1; 0 without phase 1."""
    phase1 = sel[sel["phase"] == 1]
    return int(phase1.groupby("seed")["epoch"].max().max()) if not phase1.empty else 0


# -- Figure 3 ------------------------------------------------------------------------------------------

def crossover_fraction(summary, init: str, baseline: str) -> float | None:
    """The target fraction where the mean accuracy of ``init`` first falls below ``baseline``'s,
    interpolated linearly in log(fraction) between the two fractions that bracket the sign change;
    None when the curves do not cross (in that direction)."""
    phase2 = summary[summary["phase"] == 2]
    means = phase2.groupby(["fraction", "init"])["val_acc"].mean().unstack("init").sort_index()
    if not {init, baseline} <= set(means.columns):
        return None
    gap = (means[init] - means[baseline]).dropna()
    for (f0, g0), (f1, g1) in zip(gap.items(), list(gap.items())[1:]):
        if g0 >= 0 > g1:
            t = g0 / (g0 - g1)
            return float(np.exp(np.log(f0) + t * (np.log(f1) - np.log(f0))))
    return None


# -- Figures 4 and 5 ----------------------------------------------------------------------------------

def pareto_front(frame, x: str, y: str):
    """The rows no other row beats on both counts (smaller ``x``, larger ``y``), sorted by ``x``: for each
    cost, the best accuracy reached at that cost or less."""
    ordered = frame.sort_values([x, y], ascending=[True, False])
    keep, best = [], float("-inf")
    for index, value in zip(ordered.index, ordered[y]):
        if value > best:
            keep.append(index)
            best = value
    return ordered.loc[keep]


def pearson_ci(x, y, level: float = 0.95) -> tuple[float, float, float, int]:
    """Pearson's r between ``x`` and ``y`` (pairs with a missing value dropped), with its ``level``
    confidence interval from Fisher's z transform (z = atanh r, standard error 1 / sqrt(n - 3)): (r, low,
    high, n). The interval is NaN with fewer than 4 pairs, r too with fewer than 3 or no spread."""
    from statistics import NormalDist

    pairs = pd.DataFrame({"x": list(x), "y": list(y)}).dropna()
    n = len(pairs)
    if n < 3 or pairs["x"].std() == 0 or pairs["y"].std() == 0:
        return float("nan"), float("nan"), float("nan"), n
    r = float(pairs["x"].corr(pairs["y"]))
    if n < 4:
        return r, float("nan"), float("nan"), n
    q = NormalDist().inv_cdf(0.5 + level / 2)
    z, se = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12)), 1 / math.sqrt(n - 3)
    return r, math.tanh(z - q * se), math.tanh(z + q * se), n


def weight_correlation(summary, level: float = 0.95):
    """Figure 5's statistic, one row per model: over every phase-2 model that started from a parent, the
    Pearson correlation between its weights' correlation with its starting weights (``corr_with_start``,
    the init_distance probe) and its validation accuracy, with a ``level`` confidence interval (Fisher z)
    and the number of models (points) it is computed from. The paper's relation is r < 0 for the
    network (the warm starts that generalise best kept least of their start) and none for logistic
    regression. Note the points are not independent (each phase-1 model starts several of them)."""
    phase2 = summary[(summary["phase"] == 2) & ~summary["baseline"].astype(bool)]
    rows = []
    for model, part in phase2.groupby("model", sort=False):
        r, low, high, n = pearson_ci(part["corr_with_start"], part["val_acc"], level)
        rows.append({"model": model, "r": r, "low": low, "high": high, "n": n, "level": level})
    return pd.DataFrame(rows, columns=["model", "r", "low", "high", "n", "level"])

# -- Figure 7 ------------------------------------------------------------------------------------------

def checkpoint_damage(epochs):
    """Per checkpoint epoch and init with a parent: the percent difference of its phase-2 models' final
    validation accuracy from the baseline's (the same seed's first baseline), mean and std over seeds."""
    finals = epochs.sort_values("epoch").groupby("run_id").tail(1)
    phase2 = finals[finals["phase"] == 2]
    base_init = baselines(epochs)[0]
    base = phase2[phase2["init"] == base_init].set_index("seed")["val_acc"]
    warm = phase2[~phase2["baseline"].astype(bool)].copy()
    warm["difference_pct"] = 100 * (warm["val_acc"] - warm["seed"].map(base)) / warm["seed"].map(base)
    out = warm.groupby(["init", "checkpoint_epoch"])["difference_pct"].agg(["mean", "std"]).reset_index()
    return out.assign(baseline=base_init)


def phase1_convergence_epoch(epochs, threshold: float = 0.99) -> int | None:
    """The first phase-1 epoch at which the mean training accuracy over seeds reaches ``threshold`` (the
    paper's stop rule: 99%), or None when phase 1 never does: where Figure 7's phase 1 has converged."""
    phase1 = epochs[epochs["phase"] == 1]
    if phase1.empty or "train_acc" not in phase1.columns:
        return None
    mean = phase1.groupby("epoch")["train_acc"].mean().sort_index()
    reached = mean[mean >= threshold]
    return int(reached.index[0]) if len(reached) else None

# -- Tables 2, 3, 5 -----------------------------------------------------------------------------------

def condition_table(summary):
    """Tables 2 and 5: phase-2 validation accuracy (percent), mean (std) over seeds, per condition (a
    loss term at one setting) and init; cells say when not every run converged."""
    phase2 = summary[summary["phase"] == 2]
    keys = CONDITION + ["condition", "init"]
    table = phase2.groupby(keys, sort=False).agg(
        val_acc_mean=("val_acc", lambda s: 100 * s.mean()),
        val_acc_std=("val_acc", lambda s: 100 * s.std(ddof=1) if len(s) > 1 else float("nan")),
        train_time_s_mean=("train_time_s", "mean"), converged=("converged", "sum"), runs=("converged", "size"),
    ).reset_index()
    cells = table[["val_acc_mean", "val_acc_std", "converged", "runs"]].itertuples(index=False)
    wide = table.assign(cell=[accuracy_cell(*v) for v in cells])
    wide = wide.pivot(index=CONDITION + ["condition"], columns="init", values="cell").reset_index()
    columns = CONDITION + ["condition"] + [i for i in init_order(summary) if i in wide.columns]
    return table, wide[columns].rename(columns={i: f"{i} val. acc. %" for i in init_order(summary)})


def init_table(summary):
    """Table 3: per init (baselines first), the phase-2 accuracy and the training time to the stop
    threshold (a capped run's time is its time to the cap: the cell says how many converged)."""
    phase2 = summary[summary["phase"] == 2]
    rows = []
    for keys, cond in phase2.groupby(CONDITION, sort=False):
        for init in init_order(summary):
            part = cond[cond["init"] == init]
            if part.empty:
                continue
            acc, time = 100 * part["val_acc"], part["train_time_s"] + part["init_time_s"]
            n, m = int(part["converged"].sum()), len(part)
            rows.append({**dict(zip(CONDITION, keys)), "init": init,
                         "val. acc. %": accuracy_cell(acc.mean(), acc.std(ddof=1) if m > 1 else float("nan"), n, m),
                         "time to threshold (s)": f"{time.mean():.1f}" + ("" if n == m else f" [{n} of {m} converged]"),
                         "epochs": f"{part['epochs'].mean():.1f}",
                         "val_acc_mean": acc.mean(), "time_s_mean": time.mean(), "converged": n, "runs": m})
    long = pd.DataFrame(rows)
    wide = long[CONDITION + ["init", "val. acc. %", "time to threshold (s)", "epochs"]]
    return long, wide


# -- the leaderboard ----------------------------------------------------------------------------------

LEVEL = 0.95  # the confidence level of every interval the leaderboard (and the advice) prints
SPLIT_NAMES = {"test": "test", "val": "val."}


def paired_interval(diffs, level: float = LEVEL) -> dict:
    """Mean, sample std (ddof 1) and ``level`` Student-t interval (n - 1 degrees of freedom) of per-seed
    paired differences (NaN dropped): {mean, std, low, high, n}. With fewer than 2 seeds there is no
    interval: std, low and high are NaN."""
    values = [float(d) for d in diffs if d == d]
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    if n < 2:
        return {"mean": mean, "std": float("nan"), "low": float("nan"), "high": float("nan"), "n": n}
    from scipy.stats import t

    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": n}


def gap_closed(acc, warm, cold) -> float:
    """How much of the warm start's accuracy gap a remedy closes, as a ratio of means over the seeds (paired:
    the same seed's warm and random runs): mean(remedy - warm) / mean(random - warm); scalars are one
    seed. 1 matches the random init, 0 is no better than the warm start, above 1 beats the random init.
    Only meaningful where the gap, random - warm, is distinguishable from zero (``leaderboard`` prints it
    only there): a per-seed ratio of two noisy differences is mostly noise."""
    arm, warm, cold = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (acc, warm, cold))
    return float(np.mean(arm - warm) / np.mean(cold - warm))


def _protocol_rows(frame, protocol: str):
    """One row per run (batch) or per stream's last round (online): accuracy (validation; test where
    recorded, else NaN), cost (``cost_s``: training and init time, the run's share of its stack's;
    ``cost_samples``: samples processed in training and by the init), ``stacked`` (seeds in the run's
    job; a stream runs alone: 1), ``units`` (units its interventions reset; online: the stream's total over
    its rounds; NaN where not recorded), ``interventions`` (names; "" without) and the leaderboard labels."""
    frame = frame.copy()
    for column, default in (("test_acc", float("nan")), ("interventions", ""), ("units_reset", float("nan"))):
        if column not in frame.columns:
            frame[column] = default
    frame["interventions"] = frame["interventions"].fillna("").astype(str)
    if protocol == "batch":
        rows = frame[frame["phase"] == 2].assign(
            cost_s=lambda f: f["train_time_s"] + f["init_time_s"],
            cost_samples=lambda f: f["samples_seen"] + f["init_samples"],
            stacked=lambda f: f["stacked_seeds"] if "stacked_seeds" in f.columns else 1,
            units=lambda f: f["units_reset"])
    else:
        total = frame.groupby("stream_id")["units_reset"].sum(min_count=1)
        if frame["units_reset"].isna().any():  # a round not recorded: the stream's total is unknown
            total[frame.loc[frame["units_reset"].isna(), "stream_id"].unique()] = float("nan")
        last = frame.sort_values("round").groupby("stream_id").tail(1)
        rows = last.assign(cost_s=last["cumulative_train_time_s"], cost_samples=last["cumulative_samples"],
                           stacked=1, units=last["stream_id"].map(total))
    return rows.assign(protocol=protocol)


def report_split(rows) -> str:
    """The split the leaderboard reports on: ``test`` when every run (stream) of it has a test accuracy,
    else ``val`` (runs made before test accuracy was recorded, or a data set without a test split): then
    the setting is chosen and reported on the same validation set, and the tables say so."""
    return "test" if len(rows) and rows["test_acc"].notna().all() else "val"


def _per_seed(frame, column: str):
    """One value per seed (the mean where a seed has several rows), indexed by seed: what pairs."""
    return frame.groupby("seed")[column].mean()


def leaderboard(summary, rounds=None, level: float = LEVEL):
    """(per setting, per remedy at its chosen setting). Each remedy's setting is **chosen on validation**
    accuracy (the highest mean over seeds in its grid, ``grid_size`` settings) and **reported on the test
    split** (``report_split``: ``test``; ``val`` only where some run lacks a test accuracy, and then the
    choice and the report share data). Per arm, on the report split ``s``: its mean (std) accuracy, and
    its accuracy minus the warm start's and minus random init's, **paired per seed** (the same seed's runs),
    mean with a ``level`` t interval (``{s}_vs_warm_*``, ``{s}_vs_random_*``; no interval with one seed);
    the condition's gap, random minus warm, likewise (``{s}_gap_*``), which **exists** when its interval
    excludes 0 above (``gap_exists``); **gap closed** as a ratio of means (``gap_closed``), only where the
    gap exists (else NaN: "no gap to close"). An arm with interventions that reset no unit in any run is
    ``status`` "not exercised" (no gap closed: it never acted). Compute relative to random init: samples
    processed (``samples_rel``, machine-free) and training plus init time (``time_rel``: each run's share
    of its stack's time, so only compared where the arm's runs were stacked as random init's were,
    ``time_comparable``; else NaN). Sorted per protocol and condition: by accuracy minus warm, arms not
    exercised last. ``summary`` (batch) or ``rounds`` (online) may be None."""
    frames = []  # a leaderboard of one protocol has no table of the other
    if summary is not None and len(summary):
        frames.append(_protocol_rows(summary, "batch"))
    if rounds is not None and len(rounds):
        frames.append(_protocol_rows(rounds, "online"))
    rows = pd.concat(frames, ignore_index=True)
    split = report_split(rows)
    keys = ["protocol", "dataset", "model", "optimizer"]
    out = []
    for order, (cond, part) in enumerate(rows.groupby(keys, sort=False)):
        out += [{**dict(zip(keys, cond)), **row, "_order": order} for row in _condition_arms(part, split, level)]
    settings = pd.DataFrame(out)
    return settings.drop(columns="_order"), _chosen_settings(settings, keys, split)


def _condition_arms(part, split: str, level: float) -> list[dict]:
    """``leaderboard``'s rows of one protocol and condition, one per remedy and setting, in their order."""
    acc = f"{split}_acc"
    target, base = part[part["role"] == "target"], part[part["role"] == "baseline"]
    target_acc, base_acc = _per_seed(target, acc), _per_seed(base, acc)
    gap = paired_interval((target_acc - base_acc).dropna(), level)
    exists = bool(gap["low"] > 0)  # NaN (one seed) compares False
    target_stacks = sorted(set(target["stacked"]))
    out = []
    for (remedy, setting), g in part.groupby(["remedy", "setting"], sort=False):
        mine = _per_seed(g, acc)
        vs_warm = paired_interval((mine - base_acc.reindex(mine.index)).dropna(), level)
        vs_random = paired_interval((mine - target_acc.reindex(mine.index)).dropna(), level)
        interventions = ",".join(dict.fromkeys(i for i in g["interventions"] if i))
        units, comparable = g["units"], sorted(set(g["stacked"])) == target_stacks
        idle = bool(interventions) and units.notna().all() and units.sum() == 0
        row = {"remedy": remedy, "setting": setting, "role": g["role"].iloc[0],
               "interventions": interventions, "status": "not exercised" if idle else "", "report_split": split,
               "val_acc_mean": g["val_acc"].mean(), "val_acc_std": g["val_acc"].std(ddof=1)}
        if split == "test":
            row.update(test_acc_mean=g["test_acc"].mean(), test_acc_std=g["test_acc"].std(ddof=1))
        for name, ci in (("vs_warm", vs_warm), ("vs_random", vs_random), ("gap", gap)):
            row.update({f"{split}_{name}_{k}": ci[k] for k in ("mean", "low", "high")})
        row.update(paired_seeds=vs_warm["n"], gap_exists=exists,
                   gap_closed=vs_warm["mean"] / gap["mean"] if exists and not idle else float("nan"),
                   units_reset_mean=units.mean() if interventions else float("nan"),
                   samples_rel=g["cost_samples"].mean() / target["cost_samples"].mean(),
                   time_rel=g["cost_s"].mean() / target["cost_s"].mean() if comparable else float("nan"),
                   time_s=g["cost_s"].mean(), stacked_seeds=g["stacked"].mean(), time_comparable=comparable,
                   seeds=len(g), converged=int(g["converged"].sum()))
        out.append(row)
    return out


def _chosen_settings(settings, keys: list[str], split: str):
    """Per remedy, the setting of the highest mean validation accuracy (``grid_size``: its grid's settings),
    sorted per protocol and condition by accuracy minus warm on the report split, arms not exercised last."""
    by_remedy = settings.groupby(keys + ["remedy"], sort=False)
    best = settings.loc[by_remedy["val_acc_mean"].idxmax()]  # chosen on validation, whatever it reports
    best = best.assign(grid_size=by_remedy["setting"].transform("size").loc[best.index].astype(int))
    best = best.assign(_idle=best["status"] == "not exercised", _rank=-best[f"{split}_vs_warm_mean"])
    best = best.sort_values(["_order", "_idle", "_rank"], kind="stable").drop(columns=["_idle", "_rank"])
    front = keys + ["remedy", "setting", "role", "grid_size"]
    best = best[front + [c for c in best.columns if c not in front and c != "_order"]]
    return best.reset_index(drop=True)
