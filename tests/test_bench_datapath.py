"""scripts/bench_datapath.py: a --quick run writes a complete, sane datapath.json and a PNG plot."""


import pytest
from benchcheck import PNG_MAGIC, check_meta, quick_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, quick_report("datapath", out)


def test_meta(report):
    _out, rep = report
    meta = rep["meta"]
    check_meta(meta)
    assert "datapath top" in meta["not_measured"]


def test_cam(report):
    _out, rep = report
    cam = rep["cam"]
    assert "TernaryCam" in cam["what"]
    assert 0 < cam["packets_per_cycle"] <= 1
    # no backpressure: one lookup accepted every cycle, 3-cycle pipeline
    assert cam["packets_per_cycle"] == 1.0
    assert cam["latency_cycles"] == {"min": 3, "median": 3, "max": 3}
    assert cam["verified_against_model"] == cam["lookups"] > 0


def test_cuckoo_throughput(report):
    _out, rep = report
    c = rep["cuckoo"]
    assert "CuckooEngine" in c["what"]
    rows = c["throughput"]
    assert rows and {r["max_outstanding"] for r in rows} >= {128}
    for r in rows:
        assert r["dram_latency"] in (25, 50, 100, 200)
        assert 0 < r["lookups_per_cycle"] <= 1 and 0 < r["lookups_per_cycle_whole_run"] <= 1
        assert 0 < r["r_beats_per_cycle"] <= 1
        assert r["window_exceeds_contexts"] is True                # a steady state, not one burst
        assert r["hits"] == r["lookups"] > 0                       # DRAM flow hits only
        assert r["lines_per_lookup"] >= 2                          # bucket + entry line per hit
        assert r["bound"] == pytest.approx(1 / r["lines_per_lookup"])
        assert r["fraction_of_bound"] == pytest.approx(r["lookups_per_cycle"] / r["bound"])
        lat = r["latency_cycles"]
        # at least bucket + entry read, each L cycles, plus hashing
        assert 2 * r["dram_latency"] < lat["min"] <= lat["median"] <= lat["max"]
        # one lookup in flight: the pipeline latency, about 3 + 1 + n*(L+3) + 2 for n lines
        lu = r["latency_cycles_unloaded"]
        assert lu["lookups"] > 0 and lu["lines_per_lookup"] >= 2
        assert 2 * (r["dram_latency"] + 3) <= lu["min"] <= lu["median"] <= lu["max"] <= lat["max"]
        key = f"L{r['dram_latency']}_ctx{r['max_outstanding']}"
        assert c["lookups_per_cycle"][key] == r["lookups_per_cycle"]
        assert c["latency_cycles"][key] == lat
    by_lat = {r["dram_latency"]: r for r in rows if r["max_outstanding"] == 128}
    assert by_lat[25]["lookups_per_cycle"] > by_lat[100]["lookups_per_cycle"]


def test_cuckoo_lines_per_lookup(report):
    _out, rep = report
    lines = rep["cuckoo"]["lines_per_lookup"]
    assert set(lines) == {"0.50", "0.90", "0.95"}
    for point, row in lines.items():
        assert abs(row["load"] - float(point)) < 0.02
        for kind in ("hit", "miss"):
            k = row[kind]
            assert k["engine_equals_model"] is True and k["lines_read"] == k["model_lookup_reads"]
            assert k["lines_per_lookup"] == pytest.approx(k["lines_read"] / k["lookups"])
        assert row["hit"]["hits"] == row["hit"]["lookups"] and row["miss"]["hits"] == 0
        assert row["hit"]["lines_per_lookup"] >= 2
        assert row["miss"]["lines_per_lookup"] >= 3                # two buckets + the stash line


def test_targets(report):
    _out, rep = report
    t = rep["targets"]
    assert set(t) == {"cam.packets_per_cycle", "cuckoo.fraction_of_bound@L100", "cuckoo.lines_per_lookup@95%"}
    for tg in t.values():
        assert isinstance(tg["met"], bool) and isinstance(tg["target"], str) and "note_quick" in tg
    assert t["cam.packets_per_cycle"]["met"] is True
    assert t["cuckoo.lines_per_lookup@95%"]["value"] == rep["cuckoo"]["lines_per_lookup"]["0.95"]["hit"][
        "lines_per_lookup"]
    assert t["cuckoo.lines_per_lookup@95%"]["note"] and t["cuckoo.fraction_of_bound@L100"]["note"]


def test_plot(report):
    out, rep = report
    assert rep["plots"] == ["cuckoo_lookups_vs_latency.png"]
    data = (out / rep["plots"][0]).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
