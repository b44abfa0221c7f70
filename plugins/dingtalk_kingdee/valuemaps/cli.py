"""``python -m dingtalk_kingdee.valuemaps suggest --scheme <id or file> [--apply]``.

Reads the DingTalk contacts and the Kingdee base data through the scheme's Airflow connections,
writes ``<map>.proposal.csv`` beside every value map with ``suggest:``, prints what it found, and with
``--apply`` appends the unambiguous lines to the maps. Exit status 0 even with conflicts: they are
for a person to decide, not errors; 2 for an unknown scheme; 3 when DingTalk's calls are not to be
spent (the month's call budget reached, or the quota exhausted: errcode 90020, not retried).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dingtalk_kingdee.errors import DingTalkCallBudgetReached, DingTalkQuotaExhausted, SchemeError
from dingtalk_kingdee.scheme import Scheme, load_scheme, load_schemes
from dingtalk_kingdee.settings import get_settings


def find_scheme(reference: str, schemes_dir: Path | None = None) -> Scheme:
    """A scheme by file path, or by id among the schemes folder's files."""
    path = Path(reference)
    if path.suffix in {".yaml", ".yml"} or path.is_file():
        return load_scheme(path)
    folder = schemes_dir or get_settings().schemes_dir
    for scheme in load_schemes(folder):
        if scheme.id == reference:
            return scheme
    raise SchemeError(f'no scheme with id "{reference}" in {folder}')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dingtalk_kingdee.valuemaps",
                                     description="Value maps built from DingTalk contacts and Kingdee base data.")
    commands = parser.add_subparsers(dest="command", required=True)
    suggest = commands.add_parser("suggest", help="write a proposal beside each value map (and apply it)")
    suggest.add_argument("--scheme", required=True, help="scheme id (in DK_SCHEMES_DIR) or path of its YAML file")
    suggest.add_argument("--apply", action="store_true",
                         help="append the unambiguous proposed lines to the maps (never changes existing lines)")
    suggest.add_argument("--schemes-dir", type=Path, default=None, help="where to look up a scheme id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dingtalk_kingdee.valuemaps.run import suggest_for_scheme

    try:
        scheme = find_scheme(args.scheme, args.schemes_dir)
    except SchemeError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        result = suggest_for_scheme(scheme, apply=args.apply)
    except DingTalkCallBudgetReached as error:
        print(error, file=sys.stderr)
        return 3
    except DingTalkQuotaExhausted as error:
        print(f"scheme {scheme.id}: DingTalk's monthly call quota is exhausted (errcode 90020), so the contacts "
              f"cannot be read; not retried, no proposal written. It comes back on the 1st of next month (China "
              f"time) or with a bought pack. {error}", file=sys.stderr)
        return 3
    print(result.text())
    return 0
