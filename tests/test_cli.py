"""The cxlnic command line: classify / gen / sim, and its errors on bad input."""

import json

import pytest

from cxlnic.cli import main
from cxlnic.config import NicConfig
from cxlnic.model.actions import Verdict
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.rulelang import parse_rules
from cxlnic.model.scenario import generate, read_pcap
from cxlnic.model.slowpath import SlowPath


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    d = tmp_path_factory.mktemp("scen")
    sc = generate("mixed", packets=3000, seed=7)
    sc.write(d / "rules.of", d / "in.pcap")
    return sc, d


def test_classify_outputs_equal_direct_model_run(scenario, tmp_path, capsys):
    sc, d = scenario
    out, stats = tmp_path / "out.pcap", tmp_path / "stats.json"
    rc = main(["classify", str(d / "rules.of"), str(d / "in.pcap"), "-o", str(out), "--stats", str(stats),
               "--age-interval", "0"])
    assert rc == 0
    # the same packets through the model directly (no CLI, no pcap round trip)
    cfg = NicConfig()
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    sp = SlowPath(mem, cfg)
    sp.install_rules(parse_rules(sc.rules_text))
    expect = []
    for p in sc.packets:
        dcs = sp.process(p.frame, p.in_port, p.time)
        if dcs.verdict == Verdict.OUTPUT:
            expect.append((dcs.out_port, dcs.frame))
    got = read_pcap(out)
    assert [(p.in_port, p.frame) for p in got] == expect
    doc = json.loads(stats.read_text())
    assert doc["conservation"]["ok"] and doc["packets"] == len(sc.packets)
    assert doc["verdicts"]["output"] == len(expect)
    # every decided packet is counted once: on its rule's counter or its flow's counter
    decided = doc["packets"] - sum(doc["exceptions"].values()) - doc["drops"].get("no_match", 0)
    assert sum(r["packets"] for r in doc["rules"]) + doc["flows"]["counter_packets"] == decided
    assert "packets by path" in capsys.readouterr().out


