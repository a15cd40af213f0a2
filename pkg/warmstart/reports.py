"""Tables and figures from an experiment's summary, epoch and round tables.

Reports are a registry too: an experiment's ``report`` value in the config names one of ``REPORTS``, which
says which table it reads and how to draw it. Every report shows any number of inits: their order comes
from the data (the order the experiment lists them), with the baselines (inits that start from no parent,
``baseline`` column) first; colours follow that order.

pandas and matplotlib are imported on first use, so the workflow can read the registry while planning
without loading them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .io import atomic_path
from .registry import Registry


class _Lazy:
    """A module imported when first used."""

    def __init__(self, name: str, before: Callable[[], None] | None = None):
        self._name, self._before, self._module = name, before, None

    def __getattr__(self, attr):
        if self._module is None:
            if self._before:
                self._before()
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


def _agg_backend() -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only; never needs a display


pd = _Lazy("pandas")
np = _Lazy("numpy")
plt = _Lazy("matplotlib.pyplot", before=_agg_backend)

CONDITION = ["dataset", "model", "optimizer"]
PALETTE = ["tab:green", "tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "tab:gray"]


@dataclass(frozen=True)
class Report:
    table: str  # the experiment table it reads: summary, epochs or rounds
    draw: Callable  # (frame, *output paths, title=...) -> None or a frame
    outputs: tuple[str, ...] = ("pdf",)  # file extensions it writes, figures/<experiment>.<ext>


REPORTS: Registry[Report] = Registry("report")


def register_report(name: str, table: str, outputs: tuple[str, ...] = ("pdf",)):
    def decorate(fn):
        REPORTS.add(name, Report(table, fn, outputs))
        return fn
    return decorate


# -- inits: order and colour from the data -------------------------------------------------------------

def init_order(frame) -> list[str]:
    """The inits of the frame's phase-2 rows (or all rows of a rounds table) in the order they appear,
    baselines (no parent) first."""
    rows = frame[frame["phase"] == 2] if "phase" in frame.columns else frame
    seen = list(dict.fromkeys(zip(rows["init"], rows["baseline"])))
    return [i for i, b in seen if b] + [i for i, b in seen if not b]


def init_colors(order: list[str]) -> dict[str, str]:
    return {init: PALETTE[k % len(PALETTE)] for k, init in enumerate(order)}


def baselines(frame) -> list[str]:
    rows = frame[frame["phase"] == 2] if "phase" in frame.columns else frame
    return list(dict.fromkeys(rows.loc[rows["baseline"].astype(bool), "init"]))


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


def _cell(mean: float, std: float, converged: int, runs: int) -> str:
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
                row[name] = _cell(r["val_acc_mean"], r["val_acc_std"], r["converged"], r["runs"])
            rows.append(row)
        times = {}
        for name, (m, o) in zip(col_names, zip(columns["model"], columns["optimizer"])):
            cell = per_dataset[(per_dataset["model"] == m) & (per_dataset["optimizer"] == o)].set_index("init")
            times[name] = " / ".join(f"{cell.loc[i, 'train_time_s_mean']:.1f}" for i in present if i in cell.index)
        rows.append({"dataset": dataset, "row": f"phase-2 train s ({' / '.join(present)})", **times})
    return pd.DataFrame(rows).fillna("")


def markdown(frame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_tables(long, wide, csv_path, md_path, pdf_path, title: str, note: str) -> None:
    """A table as long CSV, paper-layout Markdown and the same as a PDF, each written atomically."""
    with atomic_path(csv_path) as tmp:
        long.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# {title}\n\n{note}\n\n{markdown(wide)}")
    fig_h = 1.2 + 0.32 * (len(wide) + 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(wide.columns)), fig_h))
    ax.axis("off")
    tab = ax.table(cellText=wide.values, colLabels=list(wide.columns), loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width(list(range(len(wide.columns))))
    ax.set_title(f"{title}\n{note}", fontsize=8, wrap=True)
    _save(fig, pdf_path)


@register_report("table", "summary", outputs=("csv", "md", "pdf"))
def write_table(summary, csv_path, md_path, pdf_path, title: str = ""):
    """Table 1: long CSV (one row per condition x init), paper-layout Markdown, and the same as a PDF."""
    table = batch_table(summary)
    note = ("Validation accuracy (%) of the phase-2 models, mean (std) over seeds; validation set = a random "
            "third of the official training set. [n of m converged]: only n of the cell's m runs reached the "
            "stop threshold (the rest hit max_epochs). Time: mean phase-2 training seconds (evaluation excluded).")
    write_tables(table, batch_table_wide(table), csv_path, md_path, pdf_path, title, note)
    return table


def _finish(fig, path, title: str = "") -> None:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "pdf", bbox_inches="tight")
    plt.close(fig)


def _select(frame, keys: list[str], values) -> "pd.DataFrame":
    sel = frame
    for c, v in zip(keys, values):
        sel = sel[sel[c] == v]
    return sel


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


@register_report("curves", "epochs")
def plot_learning_curves(epochs, pdf_path, title: str = "") -> None:
    """Figure 1: training and validation accuracy against epoch. An init that starts from the phase-1
    model shows the phase-1 epochs (on the phase-1 fraction) first and its phase-2 epochs after them; a
    baseline trains on all the data from epoch 1. Lines are means over seeds, bands the min-max range."""
    conditions = list(epochs[CONDITION].drop_duplicates().itertuples(index=False))
    colors = init_colors(init_order(epochs))
    fig, axes = plt.subplots(len(conditions), 2, figsize=(10, 3.4 * len(conditions)), squeeze=False)
    for row, cond in zip(axes, conditions):
        sel = _select(epochs, CONDITION, cond)
        curves = init_curves(sel)
        for ax, metric, label in zip(row, ("train_acc", "val_acc"), ("training accuracy", "validation accuracy")):
            for init, curve in curves.items():
                stats = curve.groupby("epoch")[metric].agg(["mean", "min", "max"])
                ax.plot(stats.index, stats["mean"], color=colors[init], label=init, lw=1.4)
                ax.fill_between(stats.index, stats["min"], stats["max"], color=colors[init], alpha=0.2, lw=0)
            switch = _phase1_epochs(sel)
            if switch:
                ax.axvline(switch + 0.5, color="grey", ls=":", lw=1)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(f"{' / '.join(map(str, cond))}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=8, loc="lower right")
    _finish(fig, pdf_path, title)


def _phase1_epochs(sel) -> int:
    phase1 = sel[sel["phase"] == 1]
    return int(phase1.groupby("seed")["epoch"].max().max()) if not phase1.empty else 0


def _mean_band(ax, frame, x: str, y: str, color: str, label: str) -> None:
    """Mean over seeds as a line, mean +- one standard deviation as a band."""
    stats = frame.groupby(x)[y].agg(["mean", "std"]).fillna(0.0)
    ax.plot(stats.index, stats["mean"], color=color, label=label, lw=1.4)
    ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color,
                    alpha=0.2, lw=0)


# -- Figures 2, 8, 9 -----------------------------------------------------------------------------------

@register_report("online", "rounds")
def plot_online(rounds, pdf_path, title: str = "") -> None:
    """Figures 2, 8, 9: validation accuracy and training time per round against the number of samples
    in the training set, one line per init; mean +- std over seeds."""
    keys = CONDITION + ["policy"]
    conditions = list(rounds[keys].drop_duplicates().itertuples(index=False))
    order = init_order(rounds)
    colors = init_colors(order)
    fig, axes = plt.subplots(len(conditions), 2, figsize=(10, 3.4 * len(conditions)), squeeze=False)
    for row, cond in zip(axes, conditions):
        sel = _select(rounds, keys, cond)
        for init in order:
            part = sel[sel["init"] == init]
            if part.empty:
                continue
            _mean_band(row[0], part, "n_samples", "val_acc", colors[init], init)
            _mean_band(row[1], part, "n_samples", "train_time_s", colors[init], init)
        for ax, ylabel in zip(row, ("validation accuracy", "training time per round (s)")):
            ax.set_xlabel("samples in the training set")
            ax.set_ylabel(ylabel)
            ax.set_title(" / ".join(map(str, cond)), fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8, loc="lower right")
    _finish(fig, pdf_path, title)


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


@register_report("transfer", "summary")
def plot_transfer(summary, pdf_path, title: str = "") -> None:
    """Figure 3: target validation accuracy against the fraction of the target's training pool, one line
    per init; where an init that starts from the source model crosses below the first baseline, the
    cross-over is marked."""
    phase2 = summary[summary["phase"] == 2]
    order = init_order(summary)
    colors = init_colors(order)
    fig, ax = plt.subplots(figsize=(6, 4))
    for init in order:
        _mean_band(ax, phase2[phase2["init"] == init], "fraction", "val_acc", colors[init], init)
    base = baselines(summary)
    for init in (i for i in order if i not in base):
        crossing = crossover_fraction(summary, init, base[0]) if base else None
        if crossing is not None:
            ax.axvline(crossing, color=colors[init], ls=":", lw=1)
            ax.annotate(f"{init} crosses {base[0]} ~{crossing:.3g}", (crossing, ax.get_ylim()[0]), xytext=(4, 6),
                        textcoords="offset points", fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the target training pool")
    ax.set_ylabel("target validation accuracy")
    source = summary.loc[summary["phase"] == 1, "dataset"]
    target = phase2["dataset"]
    ax.set_title(title or f"transfer {source.iloc[0]} -> {target.iloc[0]}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _finish(fig, pdf_path)
