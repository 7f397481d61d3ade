"""Run one implementation on one workload in this (fresh) process; print one JSON line.

Owns process-level measurement (peak RSS); the orchestrator (run.py) times the whole
process from outside and aggregates.
"""

from __future__ import annotations

import json
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from impls import IMPLS


def main() -> None:
    impl, workload = sys.argv[1], sys.argv[2]
    first_step = len(sys.argv) > 3 and sys.argv[3] == "first_step"
    result = IMPLS[impl][1](workload, first_step=first_step)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
