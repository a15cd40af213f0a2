"""The one plotting style of every report: seaborn's theme, a colour-blind-safe palette in which each init
or remedy keeps its colour (and marker) in every figure, figures built from panels of one size with one
legend, readable log axes, direct labels for points colour alone would not identify, and the save that
writes the PDF (for papers) and the PNG (for the HTML report) from the same figure.

Reports (those here and any new one, e.g. the advice) call:

* ``palette(labels)`` / ``markers(labels)``: label -> colour / marker, the same label the same colour in
  every figure; ``style_of(label)`` for one label.
* ``figure(nrows, ncols)``: a themed figure of equal panels (``table_figure`` one bare panel for a
  table); ``finish(fig, path, title)`` titles and saves it (PDF and PNG); ``figure_legend(fig, order)``
  one legend for all panels.
* ``log_axis(ax, "x")``: a log axis whose ticks read 0.5, 1, 2, 5 (never 2 x 10^0).
* ``band(ax, frame, x, y, label)``: the mean over seeds with its confidence band (seaborn).
* ``label_points(ax, xs, ys, labels)``: a label beside each point, moved apart so none overlap.

matplotlib and seaborn are imported on first use.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable, Iterable

from warmstart.core.io import atomic_path
from warmstart.reports.registry import Lazy


def _agg_backend() -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only; never needs a display


plt = Lazy("matplotlib.pyplot", before=_agg_backend)
sns = Lazy("seaborn")

# seaborn's "colorblind" palette (Okabe-Ito-like), in its order; black is kept for the fresh start
BLUE, ORANGE, GREEN, VERMILION, PURPLE, BROWN, PINK, GREY, YELLOW, SKY = (
    "#0173B2", "#DE8F05", "#029E73", "#D55E00", "#CC78BC", "#CA9161", "#FBAFE4", "#949494", "#ECE133", "#56B4E9")
COLORS = [BLUE, ORANGE, GREEN, VERMILION, PURPLE, BROWN, PINK, GREY, SKY, YELLOW]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p"]

# The inits and remedies the configs define: a fixed colour and marker each, so the fresh start is black
# and the warm start vermilion in every figure. A label not listed (a new remedy, a grid setting such
# as 'sp shrink=0.3') takes its first word's style, or one chosen by a hash of that word: the same
# label always gets the same style. With more labels than colours, colours repeat: the marker and a
# direct label tell them apart.
STYLES: dict[str, tuple[str, str]] = {
    # the inits of the paper's experiments
    "random": ("#000000", "o"), "warm": (VERMILION, "s"), "transfer": (BLUE, "^"), "warm_keep": (ORANGE, "D"),
    "noisy": (PURPLE, "v"), "ll": (GREEN, "P"), "ll_ws": (SKY, "X"),
    # the leaderboard's remedies
    "sp": (BLUE, "o"), "sp_weights": (SKY, "^"), "interpolate": (GREEN, "D"), "head_reset": (BROWN, "v"),
    "dash": (PURPLE, "P"), "l2_init": (ORANGE, "X"),
}

PANEL = (4.4, 3.3)  # inches per panel, every figure
DPI = 150  # the PNG's
ERRORBAR = ("ci", 95)  # seaborn: a 95% bootstrap confidence interval of the mean over seeds
BAND_NOTE = "lines: mean over seeds; bands: 95% bootstrap confidence interval of the mean"
FIGURE_HOOKS: list[Callable] = []  # called with (figure, path) before a figure is saved (tests read it)


def base_label(label: str) -> str:
    """The init or remedy a label names: its first word ('sp shrink=0.3 perturb=0.01' -> 'sp')."""
    return str(label).split(" ")[0].split("[")[0]


def style_of(label: str) -> tuple[str, str]:
    """(colour, marker) of a label, the same in every figure."""
    base = base_label(label)
    if base in STYLES:
        return STYLES[base]
    h = zlib.crc32(base.encode())
    return COLORS[h % len(COLORS)], MARKERS[(h // len(COLORS)) % len(MARKERS)]


def _shade(color: str, amount: float) -> tuple[float, float, float]:
    """The colour mixed with white (amount > 0) or black (amount < 0)."""
    from matplotlib.colors import to_rgb

    rgb = to_rgb(color)
    target = 1.0 if amount > 0 else 0.0
    return tuple(c + abs(amount) * (target - c) for c in rgb)


def palette(labels: Iterable[str]) -> dict:
    """label -> colour. Labels of one init or remedy at several settings (Table 3's noise levels) get
    shades of its colour, darkest first, so they stay apart and still read as one family."""
    labels = list(dict.fromkeys(labels))
    families: dict[str, list[str]] = {}
    for label in labels:
        families.setdefault(base_label(label), []).append(label)
    out = {}
    for base, members in families.items():
        color = style_of(base)[0]
        if len(members) == 1:
            out[members[0]] = color
            continue
        for k, label in enumerate(members):
            amount = -0.35 + 0.8 * k / (len(members) - 1)
            out[label] = _shade(color, amount) if color != "#000000" else _shade("#555555", amount)
    return out


def markers(labels: Iterable[str]) -> dict:
    return {label: style_of(label)[1] for label in dict.fromkeys(labels)}


def apply_theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=COLORS, font_scale=1.05,
                  rc={"axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
                      "ytick.labelsize": 8, "figure.titlesize": 11, "figure.titleweight": "bold",
                      "axes.spines.top": False, "axes.spines.right": False, "pdf.fonttype": 42})


def figure(nrows: int = 1, ncols: int = 1, panel: tuple[float, float] = PANEL, extra_width: float = 0.0,
           extra_height: float = 0.0):
    """A figure of ``nrows`` x ``ncols`` equal panels (axes always a 2-D array), constrained layout."""
    apply_theme()
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols + extra_width, panel[1] * nrows + extra_height),
                             squeeze=False, layout="constrained")
    return fig, axes


def table_figure(nrows: int, ncols: int):
    """A themed figure of one bare panel (no axes) sized for a table of ``nrows`` x ``ncols`` cells."""
    apply_theme()
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * ncols), 1.2 + 0.32 * (nrows + 1)))
    ax.axis("off")
    return fig, ax


def figure_legend(fig, order: list[str] | None = None, title: str | None = None) -> None:
    """One legend for the whole figure, below the panels: every labelled artist of every panel once, in
    ``order`` when given (labels not in it after)."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if not label.startswith("_"):
                handles.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if not handles:
        return
    names = [n for n in (order or []) if n in handles] + [n for n in handles if n not in (order or [])]
    fig.legend([handles[n] for n in names], names, loc="outside lower center", ncols=min(len(names), 6),
               frameon=False, title=title)


def log_axis(ax, which: str = "x") -> None:
    """A log-scale axis labelled in plain numbers (0.02, 0.05, 0.1, ... or 2, 5, 10, 20), with ticks at
    1, 2 and 5 per decade, or 1 per decade where the range spans more than four decades."""
    from matplotlib import ticker

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    low, high = (ax.get_xlim() if which == "x" else ax.get_ylim())
    decades = abs(__import__("math").log10(max(high, 1e-300) / max(low, 1e-300))) if low > 0 else 10
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 4 else (1.0,)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def band(ax, frame, x: str, y: str, label: str, color=None, **kw) -> None:
    """The mean of ``y`` over seeds against ``x`` as a line, its 95% confidence interval as a band."""
    sns.lineplot(data=frame, x=x, y=y, ax=ax, label=label, color=color or style_of(label)[0],
                 errorbar=ERRORBAR, n_boot=400, seed=0, lw=1.5, **kw)


def label_points(ax, xs, ys, labels, colors=None, side: str = "right", fontsize: float = 7.0) -> list:
    """A text label beside each point, in a column just outside the panel (``side``), each joined to its
    point by a thin line; labels are spread vertically so none overlap, whatever the number of points.
    Returns the text artists."""
    import numpy as np

    xs, ys, labels = list(xs), list(ys), [str(v) for v in labels]
    colors = list(colors) if colors is not None else [style_of(v)[0] for v in labels]
    if not labels:
        return []
    ax.autoscale_view()
    to_axes = ax.transScale + ax.transLimits  # data -> axes fraction, whatever the layout does later
    points = [to_axes.transform((x, y)) for x, y in zip(xs, ys)]
    order = np.argsort([p[1] for p in points])
    height_in = ax.get_window_extent().height / ax.figure.dpi
    step = min(1.0 / max(len(labels), 1), (fontsize * 1.35 / 72) / max(height_in, 1e-3))
    placed = np.clip([points[i][1] for i in order], 0.0, 1.0)
    for k in range(1, len(placed)):  # push up to keep a line's height between labels
        placed[k] = max(placed[k], placed[k - 1] + step)
    overflow = placed[-1] - 1.0 if len(placed) else 0.0
    if overflow > 0:  # then pull the column down so it ends at the top
        placed = placed - overflow
        for k in range(len(placed) - 2, -1, -1):
            placed[k] = min(placed[k], placed[k + 1] - step)
    texts = []
    x_text = 1.03 if side == "right" else -0.03
    for k, i in enumerate(order):
        texts.append(ax.annotate(
            labels[i], xy=(xs[i], ys[i]), xycoords="data", xytext=(x_text, placed[k]), textcoords="axes fraction",
            fontsize=fontsize, color=colors[i], va="center", ha="left" if side == "right" else "right",
            annotation_clip=False,
            arrowprops=dict(arrowstyle="-", color=colors[i], lw=0.5, alpha=0.6, shrinkA=0, shrinkB=2)))
    return texts


def finish(fig, path, title: str = "") -> None:
    """The figure titled and saved (PDF and PNG)."""
    if title:
        fig.suptitle(title)
    save(fig, path)


def save(fig, path) -> None:
    """The figure at ``path`` and, beside a PDF, the same figure as a PNG (what the HTML report shows)."""
    for hook in FIGURE_HOOKS:
        hook(fig, path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "pdf", bbox_inches="tight")
    if Path(path).suffix == ".pdf":
        with atomic_path(Path(path).with_suffix(".png")) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
