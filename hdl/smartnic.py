"""The SmartNIC top: the CXL agent in front of the datapath (``docs/smartnic.md``).

Type 2 (tables in device DRAM): the host reaches the table image through
:class:`~cxlnic.hdl.cxl_mem.CxlMemSubordinate`, whose backend is the
:class:`~cxlnic.hdl.datapath.Datapath`'s host-write (``mw``/``mw_done``) and
host-read (``mr``/``mr_data``) ports, and whose device-write grants
(``dev_wr``/``dev_wr_ok``) gate the counter block's write-backs.  The
datapath's AXI4 port is the device DRAM.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from cxlnic.config import NicConfig
from cxlnic.hdl.cxl_mem import CxlMemStats, CxlMemSubordinate
from cxlnic.hdl.datapath import Datapath
from cxlnic.hdl.util import checked_init

__all__ = ["SmartNic", "CXL_TYPES"]

#: The device types the top can be elaborated as.
CXL_TYPES = (2,)


class SmartNic(wiring.Component):
    """CXL.mem subordinate + datapath + counter block + DRAM port (Type 2).

    Ports
    -----
    * ``m2s_req``, ``m2s_rwd``, ``m2s_birsp`` (in) / ``s2m_ndr``, ``s2m_drs``,
      ``s2m_bisnp`` (out): the CXL.mem channels (:mod:`cxlnic.hdl.cxl_mem` layouts).
    * ``hdm_base``, ``hdm_size``: the HDM range in 64-byte lines; device line 0
      (the table image's line 0) is HPA line ``hdm_base``.
    * ``i``, ``reinject``, ``o``, ``upcall``, ``drop``: the datapath's frame
      streams (see :class:`~cxlnic.hdl.datapath.Datapath`).
    * ``flush`` / ``flush_done``: write every counter delta back to DRAM
      (each write-back after its CXL grant).
    * ``wr_visible`` / ``wr_visible_addr``: pulses once per host line write when
      it is visible to the datapath (every frame accepted on ``i`` from the next
      cycle on sees it); the write's Cmp leaves after this.
    * ``stats`` (datapath), ``mem_stats`` (CXL.mem subordinate): 32-bit counters.
    * ``m_axi_*``: the device DRAM (AXI4, one 64-byte line per beat).

    Host reads of counter lines return the exact live counters (the
    datapath assembles them from the counter block); before the counter
    block writes a line back to DRAM, the subordinate back-invalidates any
    host copy (HDM-DB ``BISnpInv``) and grants the write.
    """

    @checked_init
    def __init__(self, cfg: NicConfig | None = None, *, cxl_type: int = 2, lookups: int = 128,
                 frame_fifo: int = 512, counters: int | None = None, counter_cache: int | None = None,
                 mem_depth: int = 32, filter_entries: int = 64):
        if cxl_type not in CXL_TYPES:
            raise ValueError(f"cxl_type = {cxl_type!r}: this top is elaborated as Type 2 (tables in device "
                             f"DRAM behind CXL.mem); supported: {CXL_TYPES}")
        self.cxl_type = cxl_type
        self.datapath = Datapath(cfg, lookups=lookups, frame_fifo=frame_fifo, counters=counters,
                                 counter_cache=counter_cache, wb_grant=True)
        self.cfg = self.datapath.cfg
        self.cxl_mem = CxlMemSubordinate(depth=mem_depth, filter_entries=filter_entries)
        cm, dp = self.cxl_mem.signature.members, self.datapath.signature.members
        super().__init__({
            # the CXL.mem side is the subordinate's, the frame side and the DRAM port the datapath's
            **{n: cm[n] for n in ("m2s_req", "m2s_rwd", "m2s_birsp", "s2m_ndr", "s2m_drs", "s2m_bisnp",
                                  "hdm_base", "hdm_size")},
            **{n: dp[n] for n in ("i", "reinject", "o", "upcall", "drop", "flush", "flush_done")},
            "wr_visible": Out(1),
            "wr_visible_addr": Out(32),
            "stats": dp["stats"],
            "mem_stats": Out(CxlMemStats),
            **{n: m for n, m in dp.items() if n.startswith("m_axi_")},
        })

    @property
    def frame_cap(self) -> int:
        return self.datapath.frame_cap

    def elaborate(self, platform):
        m = Module()
        m.submodules.datapath = dp = self.datapath
        m.submodules.cxl_mem = cm = self.cxl_mem
        flip = wiring.flipped
        # CXL.mem channels and the HDM range
        for name in ("m2s_req", "m2s_rwd", "m2s_birsp"):
            wiring.connect(m, flip(getattr(self, name)), getattr(cm, name))
        for name in ("s2m_ndr", "s2m_drs", "s2m_bisnp"):
            wiring.connect(m, getattr(cm, name), flip(getattr(self, name)))
        m.d.comb += [cm.hdm_base.eq(self.hdm_base), cm.hdm_size.eq(self.hdm_size), self.mem_stats.eq(cm.stats)]
        # the subordinate's backend is the datapath's host ports; its grants gate counter write-backs
        wiring.connect(m, cm.mw, dp.mw)
        wiring.connect(m, cm.mr, dp.mr)
        wiring.connect(m, dp.mr_data, cm.mr_data)
        wiring.connect(m, dp.wb_req, cm.dev_wr)
        wiring.connect(m, cm.dev_wr_ok, dp.wb_ok)
        m.d.comb += [cm.mw_done.eq(dp.mw_done), cm.mw_done_addr.eq(dp.mw_done_addr),
                     self.wr_visible.eq(dp.mw_done), self.wr_visible_addr.eq(dp.mw_done_addr)]
        # frames, control, statistics, DRAM
        for name in ("i", "reinject"):
            wiring.connect(m, flip(getattr(self, name)), getattr(dp, name))
        for name in ("o", "upcall", "drop"):
            wiring.connect(m, getattr(dp, name), flip(getattr(self, name)))
        # exact counter reads go through CXL.mem (counter lines); the direct port stays idle
        m.d.comb += [dp.crd.valid.eq(0), dp.crd_data.ready.eq(1),
                     dp.flush.eq(self.flush), self.flush_done.eq(dp.flush_done), self.stats.eq(dp.stats)]
        for name, member in self.signature.members.items():
            if name.startswith("m_axi_"):
                port, inner = getattr(self, name), getattr(dp, name)
                m.d.comb += port.eq(inner) if member.flow == wiring.Out else inner.eq(port)
        return m
