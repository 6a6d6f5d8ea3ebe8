"""Spawn benchmark: the real hub, the real Docker engine, the real workspace image.

Prints the median (and all) times from a spawn request through the hub API to a ready server
over N sequential spawns, then the times of M concurrent spawns by M different users (all must
become ready) and the slowest. Runs on its own throw-away instance (ports 29000-29081).

    .venv/bin/python bench/bench_spawn.py [--sequential 5] [--concurrent 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.instance import Instance, build_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequential", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=10)
    args = ap.parse_args()

    print("image:", build_image())
    users = [f"bench{i:02d}" for i in range(max(args.concurrent, 1))]
    inst = Instance(prefix="twbench", subnet="172.29.8.0/24", port=29000, projects={
        "bench": (users, ["checker"], {
            "persons": "SELECT range AS person_id, range % 2 AS sex FROM range(1000)"}),
    })
    inst.start()
    try:
        tokens = {u: inst.token(u) for u in users}
        # one warm-up spawn (first use of the image's layers, page cache)
        inst.spawn(users[0], "bench", tokens[users[0]])
        inst.stop_server(users[0], "bench", tokens[users[0]])

        times = []
        for _ in range(args.sequential):
            times.append(inst.spawn(users[0], "bench", tokens[users[0]]))
            inst.stop_server(users[0], "bench", tokens[users[0]])
        print(f"sequential spawns: n={len(times)} median={statistics.median(times):.2f}s "
              f"min={min(times):.2f}s max={max(times):.2f}s "
              f"all={' '.join(f'{t:.2f}' for t in times)}")

        if args.concurrent:
            t0 = time.monotonic()
            with ThreadPoolExecutor(args.concurrent) as pool:
                conc = list(pool.map(lambda u: inst.spawn(u, "bench", tokens[u], timeout=300),
                                     users[: args.concurrent]))
            wall = time.monotonic() - t0
            print(f"concurrent spawns: n={len(conc)} all ready; slowest={max(conc):.2f}s "
                  f"median={statistics.median(conc):.2f}s wall={wall:.2f}s")
    finally:
        inst.stop()


if __name__ == "__main__":
    main()
