"""Compare a checkov JSON report with hack/checkov-skips.yaml: every failed check must be listed there.

A skip entry names a check id, the resources it applies to (checkov's ``Kind.namespace.name`` or ``*``)
and the reason. Exit 1 on a finding that is not listed (a new problem) or on an entry that matches no
finding (stale: the problem is gone, so is its excuse).
"""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def failed_checks(report: Any) -> list[tuple[str, str, str]]:
    reports = report if isinstance(report, list) else [report]
    out = []
    for rep in reports:
        for check in (rep.get("results") or {}).get("failed_checks", []):
            out.append((check["check_id"], check["resource"], check.get("check_name", "")))
    return sorted(set(out))


def main(report_path: str, skips_path: str) -> int:
    report = json.loads(Path(report_path).read_text(encoding="utf-8") or "[]")
    skips = yaml.safe_load(Path(skips_path).read_text(encoding="utf-8")) or []
    for i, skip in enumerate(skips):
        if not {"check", "resources", "reason"} <= set(skip) or not str(skip["reason"]).strip():
            print(f"{skips_path}: entry {i} needs check, resources and a reason", file=sys.stderr)
            return 1
    used: set[int] = set()
    new = []
    findings = failed_checks(report)
    for check_id, resource, name in findings:
        hits = [
            i
            for i, s in enumerate(skips)
            if s["check"] == check_id and any(fnmatch.fnmatchcase(resource, p) for p in s["resources"])
        ]
        if hits:
            used.update(hits)
        else:
            new.append(f"{check_id} {resource}: {name}")
    stale = [f"{s['check']} {s['resources']}" for i, s in enumerate(skips) if i not in used]
    print(f"checkov: {len(findings)} finding(s), all but {len(new)} listed in {skips_path}")
    for line in new:
        print(f"  NEW (fix it, or list it with a reason): {line}")
    for line in stale:
        print(f"  STALE skip entry (no longer found; remove it): {line}")
    return 1 if new or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
