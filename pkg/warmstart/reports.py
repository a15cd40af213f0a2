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
    tables: tuple[str, ...]  # the experiment tables it reads, in order: summary, epochs and/or rounds
    draw: Callable  # (*frames, *output paths, title=...) -> None or a frame
    outputs: tuple[str, ...] = ("pdf",)  # file extensions it writes, figures/<experiment>.<ext>
    shows: str = ""  # what the figure or table shows, for its title

    def title(self, experiment: str) -> str:
        return f"{experiment}: {self.shows}"


REPORTS: Registry[Report] = Registry("report")


def register_report(name: str, tables: str | tuple[str, ...], outputs: tuple[str, ...] = ("pdf",), *, shows: str):
    def decorate(fn):
        REPORTS.add(name, Report((tables,) if isinstance(tables, str) else tuple(tables), fn, outputs, shows))
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


@register_report("table", "summary", outputs=("csv", "md", "pdf"),
                 shows="phase-2 validation accuracy, warm start vs fresh start (Table 1)")
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
    """The figure at ``path`` and, beside a PDF, the same as a PNG (what the HTML report shows)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "pdf", bbox_inches="tight")
    if Path(path).suffix == ".pdf":
        with atomic_path(Path(path).with_suffix(".png")) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def _first_paragraph(doc: str | None) -> str:
    import inspect

    return inspect.cleandoc(doc or "").split("\n\n")[0].replace("\n", " ")


def caption(name: str, exp: dict, report: Report, kind) -> str:
    """The HTML report's caption of an experiment's figure or table (reStructuredText): what it shows
    (the report's docstring), the protocol (the experiment kind's) and the config values behind it."""
    import yaml

    settings = yaml.safe_dump({name: exp}, sort_keys=False, default_flow_style=None, width=100)
    block = "\n".join("    " + line for line in settings.splitlines())
    return (f"**{name}** (experiment kind ``{exp['kind']}``, report ``{exp['report']}``). "
            f"{_first_paragraph(report.draw.__doc__)}\n\n"
            f"*Protocol.* {_first_paragraph(kind.plan.__doc__)}\n\n"
            f"*Config* (``experiments:`` entry; the labels it names are defined in the config shown on the "
            f"report's front page)::\n\n{block}\n")


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


@register_report("curves", "epochs", shows="learning curves through both phases (Figure 1)")
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

@register_report("online", "rounds",
                 shows="accuracy and training time as data arrive, per round (Figures 2, 8, 9)")
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


@register_report("transfer", "summary",
                 shows="accuracy on a fraction of the target task, from the source model vs afresh (Figure 3)")
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


# -- Figures 4 and 5: the sweep --------------------------------------------------------------------------

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


@register_report("sweep", "summary",
                 shows="accuracy vs training time over batch sizes and learning rates (Figure 4)")
def plot_sweep(summary, pdf_path, title: str = "") -> None:
    """Figure 4: the validation accuracy of every phase-2 model of the sweep against its phase-2 cost,
    one colour per init, with each init's Pareto front. Left: training seconds (pre-training excluded);
    right: samples processed, which means the same on any machine."""
    phase2 = summary[summary["phase"] == 2]
    order = init_order(summary)
    colors = init_colors(order)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x, xlabel in zip(axes, ("train_time_s", "samples_seen"),
                             ("phase-2 training time (s, pre-training excluded)", "phase-2 samples processed")):
        for init in order:
            part = phase2[phase2["init"] == init]
            ax.scatter(part[x], part["val_acc"], s=12, alpha=0.6, color=colors[init], label=init)
            front = pareto_front(part, x, "val_acc")
            ax.step(front[x], front["val_acc"], where="post", color=colors[init], lw=1.2)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    _finish(fig, pdf_path, title)


@register_report("correlation", "summary",
                 shows="accuracy vs correlation of the final with the initial weights (Figure 5)")
def plot_correlation(summary, pdf_path, title: str = "") -> None:
    """Figure 5: for every phase-2 model that started from a parent, the Pearson correlation of its final
    weights with its starting (phase-1) weights (the init_distance probe) against its validation
    accuracy, one panel per model; the panel title gives the correlation between the two."""
    phase2 = summary[(summary["phase"] == 2) & ~summary["baseline"].astype(bool)]
    models = list(dict.fromkeys(phase2["model"]))
    colors = init_colors(init_order(summary))
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = phase2[phase2["model"] == model]
        for init, rows in part.groupby("init", sort=False):
            ax.scatter(rows["corr_with_start"], rows["val_acc"], s=14, alpha=0.7, color=colors[init], label=init)
        r = part["corr_with_start"].corr(part["val_acc"]) if len(part) > 2 else float("nan")
        ax.set_title(f"{model}: r(weight correlation, accuracy) = {r:.2f}", fontsize=9)
        ax.set_xlabel("correlation of final with initial (phase-1) weights")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _finish(fig, pdf_path, title)


# -- Figure 6: gradients ---------------------------------------------------------------------------------

@register_report("gradients", "epochs", shows="gradient norms on the phase-1 (old) and new data (Figure 6)")
def plot_gradients(epochs, pdf_path, title: str = "") -> None:
    """Figure 6: the norm of the mean gradient during training (the grad_norm probe), mean +- std over
    seeds. Left: phase 1, on its data. Right: phase 2 of each init with a parent, on the old (phase-1)
    part and on the new part of the data, beside the baselines' gradient on all of it."""
    colors = init_colors(init_order(epochs))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    phase1 = epochs[epochs["phase"] == 1]
    _mean_band(axes[0], phase1, "epoch", "grad_norm_train", "black", "phase 1 (its own data)")
    phase2 = epochs[epochs["phase"] == 2]
    for init in init_order(epochs):
        part = phase2[phase2["init"] == init]
        if part.empty:
            continue
        if part["baseline"].astype(bool).all():
            _mean_band(axes[1], part, "epoch", "grad_norm_train", colors[init], f"{init}: all data")
        else:
            _mean_band(axes[1], part, "epoch", "grad_norm_old", colors[init], f"{init}: old half")
            stats = part.groupby("epoch")["grad_norm_new"].mean()
            axes[1].plot(stats.index, stats.values, color=colors[init], ls="--", lw=1.4, label=f"{init}: new half")
    for ax, name in zip(axes, ("phase 1", "phase 2")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("L2 norm of the mean gradient")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _finish(fig, pdf_path, title)


# -- Figure 7: checkpoints -------------------------------------------------------------------------------

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


@register_report("checkpoints", "epochs", shows="warm starts from later phase-1 checkpoints (Figure 7)")
def plot_checkpoints(epochs, pdf_path, title: str = "") -> None:
    """Figure 7: left, the validation accuracy along phase 1; right, the phase-2 accuracy of the model
    warm-started from each phase-1 checkpoint, relative to the baseline (percent difference), against the
    checkpoint's epoch; mean +- std over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    _mean_band(axes[0], epochs[epochs["phase"] == 1], "epoch", "val_acc", "black", "phase 1")
    axes[0].set_xlabel("phase-1 epoch")
    axes[0].set_ylabel("validation accuracy")
    damage = checkpoint_damage(epochs)
    colors = init_colors(init_order(epochs))
    for init, part in damage.groupby("init", sort=False):
        axes[1].errorbar(part["checkpoint_epoch"], part["mean"], yerr=part["std"].fillna(0), color=colors[init],
                         marker="o", ms=3, capsize=2, label=init)
    axes[1].axhline(0, color="grey", lw=1, ls=":")
    axes[1].set_xlabel("phase-1 epoch of the checkpoint it starts from")
    axes[1].set_ylabel(f"% difference from {damage['baseline'].iloc[0] if len(damage) else 'baseline'}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _finish(fig, pdf_path, title)


# -- Tables 2, 3, 5 --------------------------------------------------------------------------------------

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
    wide = table.assign(cell=[_cell(*v) for v in table[["val_acc_mean", "val_acc_std", "converged", "runs"]]
                              .itertuples(index=False)])
    wide = wide.pivot(index=CONDITION + ["condition"], columns="init", values="cell").reset_index()
    columns = CONDITION + ["condition"] + [i for i in init_order(summary) if i in wide.columns]
    return table, wide[columns].rename(columns={i: f"{i} val. acc. %" for i in init_order(summary)})


@register_report("conditions", "summary", outputs=("csv", "md", "pdf"),
                 shows="regularised warm and fresh starts (Tables 2 and 5)")
def write_condition_table(summary, csv_path, md_path, pdf_path, title: str = ""):
    table, wide = condition_table(summary)
    note = ("Validation accuracy (%) of the phase-2 models, mean (std) over seeds, per loss-term setting "
            "(applied in the phases the experiment names) and init. [n of m converged]: only n of m runs "
            "reached the stop threshold.")
    write_tables(table, wide, csv_path, md_path, pdf_path, title, note)
    return table


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
                         "val. acc. %": _cell(acc.mean(), acc.std(ddof=1) if m > 1 else float("nan"), n, m),
                         "time to threshold (s)": f"{time.mean():.1f}" + ("" if n == m else f" [{n} of {m} converged]"),
                         "epochs": f"{part['epochs'].mean():.1f}",
                         "val_acc_mean": acc.mean(), "time_s_mean": time.mean(), "converged": n, "runs": m})
    long = pd.DataFrame(rows)
    wide = long[CONDITION + ["init", "val. acc. %", "time to threshold (s)", "epochs"]]
    return long, wide


@register_report("inits", "summary", outputs=("csv", "md", "pdf"),
                 shows="warm starts with added noise vs a fresh start (Table 3)")
def write_init_table(summary, csv_path, md_path, pdf_path, title: str = ""):
    long, wide = init_table(summary)
    note = ("Per init: phase-2 validation accuracy (%), mean (std) over seeds, and the mean training time "
            "(plus any init-strategy time) until the run reached the training-accuracy threshold.")
    write_tables(long, wide, csv_path, md_path, pdf_path, title, note)
    return long


# -- the leaderboard -------------------------------------------------------------------------------------

def gap_closed(acc, warm, cold):
    """How much of the warm start's accuracy gap a remedy closes: (remedy - warm) / (random - warm);
    1 matches the random init, 0 is no better than the warm start, above 1 beats the random init."""
    return (acc - warm) / (cold - warm)


def _protocol_rows(frame, protocol: str):
    """One row per run (batch) or per stream's last round (online): accuracy, cost (training and init
    time, samples processed) and the leaderboard labels."""
    if protocol == "batch":
        rows = frame[frame["phase"] == 2].assign(
            cost_s=lambda f: f["train_time_s"] + f["init_time_s"],
            cost_samples=lambda f: f["samples_seen"] + f["init_samples"])
    else:
        last = frame.sort_values("round").groupby("stream_id").tail(1)
        rows = last.assign(cost_s=last["cumulative_train_time_s"], cost_samples=last["cumulative_samples"])
    return rows.assign(protocol=protocol)


def leaderboard(summary, rounds=None):
    """(per setting, per remedy at its best setting): each remedy setting's mean (std over seeds) validation
    accuracy, gap closed (per seed, against that seed's target and baseline) and compute relative to the
    target (random init); the best setting of each remedy is the one with the highest mean validation
    accuracy (the validation set is the only held-out set, so this choice is optimistic for every remedy
    alike). Sorted by gap closed."""
    frames = [_protocol_rows(summary, "batch")]
    if rounds is not None and len(rounds):
        frames.append(_protocol_rows(rounds, "online"))
    rows = pd.concat(frames, ignore_index=True)
    keys = ["protocol", "dataset", "model", "optimizer"]
    out = []
    for cond, part in rows.groupby(keys, sort=False):
        target = part[part["role"] == "target"].set_index("seed")
        base = part[part["role"] == "baseline"].set_index("seed")
        for (remedy, setting), g in part.groupby(["remedy", "setting"], sort=False):
            g = g.set_index("seed")
            gaps = gap_closed(g["val_acc"], base["val_acc"].reindex(g.index), target["val_acc"].reindex(g.index))
            out.append({**dict(zip(keys, cond)), "remedy": remedy, "setting": setting, "role": g["role"].iloc[0],
                        "val_acc_mean": g["val_acc"].mean(), "val_acc_std": g["val_acc"].std(ddof=1),
                        "gap_closed_mean": gaps.mean(), "gap_closed_std": gaps.std(ddof=1),
                        "time_rel": g["cost_s"].mean() / target["cost_s"].mean(),
                        "samples_rel": g["cost_samples"].mean() / target["cost_samples"].mean(),
                        "time_s": g["cost_s"].mean(), "seeds": len(g),
                        "converged": int(g["converged"].sum())})
    settings = pd.DataFrame(out)
    by_remedy = settings.groupby(keys + ["remedy"], sort=False)
    best = settings.loc[by_remedy["val_acc_mean"].idxmax()]
    best = best.assign(grid_size=by_remedy["setting"].transform("size").loc[best.index].astype(int))
    best = best.sort_values(keys[:1] + ["gap_closed_mean"], ascending=[True, False], kind="stable")
    return settings, best.reset_index(drop=True)


@register_report("leaderboard", ("summary", "rounds"), outputs=("csv", "md", "pdf"),
                 shows="remedies for warm starting: accuracy, gap closed and compute")
def write_leaderboard(summary, rounds, csv_path, md_path, pdf_path, title: str = ""):
    """The leaderboard: per protocol, each remedy at its best setting, sorted by gap closed, as CSV and
    Markdown; the PDF plots accuracy against compute (every setting of every grid, each remedy's Pareto
    front) for the batch protocol, and accuracy and cumulative time per round online."""
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
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    remedies = list(dict.fromkeys(settings["remedy"]))
    colors = {r: PALETTE[k % len(PALETTE)] for k, r in enumerate(remedies)}
    batch = settings[settings["protocol"] == "batch"]
    for ax, x, label in ((axes[0, 0], "time_rel", "phase-2 time relative to random init"),
                         (axes[0, 1], "samples_rel", "phase-2 samples relative to random init")):
        for remedy, part in batch.groupby("remedy", sort=False):
            ax.scatter(part[x], part["val_acc_mean"], color=colors[remedy], s=18, label=remedy)
            front = pareto_front(part, x, "val_acc_mean")
            ax.step(front[x], front["val_acc_mean"], where="post", color=colors[remedy], lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (batch protocol)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    if rounds is not None and len(rounds):
        chosen = best[best["protocol"] == "online"]
        for remedy, setting in zip(chosen["remedy"], chosen["setting"]):
            part = rounds[(rounds["remedy"] == remedy) & (rounds["setting"] == setting)]
            _mean_band(axes[1, 0], part, "n_samples", "val_acc", colors[remedy], remedy)
            _mean_band(axes[1, 1], part, "n_samples", "cumulative_train_time_s", colors[remedy], remedy)
        for ax, ylabel in zip(axes[1], ("validation accuracy (online)", "cumulative training time (s)")):
            ax.set_xlabel("samples in the training set")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[1, 0].legend(fontsize=7)
    else:
        for ax in axes[1]:
            ax.axis("off")
    _finish(fig, pdf_path, title)
    return best
