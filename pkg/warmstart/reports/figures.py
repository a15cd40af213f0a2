"""Figures 1-9 in the paper's panel layout and one style (``reports.style``): every init keeps its colour,
lines are means over seeds with 95% confidence bands (seaborn), log axes read in plain numbers, one
legend per figure, and the title names the paper's figure and what it shows. The numbers come from
``reports.stats``. Each figure is written as a PDF and, beside it, the same figure as a PNG.

Every report shows any number of inits: their order comes from the data (the order the experiment
lists them), with the baselines (inits that start from no parent) first.
"""
from __future__ import annotations

from warmstart.reports.registry import register_report
from warmstart.reports.stats import (CONDITION, baselines, checkpoint_damage, crossover_fraction, init_curves,
                                     init_order, pareto_front, pd, phase1_convergence_epoch, phase1_epochs,
                                     select_rows, weight_correlation)
from warmstart.reports.style import BAND_NOTE, band, figure, figure_legend, finish, log_axis, markers, palette, sns


def _cond_name(cond) -> str:
    return " / ".join(map(str, cond))


# -- Figure 1 ------------------------------------------------------------------------------------------

def _row_per_condition(frame, keys: list[str], pdf_path, title: str, draw_row) -> None:
    """A figure of one row of two panels per condition (the values of ``keys``), a line per init in the
    colours of ``palette``, one legend, saved: ``draw_row(row, cond, rows, colors)`` draws a row's panels
    from the condition's rows of ``frame``."""
    conditions = list(frame[keys].drop_duplicates().itertuples(index=False))
    order = init_order(frame)
    colors = palette(order)
    fig, axes = figure(len(conditions), 2, extra_height=0.5)
    for row, cond in zip(axes, conditions):
        draw_row(row, cond, select_rows(frame, keys, cond), colors)
    figure_legend(fig, order)
    finish(fig, pdf_path, title)


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)


