"""System runs: the SmartNic in the simulation harness against the golden slow path (tb/system.py).

Each scenario runs a short seed in ``make test`` (the Verilator build is shared by all of them);
``make regress`` adds long seeds.  Every run asserts zero mismatches over every output frame,
upcall, drop, reinjected frame, counter line and table line.
"""

import json

import pytest

SHORT = [("mixed", 3000, 1), ("static", 1500, 2), ("conntrack", 2000, 3), ("malformed", 1500, 4),
         ("storm", 2500, 5), ("nearfull", 1500, 6)]
LONG = [("mixed", 40000, 11), ("reactive", 20000, 12), ("conntrack", 20000, 13), ("storm", 20000, 14),
        ("nearfull", 10000, 15)]
#: Type 1 (tables in host memory behind CXL.cache, a Python home agent in the loop every cycle)
LONG1 = [("conntrack", 6000, 22), ("nearfull", 3000, 23)]


def _run(tmp_path, scenario, packets, seed, cxl_type=2, **extra):
    from cxlnic.tb.harness import run_system_sim

    out = tmp_path / "sim"
    run_system_sim({"CXLNIC_SCENARIO": scenario, "CXLNIC_PACKETS": str(packets), "CXLNIC_SEED": str(seed),
                    "CXLNIC_SIM_OUT": str(out), **extra}, seed=seed, cxl_type=cxl_type)
    rep = json.loads((out / "report.json").read_text())
    assert rep["mismatches"] == 0
    return rep


# one xdist worker runs every test of a build (``make test`` uses --dist loadgroup), so no worker waits
# on another's Verilator build of the same harness
TYPE2 = pytest.mark.xdist_group("system_type2")
TYPE1 = pytest.mark.xdist_group("system_type1")


@pytest.mark.sim
@TYPE2
@pytest.mark.parametrize("scenario,packets,seed", SHORT, ids=[s[0] for s in SHORT])
def test_system(tmp_path, scenario, packets, seed):
    rep = _run(tmp_path, scenario, packets, seed)
    p = rep["paths"]
    assert sum(p.values()) == packets
    if scenario in ("mixed", "conntrack", "storm", "nearfull"):
        assert rep["slow_path"]["installs"] > 0 and rep["slow_path"]["reinjected"] > 0
        assert p["flow"] > 0, "no frame took the fast path after an install"
    if scenario == "storm":
        s = rep["slow_path"]
        assert s["storm_inserts"] > 100 and s["gated_copies"] > 0 and s["hot_frames"] > 0
        # the model says a frame sent at its install's Cmp takes the fast path (reactive flows); the device agreed
        assert s["gated_fast"] >= 0.8 * s["gated_copies"], s
    if scenario == "nearfull":
        assert rep["slow_path"]["install_failures"] > 0, "the table never overflowed to the software path"
    if scenario == "malformed":
        assert p["exception"] > 0
    assert rep["counters_verified"] > 0 and rep["compared"]["table_lines"] > 0


@pytest.mark.sim
@TYPE2
def test_system_backpressure(tmp_path):
    """Output sinks refusing ~30 % of beats: nothing lost, nothing reordered."""
    rep = _run(tmp_path, "mixed", 1500, 7, CXLNIC_OUT_STALL="80")
    assert rep["verdicts"]["out"] > 0


@pytest.mark.sim
@pytest.mark.slow
@TYPE2
@pytest.mark.parametrize("scenario,packets,seed", LONG, ids=[s[0] for s in LONG])
def test_system_long(tmp_path, scenario, packets, seed):
    _run(tmp_path, scenario, packets, seed)


def _check_type1(rep):
    """What only a Type 1 run shows: the mirrors followed the host's writes through snoops."""
    assert rep["cxl_type"] == 1
    cc = rep["rtl_stats"]["cxl_cache"]
    # the image load rewrote every mirrored line the device had loaded: each was snooped and refetched
    assert cc["snoops"] > 0 and cc["refetches"] > 0, cc
    # installs rewrote bucket lines lookups had read: reported to the bucket cache
    assert cc["bucket_reports"] > 0, cc
    assert cc["errors"] == 0 and cc["read_errors"] == 0, cc
    assert rep["rtl_stats"]["host_writes"] == rep["cxl_writes"]


@pytest.mark.sim
@TYPE1
def test_system_type1(tmp_path):
    """Type 1: the same loop with the tables in host memory; the device reads them through its
    CXL.cache agent and follows the host's writes by snoops."""
    rep = _run(tmp_path, "mixed", 1500, 21, cxl_type=1)
    _check_type1(rep)
    assert rep["slow_path"]["installs"] > 0 and rep["paths"]["flow"] > 0
    assert rep["counters_verified"] > 0 and rep["compared"]["table_lines"] > 0


@pytest.mark.sim
@pytest.mark.slow
@TYPE1
@pytest.mark.parametrize("scenario,packets,seed", LONG1, ids=[s[0] for s in LONG1])
def test_system_type1_long(tmp_path, scenario, packets, seed):
    _check_type1(_run(tmp_path, scenario, packets, seed, cxl_type=1))
