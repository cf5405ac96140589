"""Shared by the benchmark tests: run a bench script's --quick mode and sanity-check its report."""

import importlib.util
import json
import math
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load_script(name: str):
    """Import ``scripts/bench_<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", SCRIPTS / f"bench_{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def quick_report(name: str, out: Path) -> dict:
    """Run ``bench_<name>.py --quick`` into ``out``; returns ``<name>.json``."""
    assert load_script(name).main(["--quick", "--out", str(out)]) == 0
    return json.loads((out / f"{name}.json").read_text())


def num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_meta(meta: dict) -> None:
    """What every report's ``meta`` must say: where, when and how the figures were measured."""
    assert isinstance(meta["git_commit"], str) and meta["git_commit"]
    for key in ("python", "platform", "machine", "date"):
        assert isinstance(meta[key], str) and meta[key]
    assert isinstance(meta["cpu_count"], int) and meta["cpu_count"] >= 1
    assert num(meta["runtime_s"]) and meta["runtime_s"] > 0
    assert meta["quick"] is True
