#!/usr/bin/env python3
"""Every benchmark's default run, one after the other: what `make bench` runs.

    sudo .venv/bin/python bench/all.py [--only NAME ...] [--workdir DIR]

Runs call setup, connections, registrations (its suite), bridged calls and request throughput, each side by side
with raw Janus (see bench/README.md), streams their output, and ends with the machine, each benchmark's time and
its SUMMARY lines. The figures are in bench/results/<name>.json; logs stay in one folder per benchmark under the
work folder. A benchmark that fails is reported and the others still run; the exit status says whether all passed.
Each one bounds its own waits; on top of that each gets a hard time limit here.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import install_signal_handlers, log, machine, print_machine, require_root  # noqa: E402

BENCH = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Benchmark:
    name: str
    args: tuple[str, ...]
    limit: float  # seconds; the default run takes well under it


# In the order of the issue: call setup, connections, registrations, bridged calls, request throughput.
BENCHMARKS = (
    Benchmark("callsetup", (), 180),
    Benchmark("connections", (), 300),
    Benchmark("registrations", ("--suite",), 600),
    Benchmark("bridged", (), 360),
    Benchmark("throughput", (), 240),
)


@dataclass
class Outcome:
    benchmark: Benchmark
    seconds: float
    status: str  # "ok", "failed (exit N)" or "timed out"
    summaries: list[str]


def run(benchmark: Benchmark, workdir: Path) -> Outcome:
    """Run one benchmark in its own process group, echoing its output; kill the group if it overruns."""
    folder = workdir / benchmark.name
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(BENCH / f"{benchmark.name}.py"), *benchmark.args, "--workdir", str(folder)]
    log(f"=== {benchmark.name}: {' '.join(command[1:])}")
    summaries: list[str] = []
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    assert process.stdout is not None
    deadline = started + benchmark.limit
    timed_out = False

    def overrun(signum: int, frame: object) -> None:
        nonlocal timed_out
        timed_out = True
        os.killpg(process.pid, signal.SIGTERM)
    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(int(benchmark.limit))
    try:
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("SUMMARY"):
                summaries.append(line.rstrip("\n"))
        process.wait(timeout=max(1.0, deadline + 30 - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the benchmark (in its own session) stops what it started
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        raise
    finally:
        signal.alarm(0)
    seconds = time.monotonic() - started
    status = "timed out" if timed_out else "ok" if process.returncode == 0 else f"failed (exit {process.returncode})"
    return Outcome(benchmark, seconds, status, summaries)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHMARKS], help="run only these")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temporary folder)")
    options = parser.parse_args()
    require_root("bench/all.py")
    install_signal_handlers()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sylkgateway-bench-"))
    chosen = [b for b in BENCHMARKS if not options.only or b.name in options.only]
    started = time.monotonic()
    outcomes = [run(benchmark, workdir) for benchmark in chosen]
    print()
    print_machine(machine())
    print(f"\n{len(outcomes)} benchmarks in {time.monotonic() - started:.0f} s (logs: {workdir})")
    for outcome in outcomes:
        print(f"  {outcome.benchmark.name:<14} {outcome.seconds:6.0f} s  {outcome.status}")
    print()
    for outcome in outcomes:
        for summary in outcome.summaries:
            print(summary)
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
