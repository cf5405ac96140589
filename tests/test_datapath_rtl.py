"""The Datapath top: elaboration checks here, the packet-by-packet comparison with the golden model
under Verilator in ``tb/test_datapath.py`` (run by the ``sim``-marked test below)."""

import pytest

from cxlnic.config import NicConfig
from cxlnic.hdl.datapath import Datapath


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="frame_fifo"):
        Datapath(NicConfig(max_frame=1518), frame_fifo=10)
    with pytest.raises(ValueError, match="cam_entries"):
        Datapath(NicConfig(cam_entries=48))
    with pytest.raises(TypeError, match="NicConfig"):
        Datapath({"cam_entries": 64})


@pytest.mark.sim
@pytest.mark.slow      # make regress: make test runs the same scenario through the SmartNic top (test_smartnic_rtl.py)
def test_datapath_verilator():
    from cxlnic.tb.sim import run_cocotb
    from cxlnic.tb.test_datapath import tb_config

    dp = Datapath(tb_config(), lookups=64, frame_fifo=128)
    run_cocotb(dp, "cxlnic.tb.test_datapath", params="tb", seed=1,
               extra_env={"CXLNIC_DP_CAP_BYTES": str(dp.frame_cap * 64)})
