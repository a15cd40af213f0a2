"""The HTML report's words: each report's caption (what it shows, the tables it reads, the files it
writes), each experiment's (the protocol and the config behind it), and the front page's headline
numbers. Imports nothing heavy at module level."""
from __future__ import annotations

from pathlib import Path

from warmstart.reports.registry import Report

# What a row of each experiment table is, for the captions (``Report.tables`` names the tables).
TABLE_ROWS = {"summary": "a row per run", "epochs": "a row per run and epoch", "rounds": "a row per stream and round"}
FILE_FORMATS = {"csv": "CSV", "md": "Markdown", "pdf": "PDF", "png": "PNG"}


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line ("" without a docstring)."""
    import inspect

    return inspect.cleandoc(doc or "").split("\n\n")[0].replace("\n", " ")


def caption(name: str, exp: dict, report: Report, kind) -> str:
    """The HTML report's caption of an experiment's figure or table (reStructuredText): what it shows
    (the report's docstring), the protocol (the experiment kind's) and the config values behind it."""
    import yaml

    settings = yaml.safe_dump({name: exp}, sort_keys=False, default_flow_style=None, width=100)
    block = "\n".join("    " + line for line in settings.splitlines())
    return (f"**{name}** (experiment kind ``{exp['kind']}``, report ``{exp['report']}``). "
            f"{first_paragraph(report.draw.__doc__)}\n\n"
            f"*Protocol.* {first_paragraph(kind.plan.__doc__)}\n\n"
            f"*Config* (``experiments:`` entry; the labels it names are defined in the config shown on the "
            f"report's front page)::\n\n{block}\n")


def caption_template(name: str, report: Report) -> str:
    """Report ``name``'s caption in the HTML report (``snakemake --report``), a Snakemake caption template
    (reStructuredText and Jinja): the experiment's ``caption`` (the rule's ``caption`` param), then the
    report's own entry: what it shows, the experiment tables it reads and the files it writes. The
    workflow keeps one per report in workflow/report/captions/<name>.rst (``write_caption_templates``)."""
    tables = " and ".join(f"``{t}.parquet`` ({TABLE_ROWS[t]})" for t in report.tables)
    files = [FILE_FORMATS[ext] for ext in (*report.outputs, "png")]
    return (f".. The caption of report ``{name}``, written from its entry in warmstart.reports.REPORTS by\n"
            f"   ``python -m warmstart.reports captions workflow/report/captions``: edit the entry, then run it.\n\n"
            "{{ snakemake.params.caption }}\n\n"
            f"*Report* ``{name}``: {report.shows}. It reads the experiment's {tables} and writes "
            f"{', '.join(files[:-1])} and {files[-1]}.\n")


def write_caption_templates(reports, folder) -> list[Path]:
    """Every report's ``caption_template`` as ``folder``/<report>.rst (what workflow/report/captions/
    holds); run by hand after a report's entry changes, never by the workflow. Returns the files."""
    from warmstart.core.io import write_text_if_changed

    written = []
    for name, report in reports.items():
        written.append(Path(folder) / f"{name}.rst")
        write_text_if_changed(written[-1], caption_template(name, report))
    return written


# -- the front page: figures/<...>/index.html ------------------------------------------------------------

def headline_numbers(figures_dir) -> list[str]:
    """The front page's headline sentences (HTML), from the tables the workflow wrote: Table 1's gap (warm
    minus random init, percentage points, per condition), the leaderboard's top arms per protocol and
    each condition's gap (``leaderboard_lines``), and the warm start's online compute against random
    init's. A table not there is skipped."""
    import html

    import pandas as pd

    figures_dir, lines = Path(figures_dir), []
    table1 = figures_dir / "table1.csv"
    if table1.exists():
        t = pd.read_csv(table1)
        gaps = []
        for cond, part in t.groupby(["dataset", "model", "optimizer"], sort=False):
            acc = part.set_index("init")["val_acc_mean"]
            if {"warm", "random"} <= set(acc.index):
                gaps.append(f"{' / '.join(map(str, cond))}: {acc['warm'] - acc['random']:+.1f}")
        if gaps:
            lines.append("<b>Table 1's gap</b> (warm start minus random init, validation accuracy, percentage "
                         "points): " + html.escape("; ".join(gaps)))
    board = figures_dir / "leaderboard.csv"
    if board.exists():
        lines += leaderboard_lines(pd.read_csv(board))
    return lines


