"""scripts/bench_model.py (make bench): a --quick run writes a complete, sane model.json and PNG plots."""


import pytest
from benchcheck import PNG_MAGIC, check_meta, load_script, num, quick_report


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, quick_report("model", out)


def test_meta(report):
    _out, rep = report
    meta = rep["meta"]
    check_meta(meta)
    params = meta["parameters"]
    assert params["use_stash"] is False and params["max_moves"] == 8
    assert len(params["seeds"]) >= 1 and params["n_buckets"] >= 2


def test_cuckoo_figures(report):
    _out, rep = report
    c = rep["cuckoo"]
    assert c["use_stash"] is False and c["max_moves"] == 8
    assert 0 < c["max_load"] <= 1
    per_seed = c["max_load_per_seed"]
    assert len(per_seed) == len(c["seeds"]) and all(0 < x <= 1 for x in per_seed)
    assert c["max_load_min"] <= c["max_load"] <= c["max_load_max"]
    assert c["max_load"] == pytest.approx(sum(per_seed) / len(per_seed))
    assert set(c["at_load"]) == {"0.50", "0.90", "0.95"}
    for point, f in c["at_load"].items():
        lo, hi = f["window"]
        assert lo < float(point) < hi
        assert f["n_inserts"] > 0
        # Each insert writes its entry line and at least the bucket line that publishes it.
        assert f["writes_per_insert"] >= 2, point
        assert f["moves_per_insert"] >= 0
        # Moves rewrite bucket lines only: one more line write per move.
        assert f["writes_per_insert"] == pytest.approx(2 + f["moves_per_insert"])
        # An insert reads at least the primary and secondary buckets (and the stash lines).
        assert f["reads_per_insert"] >= 2
        # A hit reads a bucket and the entry; a miss at least both buckets.
        assert f["lookup_reads_hit"] >= 2 and f["lookup_reads_miss"] >= 2
    cur = c["curves"]
    n = len(cur["load"])
    assert n > 0
    for key in ("moves_per_insert", "writes_per_insert", "reads_per_insert", "n_inserts"):
        assert len(cur[key]) == n
    assert len(cur["lookup_reads_hit"]) == len(cur["lookup_reads_miss"]) == len(cur["lookup_load"]) > 0


def test_throughput(report):
    _out, rep = report
    t = rep["throughput"]
    assert num(t["inserts_per_s"]) and t["inserts_per_s"] > 0
    assert num(t["lookups_per_s"]) and t["lookups_per_s"] > 0


def test_classification(report):
    _out, rep = report
    cls = rep["classification"]
    assert len(cls) >= 2
    for e in cls:
        assert e["n_rules"] > 0
        assert num(e["fast_pps"]) and e["fast_pps"] > 0
        assert num(e["linear_pps"]) and e["linear_pps"] > 0
        assert num(e["ratio"]) and e["ratio"] > 0
        assert e["ratio"] == pytest.approx(e["fast_pps"] / e["linear_pps"])
        assert e["verified_keys"] > 0


def test_targets(report):
    _out, rep = report
    tg = rep["targets"]
    assert set(tg) == {"cuckoo.max_load", "writes_per_insert@90%", "classification.ratio@10k"}
    for t in tg.values():
        assert isinstance(t["met"], bool)
        assert num(t["threshold"]) and num(t["value"])
    assert tg["cuckoo.max_load"]["met"] == (rep["cuckoo"]["max_load"] >= 0.95)
    assert tg["writes_per_insert@90%"]["met"] is False and tg["writes_per_insert@90%"]["note"]
    # --quick rule sets are below 10k rules: the ratio target cannot be claimed.
    assert tg["classification.ratio@10k"]["met"] is False


def test_plots_are_pngs(report):
    out, rep = report
    assert len(rep["plots"]) >= 3
    for name in rep["plots"]:
        p = out / name
        assert p.suffix == ".png" and p.parent == out
        assert p.read_bytes()[:8] == PNG_MAGIC, name


def test_wrong_classifier_is_refused(tmp_path, monkeypatch):
    mod = load_script("model")
    real = mod.RuleTable.classify

    def off_by_one(self, key):
        r = real(self, key)
        return None if r is None else r + 1

    monkeypatch.setattr(mod.RuleTable, "classify", off_by_one)
    with pytest.raises(mod.ClassifierMismatch):
        mod.classify_run(100, 1, 300, 0.0)
