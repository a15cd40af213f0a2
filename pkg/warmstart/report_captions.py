"""The HTML report's words: each figure's caption (what it shows, the protocol, the config behind it)
and the front page's headline numbers. Imports nothing heavy at module level."""
from __future__ import annotations

from .report_registry import Report


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


# -- the front page: figures/<...>/index.html ------------------------------------------------------------

def headline_numbers(figures_dir) -> list[str]:
    """The front page's headline sentences (HTML), from the tables the workflow wrote: Table 1's gap (warm
    minus random init, percentage points, per condition), the leaderboard's top arms per protocol, and
    the warm start's online compute against random init's. A table not there is skipped."""
    import html
    from pathlib import Path

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
        b = pd.read_csv(board)
        for protocol, part in b.groupby("protocol", sort=False):
            top = part[part["role"] == "remedy"].sort_values("gap_closed_mean", ascending=False).head(3)
            arms = ", ".join(f"{r} ({g:.2f} of the gap, {t:.2f}x random init's time)"
                             for r, g, t in zip(top["remedy"], top["gap_closed_mean"], top["time_rel"]))
            if arms:
                lines.append(f"<b>Leaderboard, {html.escape(str(protocol))}</b>: top arms by gap closed: "
                             + html.escape(arms))
        online = b[(b["protocol"] == "online") & (b["role"] == "baseline")]
        for _, r in online.iterrows():
            lines.append(f"<b>Online cost</b> ({html.escape(str(r['model']))}): the warm start trains in "
                         f"{r['time_rel']:.2f}x random init's time over the stream, at "
                         f"{100 * r['val_acc_mean']:.1f}% validation accuracy")
        target = b[(b["protocol"] == "online") & (b["role"] == "target")]
        for _, r in target.iterrows():
            lines.append(f"random init, online ({html.escape(str(r['model']))}): "
                         f"{100 * r['val_acc_mean']:.1f}% validation accuracy")
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
