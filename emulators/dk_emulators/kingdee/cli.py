"""``python -m dk_emulators.kingdee``: serve the emulator in the foreground."""

from __future__ import annotations

import argparse

from dk_emulators._server import serve_forever
from dk_emulators.demo_data import DEMO_DIR_ENV
from dk_emulators.kingdee.auth import DEMO_APP_ID, DEMO_APP_SECRET
from dk_emulators.kingdee.emulator import KingdeeEmulator, default_basedata


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dk_emulators.kingdee",
                                     description="Serve the Kingdee K/3Cloud WebAPI emulator over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8802)
    parser.add_argument("--basedata", default=None,
                        help=f"base-data JSON file (default: kingdee_basedata.json of ${DEMO_DIR_ENV}, "
                             f"else of the checkout's include/demo; now {default_basedata()})")
    parser.add_argument("--db", default=":memory:", help="SQLite file for bills (default: in memory)")
    parser.add_argument("--acct-id", default="demo-acct")
    parser.add_argument("--user", default="demo")
    parser.add_argument("--password", default="demo-password")
    parser.add_argument("--app-id", default=DEMO_APP_ID, help="signature-mode app id <clientId>_<32 chars>")
    parser.add_argument("--app-secret", default=DEMO_APP_SECRET)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--session-ttl", type=float, default=1800, help="seconds")
    parser.add_argument("--max-clock-skew", type=float, default=None,
                        help="refuse signatures whose timestamp is further than this from now (seconds)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    emulator = KingdeeEmulator(basedata=args.basedata, db_path=args.db, acct_id=args.acct_id,
                               users={args.user: args.password}, apps={args.app_id: args.app_secret},
                               latency_ms=args.latency_ms, session_ttl=args.session_ttl,
                               max_clock_skew_s=args.max_clock_skew)
    print(f"Kingdee emulator: http://{args.host}:{args.port}/k3cloud/ (acct {args.acct_id}, "
          f"user {args.user}, app {args.app_id})", flush=True)
    serve_forever(emulator.asgi, args.host, args.port)
