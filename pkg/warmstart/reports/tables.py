"""Tables 1-5 and Section 3.5's table: each as a long CSV (one row per condition x init), the paper's
layout as Markdown, and the same as a PDF (and PNG) for the HTML report. The numbers come from
``reports.stats``."""
from __future__ import annotations

from warmstart.core.io import atomic_path
from warmstart.reports.registry import register_report
from warmstart.reports.stats import batch_table, batch_table_wide, condition_table, init_table
from warmstart.reports.style import save, table_figure


def markdown(frame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(map(str, r)) + " |" for r in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_tables(long, wide, csv_path, md_path, pdf_path, title: str, note: str):
    """A table as long CSV, paper-layout Markdown and the same as a PDF, each written atomically; returns
    the long table."""
    with atomic_path(csv_path) as tmp:
        long.to_csv(tmp, index=False, float_format="%.4f")
    with atomic_path(md_path) as tmp:
        tmp.write_text(f"# {title}\n\n{note}\n\n{markdown(wide)}")
    fig, ax = table_figure(len(wide), len(wide.columns))
    tab = ax.table(cellText=wide.values, colLabels=list(wide.columns), loc="center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(8)
    tab.auto_set_column_width(list(range(len(wide.columns))))
    fig.suptitle(title, fontsize=11, fontweight="bold")
    ax.set_title(note, fontsize=7, wrap=True)
    save(fig, pdf_path)
    return long


TABLE1_NOTE = ("Validation accuracy (%) of the phase-2 models, mean (std) over seeds; validation set = a random "
               "third of the official training set. [n of m converged]: only n of the cell's m runs reached the "
               "stop threshold (the rest hit max_epochs). Time: mean phase-2 training seconds (evaluation "
               "excluded).")
CONDITIONS_NOTE = ("Validation accuracy (%) of the phase-2 models, mean (std) over seeds, per loss-term setting "
                   "(applied in the phases the experiment names) and init. [n of m converged]: only n of m runs "
                   "reached the stop threshold.")
INITS_NOTE = ("Per init: phase-2 validation accuracy (%), mean (std) over seeds, and the mean training time "
              "(plus any init-strategy time) until the run reached the training-accuracy threshold.")


@register_report("table", "summary", outputs=("csv", "md", "pdf"),
                 shows="phase-2 validation accuracy, warm start vs fresh start (Table 1)")
def write_table(summary, csv_path, md_path, pdf_path, title: str = ""):
    """Table 1: long CSV (one row per condition x init), paper-layout Markdown, and the same as a PDF."""
    table = batch_table(summary)
    return write_tables(table, batch_table_wide(table), csv_path, md_path, pdf_path, title, TABLE1_NOTE)


@register_report("conditions", "summary", outputs=("csv", "md", "pdf"),
                 shows="regularised warm and fresh starts (Tables 2 and 5)")
def write_condition_table(summary, csv_path, md_path, pdf_path, title: str = ""):
    """Tables 2 and 5: per loss-term setting and init, phase-2 validation accuracy with the converged counts."""
    return write_tables(*condition_table(summary), csv_path, md_path, pdf_path, title, CONDITIONS_NOTE)


@register_report("inits", "summary", outputs=("csv", "md", "pdf"),
                 shows="warm starts with added noise vs a fresh start (Table 3)")
def write_init_table(summary, csv_path, md_path, pdf_path, title: str = ""):
    """Table 3: per init (warm starts with added noise, a fresh start), phase-2 validation accuracy and time."""
    return write_tables(*init_table(summary), csv_path, md_path, pdf_path, title, INITS_NOTE)
