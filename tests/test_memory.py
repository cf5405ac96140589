"""Image formatting, header validation, and bad-image errors."""

import pytest

from cxlnic.config import ConfigError, NicConfig
from cxlnic.hdl.layouts import FORMAT_VERSION, MAGIC, Header
from cxlnic.model.codec import codec
from cxlnic.model.memory import BytearrayMemory, FormatError, Geometry, LineWrite, format_image

H = codec(Header)
CFG = NicConfig(n_rules=32, cam_entries=8, n_actions=16, n_buckets=16, n_tenants=2)


def _image(cfg=CFG):
    mem = BytearrayMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    return mem


def test_geometry_round_trip():
    g = Geometry.read(_image())
    r = CFG.regions()
    assert (g.rules_off, g.n_rules, g.cam_entries) == (r["rules"][0], 32, 8)
    assert (g.buckets_off, g.n_buckets) == (r["buckets"][0], 16)
    assert g.n_flows == (16 + CFG.n_stash) * 8 and g.n_counters == 32 + g.n_flows
    assert g.hash_key == CFG.hash_key


def _patch_header(mem, **fields):
    h = H.from_bytes(mem.read_line(0))
    for k, v in fields.items():
        setattr(h, k, v)
    mem.write_line(0, H.to_bytes(h))


@pytest.mark.parametrize("fields,msg", [
    ({"magic": 0x12345678}, "bad magic 0x12345678"),
    ({"version": FORMAT_VERSION + 1}, f"version {FORMAT_VERSION + 1} is not supported"),
    ({"n_buckets": 12}, "not a power of two"),
    ({"cam_entries": 99}, "cam_entries 99 > n_rules"),
    ({"flows_off": 10_000_000}, "flows region"),
    ({"actions_off": CFG.regions()["rules"][0] + 1}, "overlap"),
])
def test_bad_header_is_a_clear_error(fields, msg):
    mem = _image()
    _patch_header(mem, **fields)
    with pytest.raises(FormatError, match=msg):
        Geometry.read(mem)


def test_zeroed_memory_is_not_an_image():
    with pytest.raises(FormatError, match="bad magic"):
        Geometry.read(BytearrayMemory(CFG.image_lines))
    assert H.from_bytes(_image().read_line(0)).magic == MAGIC


def test_memory_bounds_and_sizes():
    mem = BytearrayMemory(4)
    with pytest.raises(IndexError, match="line 4 outside memory of 4 lines"):
        mem.read_line(4)
    with pytest.raises(ValueError, match="63 bytes"):
        mem.write_line(0, bytes(63))
    with pytest.raises(ValueError, match="not 64"):
        LineWrite(0, b"x")


@pytest.mark.parametrize("kw,msg", [
    ({"n_buckets": 100}, "n_buckets = 100"),
    ({"cam_entries": 2000}, "cam_entries"),
    ({"hash_key": b"short"}, "hash_key"),
    ({"n_rules": -1}, "n_rules"),
])
def test_bad_config_names_the_parameter(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        NicConfig(**kw)
