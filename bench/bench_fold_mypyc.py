"""What compiling the replay's fold with mypyc would give: `replayed` compiled against interpreted.

A trial, not a build step (of the Python fold: the native one, native/src/fold.rs, is off
here): it copies `events/`, `projections/`, `rapport/` and the mypy settings
(pyproject.toml) into a temporary
directory, compiles `projections/in_order.py` there with mypyc (from the dev dependencies; needs
gcc and the Python headers), and times `replayed` over bench_replay's relationships in two fresh
processes, one importing the copy (compiled) and one this tree (interpreted), on the same
touches. Both must give the same states (their stored JSON is compared).

    .venv/bin/python bench/bench_fold_mypyc.py [--events 250000]
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIMER = r"""
import gc, hashlib, json, pickle, sys, time
import projections.in_order as in_order
from projections.policy import DEFAULT_POLICY
from projections.relationship import replayed
from projections.tally import Touch
jobs = [(w, c, [Touch(*t) for t in ts]) for w, c, ts in pickle.load(open(sys.argv[1], "rb"))]
touches = sum(len(ts) for _, _, ts in jobs)
gc.disable()
best, digest = float("inf"), hashlib.sha256()
for _ in range(3):
    start = time.process_time()
    states = [replayed(w, c, ts, DEFAULT_POLICY, native=False) for w, c, ts in jobs]
    best = min(best, time.process_time() - start)
for state in states:
    digest.update(state.to_json())
compiled = not in_order.__file__.endswith(".py")
print(json.dumps({"us": best / touches * 1e6, "digest": digest.hexdigest(), "compiled": compiled}))
"""

SETUP = """
from setuptools import setup
from mypyc.build import mypycify
setup(name="rapport-fold-trial", ext_modules=mypycify(["projections/in_order.py"], opt_level="3"))
"""


def jobs_of(events: int) -> list[tuple[str, str, list[tuple[object, ...]]]]:
    from bench.bench_replay import records
    from projections.policy import DEFAULT_POLICY
    from streams.replay.recalculation import Recalculation, jobs_of

    calc = Recalculation(None, flat_rows=True)
    for _, value in records(events):
        calc.add(value)
    _, groups = calc.assign({})
    jobs, _ = jobs_of(groups, lambda _: DEFAULT_POLICY)
    return [(w, c, [tuple(t.to_json()) for t in ts]) for w, c, ts in jobs]


def timed(tree: Path, jobs: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", TIMER, str(jobs)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=250_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rapport-mypyc-") as tmp:
        copy = Path(tmp) / "tree"
        for package in ("events", "projections", "rapport"):
            shutil.copytree(ROOT / package, copy / package, ignore=shutil.ignore_patterns("*.so"))
        shutil.copy(ROOT / "pyproject.toml", copy)  # the mypy settings (pydantic plugin)
        (copy / "setup_trial.py").write_text(SETUP)
        built = subprocess.run(
            [sys.executable, "setup_trial.py", "build_ext", "--inplace"],
            cwd=copy,
            capture_output=True,
            text=True,
        )
        if built.returncode:  # no compiler here, say: the trial is not measured, and says why
            print(f"not measured: mypyc could not build the trial\n{built.stdout}{built.stderr}")
            return
        jobs = Path(tmp) / "jobs.pickle"
        made = jobs_of(args.events)
        jobs.write_bytes(pickle.dumps(made))
        touches = sum(len(ts) for _, _, ts in made)
        compiled, interpreted = timed(copy, jobs), timed(ROOT, jobs)
    assert compiled["compiled"] and not interpreted["compiled"]
    assert compiled["digest"] == interpreted["digest"], "the compiled fold differs"
    c, i = float(str(compiled["us"])), float(str(interpreted["us"]))
    print(f"{len(made):,} relationships, {touches:,} touches; the same states (sha256 of the JSON)")
    print(f"replayed, mypyc-compiled in_order   {c:.2f} us/touch (best of 3)")
    print(f"replayed, interpreted (baseline)    {i:.2f} us/touch (best of 3)")
    print(f"ratio                               {i / c:.2f}x")


if __name__ == "__main__":
    main()
