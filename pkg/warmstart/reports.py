"""Tables and figures from an experiment's summary and epoch tables.

Reports are a registry too: an experiment's ``report`` value in the config names one of ``REPORTS``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .io import atomic_path  # noqa: E402

CONDITION = ["dataset", "model", "optimizer"]
INIT_ORDER = ["random", "warm"]
COLORS = {"random": "tab:green", "warm": "tab:blue"}


def batch_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Phase-2 validation accuracy (percent), mean and std over seeds, and phase-2 training time,
    one row per dataset x model x optimiser x init, in the config's order. Std is the sample std (ddof=1)."""
    phase2 = summary[summary["phase"] == 2]
    order = {c: list(dict.fromkeys(summary[c])) for c in CONDITION}
    grouped = phase2.groupby(CONDITION + ["init"], sort=False)
    table = grouped.agg(
        val_acc_mean=("val_acc", lambda s: 100 * s.mean()),
        val_acc_std=("val_acc", lambda s: 100 * s.std(ddof=1) if len(s) > 1 else float("nan")),
        train_time_s_mean=("train_time_s", "mean"),
        epochs_mean=("epochs", "mean"),
        converged=("converged", "mean"),
        seeds=("seed", "nunique"),
    ).reset_index()
    for c in CONDITION:
        table[c] = pd.Categorical(table[c], categories=order[c], ordered=True)
    table["init"] = pd.Categorical(table["init"], categories=INIT_ORDER, ordered=True)
    return table.sort_values(CONDITION + ["init"]).reset_index(drop=True)


def _cell(mean: float, std: float) -> str:
    return f"{mean:.1f}" if pd.isna(std) else f"{mean:.1f} ({std:.1f})"


