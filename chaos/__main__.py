"""`python -m chaos [SCENARIO ...] [--events N] [--seed S] [--keep]`: run the chaos suite.

Starts one real Kafka broker on free loopback ports (state in a temporary directory under
/tmp), runs the chosen scenarios (all by default) one after another, prints one line each
and exits non-zero if any failed. Every process it started is stopped by pid at the end,
also on Ctrl-C or SIGTERM. The temporary directory (logs of every process) is removed after
a clean run and kept after a failure or with --keep.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType

from chaos.cluster import Cluster
from chaos.scenarios import SCENARIOS, Context
from chaos.verify import Verdict


def _say(message: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop processes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"any of: {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--events", type=int, default=None, help="events per scenario")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    chosen = args.scenarios or list(SCENARIOS)
    signal.signal(signal.SIGTERM, _terminate)

    root = Path(tempfile.mkdtemp(prefix="rapport-chaos-", dir="/tmp"))
    cluster = Cluster(root)
    verdicts: list[Verdict] = []
    started = time.monotonic()
    print(f"chaos: {', '.join(chosen)}; state and logs in {root}", flush=True)
    try:
        _say(f"broker on {cluster.bootstrap} up in {cluster.broker_up():.1f} s")
        context = Context(cluster, args.events, args.seed, _say)
        for name in chosen:
            print(f"== {name}", flush=True)
            began = time.monotonic()
            try:
                verdict = SCENARIOS[name](context)
            except Exception as exc:
                traceback.print_exc()
                verdict = Verdict(name, sent=0)
                verdict.problems.append(f"{type(exc).__name__}: {exc}")
            verdict.elapsed_s = time.monotonic() - began
            verdicts.append(verdict)
            for note in verdict.notes:
                _say(note)
            for problem in verdict.problems:
                _say(f"PROBLEM: {problem}")
            print(verdict.line(), flush=True)
    finally:
        for line in cluster.close():
            _say(f"stopped {line}")
    ok = len(verdicts) == len(chosen) and all(v.ok for v in verdicts)
    print("== summary")
    for verdict in verdicts:
        print(verdict.line())
    print(
        f"{'PASS' if ok else 'FAIL'}: {sum(v.ok for v in verdicts)}/{len(chosen)} scenarios in "
        f"{time.monotonic() - started:.1f} s",
        flush=True,
    )
    if ok and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"logs kept in {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
