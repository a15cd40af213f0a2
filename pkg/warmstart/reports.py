"""Tables and figures from an experiment's summary, epoch and round tables: the one import of them all.

Reports are a registry too: an experiment's ``report`` value in the config names one of ``REPORTS``, which
says which table it reads and how to draw it. The work is split by job:

* ``report_registry``: ``REPORTS``, ``register_report``, the titles (``PAPER_TITLES``); nothing heavy.
* ``report_stats``: the numbers the reports print (Table 1's cells, the cross-over, the Pareto front,
  Figure 5's correlation and interval, Figure 7's damage, the leaderboard statistics ``leaderboard``).
* ``report_style``: the one plotting style (seaborn theme, a colour per init or remedy kept in every
  figure, panels, legends, log axes, direct labels, PDF + PNG saving).
* ``report_figures``: Figures 1-9; ``report_tables``: Tables 1-5; ``report_leaderboard``: the leaderboard.
* ``report_captions``: the HTML report's captions.

Importing this module registers every report; pandas, matplotlib and seaborn are imported on first use,
so the workflow can read the registry while planning without loading them. A new report module
registers with ``report_registry.register_report`` and is imported below.
"""
from __future__ import annotations

from .report_captions import _first_paragraph, caption
from .report_figures import (plot_checkpoints, plot_correlation, plot_gradients, plot_learning_curves, plot_online,
                             plot_sweep, plot_transfer)
from .report_leaderboard import leaderboard_chart, write_leaderboard
from .report_registry import PAPER_TITLES, REPORTS, Report, paper_label, register_report
from .report_stats import (CONDITION, _cell, _phase1_epochs, _protocol_rows, _select, baselines, batch_table,
                           batch_table_wide, checkpoint_damage, condition_table, crossover_fraction, gap_closed,
                           init_curves, init_order, init_table, leaderboard, pareto_front, pearson_ci,
                           phase1_convergence_epoch, weight_correlation)
from .report_style import palette, style_of
from .report_tables import markdown, write_condition_table, write_init_table, write_table, write_tables

__all__ = [
    "REPORTS", "Report", "register_report", "PAPER_TITLES", "paper_label", "caption", "CONDITION", "_cell",
    "_first_paragraph", "_phase1_epochs", "_protocol_rows", "_select", "baselines", "batch_table",
    "batch_table_wide", "checkpoint_damage", "condition_table", "crossover_fraction", "gap_closed",
    "init_curves", "init_order", "init_table", "leaderboard", "pareto_front", "pearson_ci",
    "phase1_convergence_epoch", "weight_correlation", "palette", "style_of", "markdown", "write_tables",
    "write_table", "write_condition_table", "write_init_table", "write_leaderboard", "leaderboard_chart",
    "plot_learning_curves", "plot_online", "plot_transfer", "plot_sweep", "plot_correlation", "plot_gradients",
    "plot_checkpoints",
]

from . import advice  # noqa: E402,F401  (registers the advice report: warmstart.advice)
