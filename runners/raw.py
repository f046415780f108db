"""``riskpipe raw init|check URI --kms-key-id K``: set up and verify the raw-zone bucket."""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="riskpipe raw", description="set up / check the raw-zone bucket")
    parser.add_argument("action", choices=("init", "check"))
    parser.add_argument("uri", help="s3://bucket[/prefix]")
    parser.add_argument("--kms-key-id", "--kms_key_id", dest="kms_key_id", default=None)
    parser.add_argument("--retention-days", type=int, default=None)
    args = parser.parse_args(argv)
    from io_connectors.raw_bucket import RETENTION_DAYS, check_raw_bucket, init_raw_bucket

    days = args.retention_days or RETENTION_DAYS
    if args.action == "init":
        if not args.kms_key_id:
            print("riskpipe: error: raw init needs --kms-key-id (the KMS key for SSE-KMS)", file=sys.stderr)
            return 2
        print(
            json.dumps(init_raw_bucket(args.uri, args.kms_key_id, retention_days=days), indent=2, default=str)
        )
        return 0
    problems = check_raw_bucket(args.uri, args.kms_key_id, retention_days=days)
    for problem in problems:
        print(f"problem: {problem}")
    print(f"raw bucket {args.uri}: {'compliant' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0
