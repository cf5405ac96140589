"""The SmartNic top (Type 2): CXL.mem subordinate + datapath, under Verilator (tb/test_smartnic.py)."""

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from cxlnic.config import NicConfig
from cxlnic.hdl.smartnic import SmartNic


def test_rejects_unsupported_type():
    with pytest.raises(ValueError, match="cxl_type = 1"):
        SmartNic(NicConfig(n_buckets=256), cxl_type=1)


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
