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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, pdf_path)


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


REPORTS: dict[str, Callable] = {"table": write_table, "curves": plot_learning_curves}
