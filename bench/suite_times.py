"""The suite's time, one test directory after another: wall clock and CPU (user + system, the processes a
test starts included), so that a change to the suite's speed has figures on a shared machine too.

Each directory (or file) runs in a pytest of its own, one at a time (never the whole suite at once):

    .venv/bin/python bench/suite_times.py [tests/cli tests/directory ...] [-- PYTEST_ARGS]

Without paths, every directory under tests/ and the files at its top. The wall clock is what the suite
costs on an idle machine; on a busy one only the CPU figure compares from one run to the next (the time
a test waits on a process, a socket or a sleep is not CPU, so wall >= CPU on an idle machine).
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def targets() -> list[list[str]]:
    tests = ROOT / "tests"
    dirs = sorted(p for p in tests.iterdir() if p.is_dir() and any(p.glob("test_*.py")))
    top = sorted(str(p.relative_to(ROOT)) for p in tests.glob("test_*.py"))
    return [[str(d.relative_to(ROOT))] for d in dirs] + ([top] if top else [])


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(paths: list[str], pytest_args: list[str]) -> tuple[float, float, str]:
    cpu, start = children_cpu(), time.monotonic()
    done = subprocess.run(  # noqa: S603 - pytest, on paths this script was given
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    return time.monotonic() - start, children_cpu() - cpu, lines[-1] if lines else f"exit {done.returncode}"


def main(argv: list[str]) -> None:
    paths, pytest_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    groups = [[p] for p in paths] if paths else targets()
    total_wall = total_cpu = 0.0
    for group in groups:
        wall, cpu, summary = run(group, pytest_args)
        total_wall, total_cpu = total_wall + wall, total_cpu + cpu
        print(f"{' '.join(group)[:40]:40} wall {wall:7.1f} s  cpu {cpu:7.1f} s  {summary}", flush=True)
    print(f"{'total':40} wall {total_wall:7.1f} s  cpu {total_cpu:7.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
