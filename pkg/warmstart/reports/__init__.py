"""Tables and figures from an experiment's summary, epoch and round tables: the one import of them all.

Reports are a registry too: an experiment's ``report`` value in the config names one of ``REPORTS``, which
says which tables it reads and how to draw it. The work is split by job:

* ``reports.registry``: ``REPORTS``, ``register_report``, the titles (``PAPER_TITLES``); nothing heavy.
* ``reports.stats``: the numbers the reports print (Table 1's cells, the cross-over, the Pareto front,
  Figure 5's correlation and interval, Figure 7's damage, the leaderboard statistics ``leaderboard``).
* ``reports.style``: the one plotting style (seaborn theme, a colour per init or remedy kept in every
  figure, panels, legends, log axes, direct labels, PDF + PNG saving); every figure goes through it.
* ``reports.figures``: Figures 1-9; ``reports.tables``: Tables 1-5; ``reports.leaderboard``: the
  leaderboard; ``reports.advice``: the advice page.
* ``reports.captions``: the HTML report's captions (one per report) and front page.

Importing this module registers every report; pandas, matplotlib and seaborn are imported on first use,
so the workflow can read the registry while planning without loading them. A new report module
registers with ``reports.registry.register_report`` and is imported below (and gets its caption:
``python -m warmstart.reports captions workflow/report/captions``).
"""
from __future__ import annotations

from warmstart.reports.captions import caption, caption_template, first_paragraph
from warmstart.reports.figures import (plot_checkpoints, plot_correlation, plot_gradients, plot_learning_curves,
                                       plot_online, plot_sweep, plot_transfer)
from warmstart.reports.leaderboard import leaderboard_chart, write_leaderboard
from warmstart.reports.registry import PAPER_TITLES, REPORTS, Report, paper_label, register_report
from warmstart.reports.stats import (CONDITION, accuracy_cell, baselines, batch_table, batch_table_wide,
                                     checkpoint_damage, condition_table, crossover_fraction, gap_closed, init_curves,
                                     init_order, init_table, leaderboard, pareto_front, pearson_ci, phase1_epochs,
                                     phase1_convergence_epoch, select_rows, weight_correlation)
from warmstart.reports.style import palette, style_of
from warmstart.reports.tables import markdown, write_condition_table, write_init_table, write_table, write_tables

__all__ = [
    "REPORTS", "Report", "register_report", "PAPER_TITLES", "paper_label", "caption", "caption_template",
    "first_paragraph", "CONDITION", "accuracy_cell", "select_rows", "phase1_epochs", "baselines", "batch_table",
    "batch_table_wide", "checkpoint_damage", "condition_table", "crossover_fraction", "gap_closed",
    "init_curves", "init_order", "init_table", "leaderboard", "pareto_front", "pearson_ci",
    "phase1_convergence_epoch", "weight_correlation", "palette", "style_of", "markdown", "write_tables",
    "write_table", "write_condition_table", "write_init_table", "write_leaderboard", "leaderboard_chart",
    "plot_learning_curves", "plot_online", "plot_transfer", "plot_sweep", "plot_correlation", "plot_gradients",
    "plot_checkpoints",
]

from warmstart.reports import advice  # noqa: E402,F401  (registers the advice report: warmstart.reports.advice)
