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
    with pytest.raises(ValueError, match="rewriters = 3"):
        Datapath(NicConfig(max_frame=1518), rewriters=3)


def test_rewriter_count():
    """``rewriters`` sets how many HeaderRewriters are built and elaborated."""
    from amaranth.back import rtlil

    for n in (1, 2):
        dp = Datapath(NicConfig(n_buckets=256, cam_entries=4, n_actions=256, max_frame=1518), lookups=4,
                      frame_fifo=128, counter_cache=16, rewriters=n)
        assert len(dp.rewriters) == n
        text = rtlil.convert(dp, name="dp", emit_src=False)
        assert sum(f"cell \\dp.rewrite{k} " in text for k in range(3)) == n


@pytest.mark.sim
@pytest.mark.slow      # make regress: make test runs the same scenario through the SmartNic top (test_smartnic_rtl.py)
def test_datapath_verilator():
    from cxlnic.tb.sim import run_cocotb
    from cxlnic.tb.test_datapath import tb_config

    dp = Datapath(tb_config(), lookups=64, frame_fifo=128)
    run_cocotb(dp, "cxlnic.tb.test_datapath", params="tb", seed=1,
               extra_env={"CXLNIC_DP_CAP_BYTES": str(dp.frame_cap * 64)})


@pytest.mark.sim
def test_datapath_reduced_verilator():
    """The structure of the reduced FPGA build (``scripts/synth.py``): one rewriter, no bucket
    cache, 4 outstanding lookups.  The same frames, byte for byte and in order, as the golden
    model, over a shorter trace (with stalls and table churn)."""
    from cxlnic.tb.sim import run_cocotb
    from cxlnic.tb.test_datapath import tb_config

    dp = Datapath(tb_config(), lookups=4, frame_fifo=128, rewriters=1, bucket_cache=0)
    run_cocotb(dp, "cxlnic.tb.test_datapath", params="tb-reduced", seed=2,
               extra_env={"CXLNIC_DP_CAP_BYTES": str(dp.frame_cap * 64), "CXLNIC_DP_PACKETS": "1200"})
