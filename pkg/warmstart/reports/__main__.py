"""``python -m warmstart.reports captions DIR``: every report's caption template into DIR (the workflow's
are in workflow/report/captions/, one per report; tests/test_html_report.py checks they are current)."""
from __future__ import annotations

import argparse

from warmstart.reports import REPORTS
from warmstart.reports.captions import write_caption_templates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m warmstart.reports", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("captions", help="write each report's caption template into a folder").add_argument("folder")
    args = parser.parse_args(argv)
    for path in write_caption_templates(REPORTS, args.folder):
        print(path)


if __name__ == "__main__":
    main()
