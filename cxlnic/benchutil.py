"""What every benchmark script shares: progress lines, run metadata, writing the JSON report."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["log", "git_info", "machine_meta", "write_report", "loadavg", "bench_main"]

ROOT = Path(__file__).resolve().parent.parent
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """A progress line on stderr, stamped with the seconds since the benchmark started."""
    print(f"[bench {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def loadavg():
    return os.getloadavg() if hasattr(os, "getloadavg") else None


def git_info() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout
        return {"git_commit": commit or "unknown", "git_dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": None}


def machine_meta(load_start) -> dict:
    """Commit, interpreter, machine, load and date: where and when the figures were measured."""
    return {
        **git_info(),
        "python": sys.version.split()[0], "implementation": platform.python_implementation(),
        "platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
        "cpu_count": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": loadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
    }


def write_report(path: Path, rep: dict) -> None:
    """Write the report atomically (a half-written JSON is never left behind)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rep, indent=1) + "\n")
    tmp.replace(path)


def bench_main(name: str, run: Callable, summary: Callable, args, mismatch: type[Exception]) -> int:
    """Run a benchmark and write ``<args.out>/<name>.json``.

    ``run(args)`` returns the report; raising ``mismatch`` means a result
    disagreed with the model, and then no report is written (exit 1): a
    speed is never reported for a wrong answer.
    """
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        rep = run(args)
    except mismatch as e:
        print(f"bench_{name}: {e}", file=sys.stderr)
        return 1
    rep["meta"]["runtime_s"] = round(time.perf_counter() - start, 2)
    path = args.out / f"{name}.json"
    write_report(path, rep)
    log(f"wrote {path} and {len(rep['plots'])} plot(s)")
    print(summary(rep))
    return 0