@register_report("curves", "epochs", shows="learning curves through both phases (Figure 1)", probes=("validation",))
def plot_learning_curves(epochs, pdf_path, title: str = "") -> None:
    """Figure 1: training and validation accuracy against epoch (left and right, one row per dataset x
    model x optimiser). An init that starts from the phase-1 model shows the phase-1 epochs (on the
    phase-1 fraction) first and its phase-2 epochs after them; a baseline trains on all the data from
    epoch 1. Lines are means over seeds, bands their 95% confidence intervals."""
    def draw_row(row, cond, sel, colors):
        curves = init_curves(sel)
        switch = phase1_epochs(sel)
        for ax, metric, label in zip(row, ("train_acc", "val_acc"), ("training accuracy", "validation accuracy")):
            for init, curve in curves.items():
                band(ax, curve, "epoch", metric, init, colors[init])
            if switch:
                ax.axvline(switch + 0.5, color="grey", ls=":", lw=1)
                ax.annotate("phase 1 | phase 2", (switch + 0.5, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", fontsize=7, color="grey")
            _label(ax, "epoch", label, f"{_cond_name(cond)}: {label}")

    _row_per_condition(epochs, CONDITION, pdf_path, title, draw_row)


# -- Figures 2, 8, 9 -----------------------------------------------------------------------------------

@register_report("online", "rounds",
                 shows="accuracy and training time as data arrive, per round (Figures 2, 8, 9)")
def plot_online(rounds, pdf_path, title: str = "") -> None:
    """Figures 2, 8, 9: validation accuracy (left) and training time per round (right) against the
    number of samples in the training set, one line per init (one row per condition and data policy);
    means over seeds with 95% confidence bands."""
    order = init_order(rounds)

    def draw_row(row, cond, sel, colors):
        for init in order:
            part = sel[sel["init"] == init]
            if part.empty:
                continue
            band(row[0], part, "n_samples", "val_acc", init, colors[init])
            band(row[1], part, "n_samples", "train_time_s", init, colors[init])
        for ax, ylabel in zip(row, ("validation accuracy", "training time per round (s)")):
            _label(ax, "samples in the training set", ylabel, f"{_cond_name(cond[:3])}, data policy {cond[3]}")

    _row_per_condition(rounds, CONDITION + ["policy"], pdf_path, title, draw_row)


# -- Figure 3 ------------------------------------------------------------------------------------------

@register_report("transfer", "summary",
                 shows="accuracy on a fraction of the target task, from the source model vs afresh (Figure 3)")
def plot_transfer(summary, pdf_path, title: str = "") -> None:
    """Figure 3: target validation accuracy against the fraction of the target's training pool (log
    axis), one line per init, means over seeds with 95% confidence bands; where an init that starts
    from the source model crosses below the first baseline, the cross-over is marked."""
    phase2 = summary[summary["phase"] == 2]
    order = init_order(summary)
    colors = palette(order)
    fig, axes = figure(1, 1, panel=(5.6, 3.8), extra_height=0.4)
    ax = axes[0, 0]
    for init in order:
        band(ax, phase2[phase2["init"] == init], "fraction", "val_acc", init, colors[init], marker="o", ms=4)
    log_axis(ax, "x")
    base = baselines(summary)
    for init in (i for i in order if i not in base):
        crossing = crossover_fraction(summary, init, base[0]) if base else None
        if crossing is not None:
            ax.axvline(crossing, color=colors[init], ls=":", lw=1)
            ax.annotate(f"{init} falls below {base[0]} at ~{crossing:.2g}", (crossing, 0.04),
                        xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points",
                        fontsize=7, color="dimgrey")
    ax.set_xlabel("fraction of the target training pool")
    ax.set_ylabel("target validation accuracy")
    source = summary.loc[summary["phase"] == 1, "dataset"]
    if len(source) and len(phase2):
        ax.set_title(f"source {source.iloc[0]} -> target {phase2['dataset'].iloc[0]}")
    figure_legend(fig, order)
    finish(fig, pdf_path, title)


# -- Figures 4 and 5: the sweep --------------------------------------------------------------------------

@register_report("sweep", "summary",
                 shows="accuracy vs training time over batch sizes and learning rates (Figure 4)")
def plot_sweep(summary, pdf_path, title: str = "") -> None:
    """Figure 4: the validation accuracy of every phase-2 model of the sweep against its phase-2 cost,
    one colour per init, with each init's Pareto front (the best accuracy reached at that cost or less).
    Left: training seconds (pre-training excluded); right: samples processed, which means the same on
    any machine."""
    phase2 = summary[summary["phase"] == 2]
    order = init_order(summary)
    colors, marks = palette(order), markers(order)
    fig, axes = figure(1, 2, extra_height=0.4)
    for ax, x, xlabel in zip(axes[0], ("train_time_s", "samples_seen"),
                             ("phase-2 training time (s, pre-training excluded)", "phase-2 samples processed")):
        for init in order:
            part = phase2[phase2["init"] == init]
            ax.scatter(part[x], part["val_acc"], s=16, alpha=0.6, color=colors[init], marker=marks[init],
                       label=init, edgecolors="none")
            front = pareto_front(part, x, "val_acc")
            ax.step(front[x], front["val_acc"], where="post", color=colors[init], lw=1.2)
        log_axis(ax, "x")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation accuracy")
    axes[0, 0].set_title("each point: one phase-2 model; line: Pareto front")
    axes[0, 1].set_title("the same models by samples processed")
    figure_legend(fig, order)
    finish(fig, pdf_path, title)


def _ci_text(r: float, low: float, high: float, n: int, level: float) -> str:
    if pd.isna(r):
        return f"r undefined (n = {n})"
    ci = "" if pd.isna(low) else f", {100 * level:.0f}% CI [{low:.2f}, {high:.2f}]"
    return f"r = {r:.2f}{ci}, n = {n}"


@register_report("correlation", "summary",
                 shows="accuracy vs correlation of the final with the initial weights (Figure 5)")
def plot_correlation(summary, pdf_path, title: str = "") -> None:
    """Figure 5: for every phase-2 model that started from a parent, the Pearson correlation of its final
    weights with its starting (phase-1) weights (the init_distance probe) against its validation
    accuracy, one panel per model (the paper: logistic regression left, the network right), the marker
    showing the phase-2 learning rate; each panel states Pearson's r between the two with its 95%
    confidence interval (Fisher z) and the number of models. The paper finds r < 0 for the network and
    no relation for logistic regression."""
    phase2 = summary[(summary["phase"] == 2) & ~summary["baseline"].astype(bool)]
    models = list(dict.fromkeys(phase2["model"])) or ["(none)"]
    stats = weight_correlation(summary).set_index("model")
    order = [i for i in init_order(summary) if i in set(phase2["init"])]
    colors = palette(order)
    fig, axes = figure(1, len(models), extra_height=0.5)
    for ax, model in zip(axes[0], models):
        part = phase2[phase2["model"] == model]
        if len(part):
            style = "lr" if "lr" in part.columns and part["lr"].nunique() > 1 else None
            sns.scatterplot(data=part.assign(lr=part["lr"].map("phase-2 lr {:g}".format)) if style else part,
                            x="corr_with_start", y="val_acc", hue="init", hue_order=order, palette=colors,
                            style=style, ax=ax, s=28, alpha=0.8, edgecolor="none")
            if part["corr_with_start"].nunique() > 1:
                sns.regplot(data=part, x="corr_with_start", y="val_acc", ax=ax, scatter=False, ci=None,
                            color="grey", line_kws={"lw": 1, "ls": "--"})
        s = stats.loc[model] if model in stats.index else None
        ax.set_title(f"{model}: " + (_ci_text(s["r"], s["low"], s["high"], int(s["n"]), s["level"])
                                     if s is not None else "no warm-started models"))
        ax.set_xlabel("correlation of final with initial (phase-1) weights")
        ax.set_ylabel("validation accuracy")
    figure_legend(fig)
    finish(fig, pdf_path, title)


# -- Figure 6: gradients ---------------------------------------------------------------------------------

@register_report("gradients", "epochs", shows="gradient norms on the phase-1 (old) and new data (Figure 6)")
def plot_gradients(epochs, pdf_path, title: str = "") -> None:
    """Figure 6: the norm of the mean gradient during training (the grad_norm probe), means over seeds
    with 95% confidence bands, log axis. Left: phase 1, on its data. Right: phase 2 of each init with a
    parent, on the old (phase-1) part (solid) and on the new part (dashed) of the data, beside the
    baselines' gradient on all of it."""
    order = init_order(epochs)
    colors = palette(order)
    fig, axes = figure(1, 2, extra_height=0.5)
    phase1 = epochs[epochs["phase"] == 1]
    band(axes[0, 0], phase1, "epoch", "grad_norm_train", "phase 1 (its own data)", "#000000")
    phase2 = epochs[epochs["phase"] == 2]
    for init in order:
        part = phase2[phase2["init"] == init]
        if part.empty:
            continue
        if part["baseline"].astype(bool).all():
            band(axes[0, 1], part, "epoch", "grad_norm_train", f"{init}: all data", colors[init])
        else:
            band(axes[0, 1], part, "epoch", "grad_norm_old", f"{init}: old (phase-1) half", colors[init])
            band(axes[0, 1], part, "epoch", "grad_norm_new", f"{init}: new half", colors[init], ls="--")
    for ax, name in zip(axes[0], ("phase 1, on its data", "phase 2, on the old and the new data")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("L2 norm of the mean gradient")
        log_axis(ax, "y")
        ax.set_title(name)
    figure_legend(fig)
    finish(fig, pdf_path, title)


# -- Figure 7: checkpoints -------------------------------------------------------------------------------

@register_report("checkpoints", "epochs", shows="warm starts from later phase-1 checkpoints (Figure 7)",
                 probes=("validation",), probed_phases=(1,))  # phase 2: the final accuracy only
def plot_checkpoints(epochs, pdf_path, title: str = "") -> None:
    """Figure 7: left, the validation accuracy along phase 1, its checkpoints marked and the epoch at
    which phase 1 converges (99% training accuracy) shown; right, the phase-2 accuracy of the model
    warm-started from each phase-1 checkpoint, relative to the baseline (percent difference), against
    the checkpoint's epoch; means over seeds with 95% confidence intervals. The paper's point: the
    longer phase 1 trains, the more the warm start is damaged."""
    fig, axes = figure(1, 2, extra_height=0.5)
    left, right = axes[0]
    phase1 = epochs[epochs["phase"] == 1]
    band(left, phase1, "epoch", "val_acc", "phase 1 (validation)", "#000000")
    damage = checkpoint_damage(epochs)
    marks = sorted(damage["checkpoint_epoch"].dropna().unique()) if len(damage) else []
    curve = phase1.groupby("epoch")["val_acc"].mean()
    ticks = [e for e in marks if e in curve.index]
    left.scatter(ticks, curve.loc[ticks], color="#000000", s=18, zorder=3, label="checkpoints")
    converged = phase1_convergence_epoch(epochs)
    for ax in (left, right):
        if converged is not None:
            ax.axvline(converged, color="grey", ls="--", lw=1)
    if converged is not None:
        left.annotate(f"99% training accuracy\nat epoch {converged}", (converged, 0.05),
                      xycoords=("data", "axes fraction"), xytext=(-4, 0), textcoords="offset points",
                      ha="right", fontsize=7, color="dimgrey")
    _label(left, "phase-1 epoch", "validation accuracy", "phase 1, on its fraction of the data")
    finals = epochs.sort_values("epoch").groupby("run_id").tail(1)
    warm = finals[(finals["phase"] == 2) & ~finals["baseline"].astype(bool)]
    base_init = damage["baseline"].iloc[0] if len(damage) else (baselines(epochs) or ["baseline"])[0]
    if len(damage):
        base = finals[(finals["phase"] == 2) & (finals["init"] == base_init)].set_index("seed")["val_acc"]
        per_seed = warm.assign(difference_pct=100 * (warm["val_acc"] - warm["seed"].map(base)) / warm["seed"].map(base))
        order = [i for i in init_order(epochs) if i in set(per_seed["init"])]
        colors = palette(order)
        for init in order:
            band(right, per_seed[per_seed["init"] == init], "checkpoint_epoch", "difference_pct", init,
                 colors[init], marker="o", ms=4)
    right.axhline(0, color="grey", lw=1, ls=":")
    _label(right, "phase-1 epoch of the checkpoint it starts from", f"% difference from {base_init} (phase 2)",
           "phase 2 from each checkpoint, on all the data")
    figure_legend(fig)
    finish(fig, pdf_path, title)


__all__ = ["plot_learning_curves", "plot_online", "plot_transfer", "plot_sweep", "plot_correlation",
           "plot_gradients", "plot_checkpoints", "BAND_NOTE"]
