"""scripts/perf_report.py: merging the benchmark reports and rendering docs/performance.md."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mod():
    spec = importlib.util.spec_from_file_location("perf_report", ROOT / "scripts" / "perf_report.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


def _target(value, met):
    return {"target": "t", "threshold": 1, "value": value, "met": met}


def _write(d: Path, name: str, doc: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(json.dumps(doc))


def _inputs(tmp_path, *, synth_complete=True, quick_model=False):
    bench, synth = tmp_path / "bench", tmp_path / "synth"
    _write(bench, "model.json", {"meta": {"quick": quick_model}, "targets": {
        "cuckoo.max_load": _target(0.951, True), "writes_per_insert@90%": _target(2.5, True),
        "classification.ratio@10k": _target(42.0, True)}})
    _write(bench, "datapath.json", {"meta": {"quick": False}, "targets": {
        "datapath.cam_packets_per_cycle": _target(0.5, False),
        "datapath.flow_fraction_of_bound@L100": _target(1.0, True),
        "datapath.lines_per_lookup@95%": _target(1.0, True)}})
    _write(bench, "cxl.json", {"targets": {"cxl.visibility_cycles": _target(11, True),
                                           "cxl.mem_ops_per_cycle": _target(0.95, True),
                                           "install.inserts_per_s": _target(8.0e7, True)},
                               "install": {"inserts_per_cycle": 0.32, "load_from": 0.86, "load_to": 0.92}})
    _write(bench, "system.json", {"targets": {"system.packets_per_wall_s": _target(900.0, False)},
                                  "verilator_vs_pysim": {"ratio": 6.5}})
    (bench / "cxl_visibility.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    _write(synth, "report.json", {"complete": synth_complete, "failed_stage": None if synth_complete else "nextpnr",
                                  "summary": {"fmax_mhz": 150.0}})
    return bench, synth


def test_merges_and_renders(tmp_path):
    bench, synth = _inputs(tmp_path)
    doc = tmp_path / "docs" / "performance.md"
    assert _mod().main(["--bench", str(bench), "--synth", str(synth), "--doc", str(doc)]) == 0
    res = json.loads((bench / "results.json").read_text())
    assert res["missing"] == []
    rows = {r["source"]: r for r in res["table"]}
    assert rows["datapath.targets.datapath.cam_packets_per_cycle"]["value"] == 0.5
    assert rows["datapath.targets.datapath.cam_packets_per_cycle"]["met"] is False
    assert rows["cxl.targets.cxl.visibility_cycles"]["text"] == "11 cycles"
    assert rows["synth.summary.fmax_mhz"]["met"] is True                       # 150 >= 125
    assert rows["system.targets.system.packets_per_wall_s"]["met"] is False
    assert rows["system.verilator_vs_pysim.ratio"]["text"] == "6.5x"
    # the install rate converted at 250 MHz and at the synthesized Fmax (0.32 inserts/cycle)
    assert res["install"]["inserts_per_s"] == pytest.approx(0.32 * 250e6)
    assert res["install"]["inserts_per_s_at_fmax"] == pytest.approx(0.32 * 150e6)
    text = doc.read_text()
    assert "| CAM-path hits, whole datapath (worst over L) | 0.500 pkt/cycle | >= 1.0 pkt/cycle | **no** |" in text
    assert "148.8 Mpps" in text and "perf/cxl_visibility.png" in text
    assert (doc.parent / "perf" / "cxl_visibility.png").exists()


def test_incomplete_synth_and_quick_reports_are_not_figures(tmp_path):
    bench, synth = _inputs(tmp_path, synth_complete=False, quick_model=True)
    doc = tmp_path / "performance.md"
    assert _mod().main(["--bench", str(bench), "--synth", str(synth), "--doc", str(doc)]) == 0
    res = json.loads((bench / "results.json").read_text())
    assert any("synth" in m and "incomplete" in m for m in res["missing"])
    assert any("model" in m and "--quick" in m for m in res["missing"])
    rows = {r["source"]: r for r in res["table"]}
    assert rows["synth.summary.fmax_mhz"]["text"] == "not measured"
    assert rows["model.targets.cuckoo.max_load"]["value"] is None
    assert res["install"]["inserts_per_s_at_fmax"] is None
    assert "Not measured in this run" in doc.read_text()


def test_no_inputs_is_an_error(tmp_path, capsys):
    assert _mod().main(["--bench", str(tmp_path / "b"), "--synth", str(tmp_path / "s"),
                        "--doc", str(tmp_path / "p.md")]) == 1
    assert "run `make bench` first" in capsys.readouterr().err
    assert not (tmp_path / "p.md").exists()


def test_bad_json_names_the_file(tmp_path):
    bench, synth = _inputs(tmp_path)
    (bench / "cxl.json").write_text("{not json")
    with pytest.raises(SystemExit, match="cxl.json: not valid JSON"):
        _mod().main(["--bench", str(bench), "--synth", str(synth), "--doc", str(tmp_path / "p.md")])
