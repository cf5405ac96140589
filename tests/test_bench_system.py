"""scripts/bench_system.py: the Amaranth-simulator half of the simulator comparison, and option checks.
(The Verilator halves run in ``make bench``; the system harness itself is tested by test_system_rtl.py.)"""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mod():
    spec = importlib.util.spec_from_file_location("bench_system", ROOT / "scripts" / "bench_system.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_pysim_half_runs_the_checked_workload():
    res = _mod().cxl_mem_pysim(120)
    # the random traffic ran through the CXL.mem subordinate and the shadow checker compared reads
    assert res["cycles"] > 120 and res["checked"] > 0 and res["wall_s"] > 0


@pytest.mark.parametrize("argv", [["--packets", "5"], ["--ops", "3"], ["--speed-packets", "1"]])
def test_bad_options(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as e:
        _mod().main(["--out", str(tmp_path), *argv])
    assert e.value.code == 2 and not (tmp_path / "system.json").exists()
    assert "must be" in capsys.readouterr().err
