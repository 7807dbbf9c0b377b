"""Run every bench/bench_*.py in turn; each prints its own ratios against an in-process baseline."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    scripts = sorted(here.glob("bench_*.py"))
    only = set(sys.argv[1:])
    for script in scripts:
        if only and script.stem not in only:
            continue
        print(f"== {script.name}", flush=True)
        runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
