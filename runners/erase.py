"""``riskpipe erase-keys``: crypto-shred one data subject in the raw zone.

Destroys the subject's raw-zone key (every stored version) and leaves a
tombstone so the subject is never re-keyed, then prints a machine-readable
report: which key was destroyed and when, and which raw objects hold records
that are now unreadable. The GDPR erasure workflow (curated/warehouse deletes,
recomputation, the 72 h report) builds on this.
"""

from __future__ import annotations

import argparse
import json
import sys

from apache_beam.options.pipeline_options import PipelineOptions

from io_connectors.raw_zone import SubjectKeys, affected_objects
from runners.options import raw_settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="riskpipe erase-keys", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--subject", required=True, help="the subject id (e.g. KYC user id, card fingerprint)"
    )
    parser.add_argument(
        "--dataset", action="append", help="dataset(s) whose subject it is (default: every dataset)"
    )
    args, rest = parser.parse_known_args(argv)
    options = PipelineOptions(rest)
    settings = raw_settings(options)
    if settings is None:
        print("riskpipe: error: --raw is required (the raw zone root)", file=sys.stderr)
        return 2
    keys = SubjectKeys(settings.keys_uri, settings.key_provider.resolver())
    report = {"subject_refs": [], "destroyed": [], "affected_objects": {}}
    for dataset in args.dataset or ("payment_event", "chargeback", "kyc_profile"):
        result = keys.erase(dataset, args.subject)
        report["subject_refs"].append({"dataset": dataset, "subject_ref": result["subject_ref"]})
        if result["key_versions_destroyed"]:
            report["destroyed"].append(result)
        report["affected_objects"][dataset] = affected_objects(
            settings.raw_uri, dataset, result["subject_ref"]
        )
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0
