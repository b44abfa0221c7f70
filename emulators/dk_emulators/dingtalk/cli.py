"""``python -m dk_emulators.dingtalk``: serve the emulator in the foreground, with instances from a
seed file or generated claims."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from dk_emulators._server import serve_forever
from dk_emulators.dingtalk import seed
from dk_emulators.dingtalk.emulator import DingTalkEmulator
from dk_emulators.dingtalk.stream import DEFAULT_PING_SECONDS, DEFAULT_REDELIVERY_SECONDS, DEFAULT_RETENTION_SECONDS
from dk_emulators.dingtalk.wire import CHINA_TZ, DEFAULT_PROCESS_CODE, WRAP_STYLES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dk_emulators.dingtalk",
        description="Serve a local emulator of the DingTalk approval API (oapi style).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--app-key", default="demo-app-key")
    parser.add_argument("--app-secret", default="demo-app-secret")
    parser.add_argument("--qps", type=int, default=20,
                        help="calls per second per app per API (0 = unlimited)")
    parser.add_argument("--latency-ms", type=float, default=0, help="added to every API answer")
    parser.add_argument("--token-ttl", type=float, default=7200, help="access token validity in seconds")
    parser.add_argument("--wrap-errors", choices=WRAP_STYLES, default="alternate")
    parser.add_argument("--process-code", default=DEFAULT_PROCESS_CODE)
    parser.add_argument("--monthly-quota", type=int, default=None,
                        help="metered calls per calendar month before errcode 90020 (default: no quota)")
    parser.add_argument("--stream-ping-seconds", type=float, default=DEFAULT_PING_SECONDS,
                        help="Stream mode: seconds between ping frames")
    parser.add_argument("--stream-redelivery-seconds", type=float, default=DEFAULT_REDELIVERY_SECONDS,
                        help="Stream mode: seconds before an event not acked with 200 is delivered again")
    parser.add_argument("--stream-retention-seconds", type=float, default=DEFAULT_RETENTION_SECONDS,
                        help="Stream mode: age (emulator clock) past which an unacked event is lost")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--seed-file", help="JSON list of instances to serve")
    source.add_argument("--generate", type=int, metavar="N", help="generate N expense claims")
    parser.add_argument("--start", help="first creation date of generated claims (YYYY-MM-DD, China time); "
                                        "default 30 days ago")
    parser.add_argument("--end", help="end (exclusive) of generated creation dates; default now")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generator")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    instances: list[dict] = []
    if args.seed_file:
        instances = seed.load_seed_file(args.seed_file)
    elif args.generate:
        now = datetime.now(CHINA_TZ)
        start = (datetime.fromisoformat(args.start).replace(tzinfo=CHINA_TZ) if args.start
                 else now - timedelta(days=30))
        end = datetime.fromisoformat(args.end).replace(tzinfo=CHINA_TZ) if args.end else now
        config = seed.SeedConfig(count=args.generate, start=start, end=end, seed=args.seed,
                                process_code=args.process_code)
        instances = [claim.instance for claim in seed.generate_claims(config)]
    emulator = DingTalkEmulator(
        app_key=args.app_key, app_secret=args.app_secret, qps=args.qps or None, latency_ms=args.latency_ms,
        token_ttl=args.token_ttl, instances=instances, process_codes=[args.process_code],
        wrap_errors=args.wrap_errors, monthly_quota=args.monthly_quota,
        stream_ping_seconds=args.stream_ping_seconds, stream_redelivery_seconds=args.stream_redelivery_seconds,
        stream_retention_seconds=args.stream_retention_seconds,
    )
    print(f"DingTalk emulator: {emulator.instance_count} instances, process code {args.process_code}, "
          f"http://{args.host}:{args.port}", flush=True)
    serve_forever(emulator.app, args.host, args.port)
