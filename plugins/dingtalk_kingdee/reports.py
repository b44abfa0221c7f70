"""``python -m dingtalk_kingdee.reports --scheme <id or file> [--run RUN_ID | --instance-ids ID ...]``.

Prints, from the staging database (``STAGING_DATABASE_URL``), the report of a scheme's claims with
every problem line (the run report's log stops after 50): actionable first, not approved last. Scope:
``--instance-ids`` those claims; ``--run`` the claims that run was the last to list or whose bill it
last moved; neither, every claim of the scheme. Money with the bills' currency.
"""

from __future__ import annotations

import argparse
import sys

from dingtalk_kingdee import staging
from dingtalk_kingdee.errors import SchemeError
from dingtalk_kingdee.pipeline.report_step import summary_lines
from dingtalk_kingdee.settings import get_settings
from dingtalk_kingdee.valuemaps.cli import find_scheme


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dingtalk_kingdee.reports",
                                     description="Every rejected claim and problem bill of a scheme, from staging.")
    parser.add_argument("--scheme", required=True, help="scheme id (in DK_SCHEMES_DIR) or path of its YAML file")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--run", help="the claims this DAG run listed or whose bill it moved")
    scope.add_argument("--instance-ids", nargs="+", metavar="ID", help="exactly these claims")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        scheme = find_scheme(args.scheme)
    except SchemeError as error:
        parser.error(str(error))  # exits with status 2 and the usage
    found = staging.SchemeStaging(staging.connect(get_settings().staging_database_url), scheme.id).summary(
        run_id=args.run, instance_ids=args.instance_ids)
    scope = (f"run {args.run}" if args.run else f"{len(args.instance_ids)} named claims" if args.instance_ids
             else "all claims")
    head, body, _ = summary_lines(scheme, found, f"Report for scheme {scheme.id} ({scope})")
    print("\n".join([*head, *body]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
