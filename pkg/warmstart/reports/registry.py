"""The report registry: an experiment's ``report`` value in the config names one of ``REPORTS``, which says
which tables it reads, which files it writes and how to draw them; and the titles the figures carry.

This module imports nothing heavy (the workflow reads the registry while planning). The reports
themselves live in ``reports.figures`` (Figures 1-9), ``reports.tables`` (Tables 1-5),
``reports.leaderboard`` and ``reports.advice``; ``reports.stats`` holds the numbers they print,
``reports.style`` the one plotting style, ``reports.captions`` the HTML report's captions and front page.
``warmstart.reports`` re-exports them all (and importing it registers every report).
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable

from warmstart.core.registry import Registry


class Lazy:
    """A module imported when first used (pandas, numpy, matplotlib and seaborn load only when a report
    draws, never while the workflow plans)."""

    def __init__(self, name: str, before: Callable[[], None] | None = None):
        self._name, self._before, self._module = name, before, None

    def __getattr__(self, attr):
        if self._module is None:
            if self._before:
                self._before()
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


# The paper's figures and tables, by the experiment names the configs use: each title says which of the
# paper's figures it is and what it shows (or the question it answers). An experiment with another name
# gets its report's generic title.
PAPER_TITLES = {
    "table1": "Table 1: does a warm start generalise worse than a fresh start?",
    "fig1": "Figure 1: learning curves of a warm start and a fresh start through both phases",
    "fig2": "Figure 2: online learning, random batches: the warm start's accuracy gap and time saved",
    "fig3": "Figure 3: transfer: where does starting from the source model stop paying?",
    "fig4": "Figure 4: accuracy against training cost over batch sizes and learning rates",
    "fig5": "Figure 5: do warm starts that keep their initial weights generalise worse?",
    "fig6": "Figure 6: gradient norms on the old (phase-1) and new data",
    "fig7": "Figure 7: warm starts from later phase-1 checkpoints",
    "fig8": "Figure 8: online learning under domain shift (first principal component order)",
    "fig9": "Figure 9: active learning (margin sampling): the warm start's accuracy gap",
    "table2": "Table 2: do regularisers close the warm-start gap?",
    "table3": "Table 3: warm starts with added noise against a fresh start",
    "table4": "Table 4: training the last layer only (LL), then everything (LL+WS)",
    "table5": "Table 5: EWC in phase 2 against the warm start",
    "sec35": "Section 3.5: does keeping Adam's state help the warm start?",
    "leaderboard": "Leaderboard: how much of the warm-start gap each remedy closes, at what compute",
}


@dataclass(frozen=True)
class Report:
    tables: tuple[str, ...]  # the experiment tables it reads, in order: summary, epochs and/or rounds
    draw: Callable  # (*frames, *output paths, title=...) -> None or a frame
    outputs: tuple[str, ...] = ("pdf",)  # file extensions it writes, figures/<experiment>.<ext>
    shows: str = ""  # what the figure or table shows, for the title of an experiment the paper does not name
    probes: tuple[str, ...] = ()  # the probes it draws from (``validation``: learning curves), with their defaults,
    probed_phases: tuple[int, ...] = (1, 2)  # measured in every run of these phases of its experiment

    def title(self, experiment: str) -> str:
        """The paper's figure or table and its question (``PAPER_TITLES``) for the experiment names the
        configs use; otherwise '<experiment>: <what it shows>'."""
        return PAPER_TITLES.get(experiment) or f"{experiment}: {self.shows}"


def paper_label(experiment: str) -> str:
    """'Figure 7' for fig7, 'Table 1' for table1, 'Section 3.5' for sec35; the name itself otherwise."""
    m = re.fullmatch(r"(fig|table|sec)(\d+)", experiment)
    if not m:
        return experiment
    kind, number = m.groups()
    if kind == "sec":
        number = ".".join(number)
    return {"fig": "Figure", "table": "Table", "sec": "Section"}[kind] + " " + number


REPORTS: Registry[Report] = Registry("report")


def register_report(name: str, tables: str | tuple[str, ...], outputs: tuple[str, ...] = ("pdf",), *, shows: str,
                    probes: tuple[str, ...] = (), probed_phases: tuple[int, ...] = (1, 2)):
    """Register ``fn`` as the report ``name``. ``probes``: registered probes, with their default options,
    that the planner adds to the runs of ``probed_phases`` of an experiment with this report (``validation``
    for learning curves: a run is otherwise evaluated after its last epoch only)."""
    def decorate(fn):
        REPORTS.add(name, Report((tables,) if isinstance(tables, str) else tuple(tables), fn, outputs, shows, probes,
                                 probed_phases))
        return fn
    return decorate