def leaderboard_lines(b) -> list[str]:
    """The leaderboard's headline sentences (HTML): per protocol, the top arms by accuracy minus the warm
    start on the report split (95% interval; gap closed where there is a gap), each condition's gap, and
    the warm start's online compute. Reads the CSV ``reports.leaderboard`` writes."""
    import html

    split = str(b["report_split"].iloc[0]) if "report_split" in b.columns and len(b) else "test"
    name = {"test": "test", "val": "validation (also the selection data)"}.get(split, split)

    def pts(m, lo, hi) -> str:
        return f"{100 * m:+.1f}" + ("" if lo != lo else f" [{100 * lo:+.1f}, {100 * hi:+.1f}]")

    lines = []
    for protocol, part in b.groupby("protocol", sort=False):
        remedies = part[(part["role"] == "remedy") & (part["status"].astype(str) != "not exercised")]
        top = remedies.sort_values(f"{split}_vs_warm_mean", ascending=False, kind="stable").head(3)
        arms = ", ".join(
            f"{r['remedy']} ({pts(r[f'{split}_vs_warm_mean'], r[f'{split}_vs_warm_low'], r[f'{split}_vs_warm_high'])}"
            f" points over warm" + (f", {r['gap_closed']:.2f} of the gap" if r["gap_exists"] else "")
            + f", {r['samples_rel']:.2f}x random init's samples)" for _, r in top.iterrows())
        if arms:
            lines.append(f"<b>Leaderboard, {html.escape(str(protocol))}</b> ({html.escape(name)} accuracy, "
                         f"settings chosen on validation; 95% intervals over paired seeds): top arms by "
                         f"accuracy minus warm start: " + html.escape(arms))
        gaps = []
        for cond, c in part.groupby(["dataset", "model", "optimizer"], sort=False):
            r = c.iloc[0]
            gap = pts(r[f"{split}_gap_mean"], r[f"{split}_gap_low"], r[f"{split}_gap_high"])
            gaps.append(f"{' / '.join(map(str, cond))}: {gap}" + ("" if r["gap_exists"] else " (no gap to close)"))
        if gaps:
            lines.append(f"random init minus warm start, {html.escape(str(protocol))}: " + html.escape("; ".join(gaps)))
    for _, r in b[(b["protocol"] == "online") & (b["role"] == "baseline")].iterrows():
        time = "" if r["time_rel"] != r["time_rel"] else f" ({r['time_rel']:.2f}x its time)"
        lines.append(f"<b>Online cost</b> ({html.escape(str(r['model']))}): the warm start processes "
                     f"{r['samples_rel']:.2f}x random init's samples over the stream{time}, at "
                     f"{100 * r[f'{split}_acc_mean']:.1f}% {html.escape(name)} accuracy in the final round")
    for _, r in b[(b["protocol"] == "online") & (b["role"] == "target")].iterrows():
        lines.append(f"random init, online ({html.escape(str(r['model']))}): "
                     f"{100 * r[f'{split}_acc_mean']:.1f}% {html.escape(name)} accuracy")
    return lines


def front_page(figures_dir, entries: list[dict], config_name: str = "") -> str:
    """The HTML report's front page: what the project answers, the headline numbers, and each figure and
    table (its PNG, title, caption and links to its PDF / CSV / Markdown), all by relative links.
    ``entries``: dicts with experiment, title, caption, files (file names beside the page)."""
    import html

    items = []
    for e in entries:
        links = " · ".join(f'<a href="{html.escape(f)}">{html.escape(f.rsplit(".", 1)[-1].upper())}</a>'
                           for f in e["files"] if not f.endswith(".png"))
        png = next((f for f in e["files"] if f.endswith(".png")), None)
        anchor = html.escape(e["experiment"])
        items.append(
            f'<section id="{anchor}"><h2><a href="#{anchor}">{html.escape(e["title"])}</a></h2>'
            + (f'<a href="{html.escape(png)}"><img src="{html.escape(png)}" alt="{html.escape(e["title"])}" '
               f'loading="eager"></a>' if png else "")
            + f'<p class="caption">{html.escape(e["caption"])}</p><p class="files">{links}</p></section>')
    toc = "".join(f'<li><a href="#{html.escape(e["experiment"])}">{html.escape(e["title"])}</a></li>'
                  for e in entries)
    headline = "".join(f"<li>{line}</li>" for line in headline_numbers(figures_dir)) or \
        "<li>(no headline tables yet: run the workflow)</li>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>warmstart: results</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.4}}
img{{max-width:100%;border:1px solid #ddd}} section{{margin:2.5em 0}} .caption{{color:#333}}
.files a{{margin-right:.5em}}</style></head>
<body>
<h1>warmstart: does warm-starting hurt generalisation, and what repairs it?</h1>
<p>Ash &amp; Adams, "On the Difficulty of Warm-Starting Neural Network Training", reproduced as a workflow
{('(config: ' + html.escape(config_name) + ')') if config_name else ''}: a model first trained on part
of the data (phase 1) warm-starts training on all of it (phase 2), against a fresh random init; the
leaderboard compares remedies for the warm start's lost accuracy.</p>
<h2>Headline numbers</h2><ul id="headline">{headline}</ul>
<h2>Figures and tables</h2><ol id="contents">{toc}</ol>
{"".join(items)}
<script>
window.addEventListener("load", function () {{
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
  document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
}});
</script>
</body></html>
"""
