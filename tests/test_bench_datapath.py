"""scripts/bench_datapath.py: a --quick run writes a complete, sane datapath.json and a PNG plot."""


import pytest
from benchcheck import PNG_MAGIC, check_meta, quick_report

# one worker runs them all: the module fixture (a --quick bench run, minutes) is built once
pytestmark = pytest.mark.xdist_group("bench_datapath")


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
    cache = c["bucket_cache_lines"]
    assert cache == c["n_buckets"] > 0                              # the default: one line per bucket
    assert {(r["bucket_cache_lines"], r["max_outstanding"]) for r in rows} >= {(0, 128), (cache, 128)}
    for r in rows:
        assert r["dram_latency"] in (25, 50, 100, 200)
        assert 0 < r["lookups_per_cycle"] <= 1 and 0 < r["lookups_per_cycle_whole_run"] <= 1
        assert 0 < r["r_beats_per_cycle"] <= 1
        assert r["window_exceeds_contexts"] is True                # a steady state, not one burst
        assert r["hits"] == r["lookups"] > 0                       # DRAM flow hits only
        assert r["lines_per_lookup"] >= 2                          # bucket + entry line per hit (model count)
        assert r["lines_read"] + r["cache_hits"] == pytest.approx(r["lines_per_lookup"] * r["lookups"])
        assert r["dram_lines_per_lookup"] == pytest.approx(r["lines_read"] / r["lookups"])
        assert r["bound"] == pytest.approx(min(1, 1 / r["dram_lines_per_lookup"]))
        assert r["fraction_of_bound"] == pytest.approx(r["lookups_per_cycle"] / r["bound"])
        lat = r["latency_cycles"]
        lu = r["latency_cycles_unloaded"]
        assert lu["lookups"] > 0 and lu["lines_per_lookup"] >= 2
        if r["bucket_cache_lines"]:
            assert r["warmup_lookups"] == r["n_entries"] > 0
            assert r["cache_hits"] >= r["lookups"]                 # every primary bucket cached after warm-up
            assert 1 <= r["dram_lines_per_lookup"] < 1.5           # the entry line, rarely more
            # at least the entry read, L cycles, plus hashing and the cache read
            assert r["dram_latency"] < lat["min"] <= lat["median"] <= lat["max"]
            assert r["dram_latency"] + 3 <= lu["min"] <= lu["median"] <= lu["max"] <= lat["max"]
        else:
            assert r["cache_hits"] == 0 and r["dram_lines_per_lookup"] == r["lines_per_lookup"]
            # at least bucket + entry read, each L cycles, plus hashing
            assert 2 * r["dram_latency"] < lat["min"] <= lat["median"] <= lat["max"]
            # one lookup in flight: the pipeline latency, about 3 + 1 + n*(L+3) + 2 for n lines
            assert 2 * (r["dram_latency"] + 3) <= lu["min"] <= lu["median"] <= lu["max"] <= lat["max"]
        key = (f"L{r['dram_latency']}_ctx{r['max_outstanding']}_cache{r['bucket_cache_lines']}"
               f"_load{round(100 * r['target_load'])}")
        assert c["lookups_per_cycle"][key] == r["lookups_per_cycle"]
        assert c["latency_cycles"][key] == lat
    by_lat = {r["dram_latency"]: r for r in rows if r["max_outstanding"] == 128 and r["bucket_cache_lines"] == 0}
    assert by_lat[25]["lookups_per_cycle"] > by_lat[100]["lookups_per_cycle"]
    # the cache halves the DRAM reads of a hit and raises the rate at short latency
    r0 = next(r for r in rows if r["bucket_cache_lines"] == 0 and r["dram_latency"] == 25)
    r1 = next(r for r in rows if r["bucket_cache_lines"] == cache and r["dram_latency"] == 25
              and r["max_outstanding"] == 128 and r["target_load"] == 0.9)
    assert r1["dram_lines_per_lookup"] < 0.7 * r0["dram_lines_per_lookup"]
    assert r1["lookups_per_cycle"] > 1.5 * r0["lookups_per_cycle"]


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
            kc = row[f"{kind}_cached"]
            assert kc["dram_plus_cache_equals_model"] is True
            assert kc["dram_lines_read"] + kc["cache_hits"] == kc["model_lookup_reads"]
            assert kc["dram_lines_per_lookup"] == pytest.approx(kc["dram_lines_read"] / kc["lookups"])
            assert kc["warmup_lookups"] == row["n_entries"] and kc["lookups"] == k["lookups"]
        assert row["hit"]["hits"] == row["hit"]["lookups"] and row["miss"]["hits"] == 0
        assert row["hit_cached"]["hits"] == row["hit_cached"]["lookups"] and row["miss_cached"]["hits"] == 0
        assert row["hit"]["lines_per_lookup"] >= 2
        assert row["miss"]["lines_per_lookup"] >= 3                # two buckets + the stash line
        assert 1 <= row["hit_cached"]["dram_lines_per_lookup"] < 1.5    # the entry line (+ false sig hits)
        assert row["miss_cached"]["dram_lines_per_lookup"] < 1     # all bucket lines cached: false sig hits only


def test_targets(report):
    _out, rep = report
    t = rep["targets"]
    assert set(t) == {"cam.packets_per_cycle", "cuckoo.fraction_of_bound@L100", "cuckoo.lines_per_lookup@95%"}
    for tg in t.values():
        assert isinstance(tg["met"], bool) and isinstance(tg["target"], str) and "note_quick" in tg
    assert t["cam.packets_per_cycle"]["met"] is True
    l95 = rep["cuckoo"]["lines_per_lookup"]["0.95"]
    assert t["cuckoo.lines_per_lookup@95%"]["value"] == l95["hit_cached"]["dram_lines_per_lookup"]
    assert t["cuckoo.lines_per_lookup@95%"]["uncached"] == l95["hit"]["lines_per_lookup"]
    assert t["cuckoo.lines_per_lookup@95%"]["met"] is True           # <= 2.0 with the cache, even --quick
    assert t["cuckoo.fraction_of_bound@L100"]["bucket_cache_lines"] == rep["cuckoo"]["bucket_cache_lines"]
    assert t["cuckoo.fraction_of_bound@L100"]["value"] is not None
    assert t["cuckoo.lines_per_lookup@95%"]["note"] and t["cuckoo.fraction_of_bound@L100"]["note"]


def test_plot(report):
    out, rep = report
    assert rep["plots"] == ["cuckoo_lookups_vs_latency.png"]
    data = (out / rep["plots"][0]).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