def batch_table_wide(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: rows dataset x init, columns model x optimiser, cells 'mean (std)', plus a
    'time' row per dataset: mean phase-2 training seconds, 'random / warm'."""
    rows = []
    for dataset, per_dataset in table.groupby("dataset", sort=True, observed=True):
        columns = per_dataset[["model", "optimizer"]].drop_duplicates()
        col_names = [f"{m} {o}" for m, o in zip(columns["model"], columns["optimizer"])]
        for init in INIT_ORDER:
            sub = per_dataset[per_dataset["init"] == init]
            if sub.empty:
                continue
            row = {"dataset": dataset, "row": f"{init} init val. acc. %"}
            for name, (_, r) in zip(col_names, sub.iterrows()):
                row[name] = _cell(r["val_acc_mean"], r["val_acc_std"])
            rows.append(row)
        times = {}
        for name, (m, o) in zip(col_names, zip(columns["model"], columns["optimizer"])):
            cell = per_dataset[(per_dataset["model"] == m) & (per_dataset["optimizer"] == o)].set_index("init")
            times[name] = " / ".join(f"{cell.loc[i, 'train_time_s_mean']:.1f}" for i in INIT_ORDER if i in cell.index)
        rows.append({"dataset": dataset, "row": "phase-2 train s (random / warm)", **times})
    return pd.DataFrame(rows).fillna("")


def _markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(summary: pd.DataFrame, csv_path, md_path, pdf_path, title: str = "") -> pd.DataFrame:
    """Table 1: long CSV (one row per condition x init), paper-layout Markdown, and the same as a PDF."""
    table = batch_table(summary)
    wide = batch_table_wide(table)
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")
    note = ("Validation accuracy (%) of the phase-2 models, mean (std) over seeds; validation set = a random "
            "third of the official training set. Time: mean phase-2 training seconds (evaluation excluded).")
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# {title}\n\n{note}\n\n{_markdown(wide)}")
    fig_h = 1.2 + 0.32 * (len(wide) + 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(wide.columns)), fig_h))
    ax.axis("off")
    tab = ax.table(cellText=wide.values, colLabels=list(wide.columns), loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width(list(range(len(wide.columns))))
    ax.set_title(f"{title}\n{note}", fontsize=8, wrap=True)
    _save(fig, pdf_path)
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


def plot_learning_curves(epochs: pd.DataFrame, pdf_path, title: str = "") -> None:
    """Figure 1: training and validation accuracy against epoch. The warm-started model's phase-1
    epochs (on the phase-1 fraction) come first and its phase-2 epochs continue after them; the
    randomly initialised model trains on all the data from epoch 1. Lines are means over seeds, bands
    the min-max range."""
    conditions = epochs[CONDITION].drop_duplicates().itertuples(index=False)
    conditions = list(conditions)
    fig, axes = plt.subplots(len(conditions), 2, figsize=(10, 3.4 * len(conditions)), squeeze=False)
    for row, cond in zip(axes, conditions):
        sel = epochs
        for c, v in zip(CONDITION, cond):
            sel = sel[sel[c] == v]
        curves = {
            "warm (phase 1 then 2)": _warm_curve(sel),
            "random init (100% data)": sel[(sel["phase"] == 2) & (sel["init"] == "random")],
        }
        for ax, metric, label in zip(row, ("train_acc", "val_acc"), ("training accuracy", "validation accuracy")):
            for name, curve in curves.items():
                if curve.empty:
                    continue
                color = COLORS["warm" if name.startswith("warm") else "random"]
                stats = curve.groupby("epoch")[metric].agg(["mean", "min", "max"])
                ax.plot(stats.index, stats["mean"], color=color, label=name, lw=1.4)
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
            switch = _phase1_epochs(sel)
            if switch:
                ax.axvline(switch + 0.5, color="grey", ls=":", lw=1)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.set_title(f"{' / '.join(map(str, cond))}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=8, loc="lower right")
    _finish(fig, pdf_path, title)


def _phase1_epochs(sel: pd.DataFrame) -> int:
    phase1 = sel[sel["phase"] == 1]
    return int(phase1.groupby("seed")["epoch"].max().max()) if not phase1.empty else 0


def _warm_curve(sel: pd.DataFrame) -> pd.DataFrame:
    """Phase-1 epochs followed by the warm phase-2 epochs, renumbered per seed to continue the count."""
    phase1 = sel[sel["phase"] == 1]
    warm = sel[(sel["phase"] == 2) & (sel["init"] == "warm")].copy()
    offset = phase1.groupby("seed")["epoch"].max()
    warm["epoch"] = warm["epoch"] + warm["seed"].map(offset).fillna(0).astype(int)
    return pd.concat([phase1, warm], ignore_index=True)


def _mean_band(ax, frame: pd.DataFrame, x: str, y: str, color: str, label: str) -> None:
    """Mean over seeds as a line, mean +- one standard deviation as a band."""
    stats = frame.groupby(x)[y].agg(["mean", "std"]).fillna(0.0)
    ax.plot(stats.index, stats["mean"], color=color, label=label, lw=1.4)
    ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color,
                    alpha=0.2, lw=0)


def plot_online(rounds: pd.DataFrame, pdf_path, title: str = "") -> None:
    """Figures 2, 8, 9: validation accuracy and training time per round against the number of samples
    in the training set, warm-started vs randomly initialised each round; mean +- std over seeds."""
    keys = CONDITION + ["policy"]
    conditions = list(rounds[keys].drop_duplicates().itertuples(index=False))
    fig, axes = plt.subplots(len(conditions), 2, figsize=(10, 3.4 * len(conditions)), squeeze=False)
    for row, cond in zip(axes, conditions):
        sel = rounds
        for c, v in zip(keys, cond):
            sel = sel[sel[c] == v]
        for init in INIT_ORDER:
            part = sel[sel["init"] == init]
            if part.empty:
                continue
            label = "warm start" if init == "warm" else "random init"
            _mean_band(row[0], part, "n_samples", "val_acc", COLORS[init], label)
            _mean_band(row[1], part, "n_samples", "train_time_s", COLORS[init], label)
        for ax, ylabel in zip(row, ("validation accuracy", "training time per round (s)")):
            ax.set_xlabel("samples in the training set")
            ax.set_ylabel(ylabel)
            ax.set_title(" / ".join(map(str, cond)), fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=8, loc="lower right")
    _finish(fig, pdf_path, title)


def crossover_fraction(summary: pd.DataFrame) -> float | None:
    """The target fraction where the mean warm-start accuracy first falls below the random-init one,
    interpolated linearly in log(fraction) between the two fractions that bracket the sign change;
    None when the curves do not cross (in that direction)."""
    import numpy as np

    phase2 = summary[summary["phase"] == 2]
    means = phase2.groupby(["fraction", "init"])["val_acc"].mean().unstack("init").sort_index()
    if not {"warm", "random"} <= set(means.columns):
        return None
    gap = (means["warm"] - means["random"]).dropna()
    for (f0, g0), (f1, g1) in zip(gap.items(), list(gap.items())[1:]):
        if g0 >= 0 > g1:
            t = g0 / (g0 - g1)
            return float(np.exp(np.log(f0) + t * (np.log(f1) - np.log(f0))))
    return None


def plot_transfer(summary: pd.DataFrame, pdf_path, title: str = "") -> None:
    """Figure 3: target validation accuracy against the fraction of the target's training pool,
    warm-started from the source model vs randomly initialised; the cross-over is marked."""
    phase2 = summary[summary["phase"] == 2]
    fig, ax = plt.subplots(figsize=(6, 4))
    for init in INIT_ORDER:
        part = phase2[phase2["init"] == init]
        if not part.empty:
            label = "warm start from source" if init == "warm" else "random init"
            _mean_band(ax, part, "fraction", "val_acc", COLORS[init], label)
    crossing = crossover_fraction(summary)
    if crossing is not None:
        ax.axvline(crossing, color="grey", ls=":", lw=1)
        ax.annotate(f"cross-over ~{crossing:.3g}", (crossing, ax.get_ylim()[0]), xytext=(4, 6),
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


# report kind -> (the experiment table it reads, the function that draws it)
REPORTS: dict[str, tuple[str, Callable]] = {
    "table": ("summary", write_table),
    "curves": ("epochs", plot_learning_curves),
    "online": ("rounds", plot_online),
    "transfer": ("summary", plot_transfer),
}
