"""`fitkit launch` test helper: print this process's rank as its launcher set it, then fail
(--fail-rank R --code C), sleep (--sleep S) or, with --pid-dir, leave its pid in a file and
print "rank R started". With --started FIFO (a named pipe the test made, two ranks), the failing
rank fails only once the other rank has written its pid file (it waits on the pipe, no timer)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--fail-rank", type=int, default=None)
parser.add_argument("--code", type=int, default=3)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--pid-dir", default=None)
parser.add_argument("--started", default=None)
args = parser.parse_args()

if os.environ.get("TF_CONFIG"):
    config = json.loads(os.environ["TF_CONFIG"])
    rank, size, source = config["task"]["index"], len(config["cluster"]["worker"]), "TF_CONFIG"
else:
    rank, size, source = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), "RANK"
print(f"hello from {source} {rank} of {size}, FITKIT_BACKEND={os.environ.get('FITKIT_BACKEND')}")
print(f"a stderr line from {rank}", file=sys.stderr)

import fitkit  # noqa: E402  (after the prints: the launcher's environment is what is tested)

print(f"fitkit.distribute: rank {fitkit.distribute.rank()} of {fitkit.distribute.world_size()}")
if args.pid_dir:
    with open(os.path.join(args.pid_dir, f"rank{rank}.pid"), "w") as file:
        file.write(str(os.getpid()))
    print(f"rank {rank} started", flush=True)
if args.started:  # a FIFO: opening blocks until both ends are open, read returns at close
    if args.fail_rank == rank:
        with open(args.started) as pipe:
            pipe.read()
    else:
        with open(args.started, "w") as pipe:
            pipe.write(f"rank {rank} started\n")
if args.fail_rank == rank:
    print(f"rank {rank} fails with code {args.code}", file=sys.stderr)
    sys.exit(args.code)
time.sleep(args.sleep)
print(f"rank {rank} done")