def test_rules_with_errors_install_nothing_and_name_line_and_column(scenario, tmp_path, capsys):
    _, d = scenario
    bad = tmp_path / "bad.of"
    bad.write_text("priority=5,ip,actions=output:1\npriority=6,nw_src=10.0.0.1,actions=drop\n")
    out = tmp_path / "out.pcap"
    rc = main(["classify", str(bad), str(d / "in.pcap"), "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert f"{bad}:2:12: error:" in err and "nothing installed" in err


@pytest.mark.parametrize("content,msg", [
    (b"this is not a pcap file at all", "not a pcap or pcapng file (starts with 74686973)"),
    (None, "pcap file not found"),
])
def test_bad_pcap_is_a_clear_error(scenario, tmp_path, capsys, content, msg):
    _, d = scenario
    p = tmp_path / "x.pcap"
    if content is not None:
        p.write_bytes(content)
    out = tmp_path / "out.pcap"
    assert main(["classify", str(d / "rules.of"), str(p), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and msg in err and not out.exists()


def test_ports_sidecar_mismatch_is_an_error(scenario, tmp_path, capsys):
    _, d = scenario
    p = tmp_path / "in.pcap"
    p.write_bytes((d / "in.pcap").read_bytes())
    (tmp_path / "in.pcap.ports").write_text("0\n1\n")
    assert main(["classify", str(d / "rules.of"), str(p), "-o", str(tmp_path / "o.pcap")]) == 2
    assert "2 ports for 3000 packets" in capsys.readouterr().err


def test_unknown_scenario_lists_the_valid_ones(tmp_path, capsys):
    assert main(["sim", "--scenario", "bogus", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'bogus'" in err and "mixed" in err and "conntrack" in err
    assert not (tmp_path / "report.json").exists()


def test_gen_then_sim_with_files(tmp_path, capsys):
    assert main(["gen", "--scenario", "conntrack", "--packets", "500", "-o", str(tmp_path)]) == 0
    assert len(read_pcap(tmp_path / "trace.pcap")) == 500
    out = tmp_path / "sim"
    assert main(["sim", "--model-only", "--pcap", str(tmp_path / "trace.pcap"), "--rules",
                 str(tmp_path / "rules.of"), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["mode"] == "golden-model" and doc["conservation"]["ok"] and doc["packets"] == 500
    assert "golden model only" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--type", "3"], "TYPE=3: must be 1"),
    (["--type", "1", "--scenario", "storm"], "SCENARIO=storm with TYPE=1"),
    (["--packets", "5"], "at least 20 packets"),
    (["--burst", "0"], "--burst 0"),
    (["--scenario", "storms"], "unknown scenario 'storms'"),
    (["--buckets", "1024"], "--buckets 1024: only with --model-only"),
    (["--age-interval", "0"], "--age-interval 0.0: only with --model-only"),
])
def test_sim_bad_options_fail_before_any_build(tmp_path, capsys, monkeypatch, argv, message):
    """Every option is checked before Verilog is generated or Verilator runs (nothing is built)."""
    import cxlnic.tb.harness as harness

    monkeypatch.setattr(harness, "run_system_sim", lambda *a, **k: pytest.fail("the simulation was started"))
    assert main(["sim", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_sim_bad_pcap_and_rules_fail_before_any_build(tmp_path, capsys, monkeypatch):
    import cxlnic.tb.harness as harness

    monkeypatch.setattr(harness, "run_system_sim", lambda *a, **k: pytest.fail("the simulation was started"))
    (tmp_path / "bad.pcap").write_bytes(b"not a pcap at all")
    (tmp_path / "r.of").write_text("priority=10,ip,nw_dst=10.0.0.1 actions=output:1\n")
    assert main(["sim", "--pcap", str(tmp_path / "bad.pcap"), "--rules", str(tmp_path / "r.of"),
                 "--out", str(tmp_path)]) == 2
    assert "bad.pcap" in capsys.readouterr().err
    assert main(["gen", "--scenario", "static", "--packets", "50", "-o", str(tmp_path / "g")]) == 0
    (tmp_path / "bad.of").write_text("priority=10,ip,nw_dst=10.0.0.300 actions=output:1\n")
    assert main(["sim", "--pcap", str(tmp_path / "g" / "trace.pcap"), "--rules", str(tmp_path / "bad.of"),
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "bad.of" in err and ":1" in err


def test_sim_needs_pcap_and_rules_together(tmp_path, capsys):
    assert main(["sim", "--pcap", "x.pcap", "--out", str(tmp_path)]) == 2
    assert "together" in capsys.readouterr().err


def test_verilog_writes_and_lints_a_block(tmp_path, capsys):
    assert main(["verilog", "--out", str(tmp_path), "--block", "flow_hasher", "--lint"]) == 0
    text = (tmp_path / "flow_hasher.v").read_text()
    assert "module flow_hasher" in text and "lint ok: flow_hasher.v" in capsys.readouterr().out


def test_verilog_unknown_block_is_an_error(tmp_path, capsys):
    assert main(["verilog", "--out", str(tmp_path), "--block", "nope"]) == 2
    assert "unknown block 'nope'" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_lint_fails_on_a_real_warning(tmp_path):
    from cxlnic.rtl import lint

    bad = tmp_path / "bad.v"
    bad.write_text("module bad(input wire clk, output wire [3:0] q);\nendmodule\n")  # q is undriven
    assert lint([bad], log=lambda *_: None) == ["bad"]


def test_aging_sweeps_run_through_idle_gaps():
    from scapy.all import IP, UDP, Ether, raw

    from cxlnic.model.scenario import Packet
    from cxlnic.runner import classify_trace

    def udp(sport):
        return raw(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=sport, dport=53)).ljust(60, b"\0")
    rules = parse_rules("priority=5,udp,actions=output:1\n")
    # flow A is busy for 2 s, then the trace is silent for 98 s; flow B arrives at t=100
    trace = [Packet(t / 10, 0, udp(1000)) for t in range(20)] + [Packet(100.0, 0, udp(2000))]
    res = classify_trace(rules, trace, NicConfig(cam_entries=0), age_interval=5.0)
    live = {e.key.src_port for _, e in res.sp.flows.entries()}
    # A's reactive flow (idle timeout 30 s) is gone by t=100 although no packet arrived in between
    assert live == {2000}
    assert res.sp.stats.flows_deleted["aged"] == 1
