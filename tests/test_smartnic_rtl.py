"""The SmartNic top: Type 2 (CXL.mem subordinate + datapath) under Verilator (tb/test_smartnic.py);
Type 1 (CXL.cache agent + MirrorSync + datapath) is run whole in tests/test_system_rtl.py."""

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from cxlnic.config import NicConfig
from cxlnic.hdl.smartnic import SmartNic


def test_rejects_unsupported_type():
    with pytest.raises(ValueError, match="cxl_type = 3"):
        SmartNic(NicConfig(n_buckets=256), cxl_type=3)


def test_type1_ports_and_parts():
    """Type 1: CXL.cache channels instead of CXL.mem and DRAM; the agent tracks exactly the lines
    from the hash key to the last stash line; the datapath's host writes only update mirrors."""
    from cxlnic.hdl.smartnic import tracked_range

    cfg = NicConfig(n_buckets=256, max_frame=1518)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        top = SmartNic(cfg, cxl_type=1, lookups=32, frame_fifo=128, host_base=0x40)
        names = set(top.signature.members)
        assert {"d2h_req", "d2h_rsp", "d2h_data", "h2d_req", "h2d_rsp", "h2d_data", "mirrors_loaded",
                "sync_busy", "cache_stats"} <= names
        assert not any(n.startswith(("m_axi_", "m2s_", "s2m_")) for n in names)
        r = cfg.regions()
        assert tracked_range(cfg) == (r["hashkey"][0], r["flows"][0])
        assert top.cache.track == tracked_range(cfg) and top.cache.host_base == 0x40
        # one more ID bit than the datapath's: MirrorSync shares the agent's AXI port
        assert top.cache.id_bits == len(top.datapath.m_axi_arid) + 1
        assert not top.datapath.counter_block.wb_grant
        del top
        gc.collect()


def test_ports_follow_the_parts():
    """The top's AXI IDs are the datapath's and the counter write-backs are grant-gated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)   # built to inspect, never elaborated
        top = SmartNic(NicConfig(n_buckets=256, max_frame=1518), lookups=32, frame_fifo=128)
        assert len(top.m_axi_arid) == len(top.datapath.m_axi_arid)
        assert top.datapath.counter_block.wb_grant
        assert top.frame_cap == top.datapath.frame_cap
        del top
        gc.collect()


@pytest.mark.sim
def test_smartnic_verilator():
    from cxlnic.tb.sim import run_cocotb
    from cxlnic.tb.test_datapath import tb_config

    top = SmartNic(tb_config(), lookups=64, frame_fifo=128)
    run_cocotb(top, "cxlnic.tb.test_smartnic", params="tb", seed=1,
               extra_env={"CXLNIC_DP_CAP_BYTES": str(top.frame_cap * 64)})
