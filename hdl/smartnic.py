"""The SmartNIC top: the CXL agent in front of the datapath (``docs/smartnic.md``).

Type 2 (tables in device DRAM): the host reaches the table image through
:class:`~cxlnic.hdl.cxl_mem.CxlMemSubordinate`, whose backend is the
:class:`~cxlnic.hdl.datapath.Datapath`'s host-write (``mw``/``mw_done``) and
host-read (``mr``/``mr_data``) ports, and whose device-write grants
(``dev_wr``/``dev_wr_ok``) gate the counter block's write-backs.  The
datapath's AXI4 port is the device DRAM.

Type 1 (tables in host memory): the datapath's AXI4 port goes through
:class:`~cxlnic.hdl.cxl_cache.CxlCacheAgent` to host memory over CXL.cache.
The lines the datapath mirrors on chip (hash key, CAM rules, actions) and the
bucket/stash lines its bucket cache holds are the agent's *tracked* region:
never cached in the agent, never silently evicted, so every host write to
one the device has read snoops the device; :class:`MirrorSync` turns the
agent's ``inval`` entries into mirror refetches and bucket-cache reports.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cxlnic.config import NicConfig
from cxlnic.hdl.axi import LINE_SHIFT, AxiWires, axi4_master_ports, read_mux, write_mux
from cxlnic.hdl.cxl_cache import STATS as CACHE_STATS
from cxlnic.hdl.cxl_cache import CxlCacheAgent
from cxlnic.hdl.cxl_mem import CxlMemStats, CxlMemSubordinate, MemWrite
from cxlnic.hdl.datapath import Datapath
from cxlnic.hdl.layouts import LINE_BITS
from cxlnic.hdl.util import checked_init

__all__ = ["SmartNic", "CXL_TYPES", "MirrorSync", "SYNC_STATS", "CacheStats", "CXL_CACHE_IN", "CXL_CACHE_OUT",
           "pass_through"]

#: The device types the top can be elaborated as.
CXL_TYPES = (1, 2)
#: The CXL.cache channels into and out of a Type 1 device.
CXL_CACHE_IN = ("h2d_req", "h2d_rsp", "h2d_data")
CXL_CACHE_OUT = ("d2h_req", "d2h_rsp", "d2h_data")
#: MirrorSync's 32-bit counters.
SYNC_STATS = ("refetches", "bucket_reports", "read_errors")
#: Type 1 statistics: the CXL.cache agent's counters, then MirrorSync's.
CacheStats = data.StructLayout({n: 32 for n in (*CACHE_STATS, *SYNC_STATS)})


def pass_through(m: Module, outer, inner, ins=(), outs=()) -> None:
    """Connect the streams ``ins`` (into the component) and ``outs`` of ``outer`` (a component's own
    ports, seen from inside) to ``inner``'s streams of the same names."""
    for name in ins:
        wiring.connect(m, wiring.flipped(getattr(outer, name)), getattr(inner, name))
    for name in outs:
        wiring.connect(m, getattr(inner, name), wiring.flipped(getattr(outer, name)))


def mirror_lines(cfg: NicConfig) -> list[tuple[int, int]]:
    """(first, count) of the image lines the datapath mirrors on chip, in MirrorSync's load order:
    the hash key, the CAM's rules, the action table."""
    r = cfg.regions()
    return [r["hashkey"], (r["rules"][0], cfg.cam_entries), r["actions"]]


def tracked_range(cfg: NicConfig) -> tuple[int, int]:
    """The agent's tracked region of a Type 1 top: from the hash key to the last stash line (every
    mirrored line and every bucket/stash line; the tenant and non-CAM rule lines between are
    tracked too, harmlessly: reads of them go to the host every time)."""
    r = cfg.regions()
    return r["hashkey"][0], r["stash"][0] + r["stash"][1]


class MirrorSync(wiring.Component):
    """Type 1: keeps the datapath's on-chip copies equal to host memory (``docs/smartnic.md``).

    * After reset it **loads** every mirrored line (:func:`mirror_lines`) by reading it through
      ``m_axi_*`` (the agent: RdShared, which also marks the line as held, so the host's later
      writes snoop the device) and writing it to the datapath's ``mw`` (mirror-only writes);
      ``loaded`` rises when the last one is applied.
    * Each ``inval`` entry (a line the host's snoop took from the device, i.e. the host is about
      to write it) of a **bucket or stash** line is reported on ``mw`` at once (data unused: the
      datapath invalidates its bucket cache line and replays lookups that read it; bucket
      reports have priority over refetch results, so a report is never late); of a
      **mirrored** line it is queued and the line read again and written to ``mw``: the read is
      ordered after the host's write by the host, so the mirror ends up with the new content.
      Other lines have no on-chip copy: their entries are dropped.
    * ``busy``: an ``inval`` entry, a queued or running refetch or the load is not finished, or
      an ``mw`` write was issued in the previous cycle (``mw_done`` follows it).  Once a host
      write has completed at the host and ``busy`` is low, every frame accepted from then on is
      classified with it.

    The refetch queue holds one entry per mirrored line, which is enough: a line's entry exists
    only after a snoop took it, and the device holds the line again only after that entry's
    refetch, so a line is never queued twice.  A read answered with an error response is
    counted (``read_errors``) and issued again.  One read is in flight at a time (ID 0).
    """

    @checked_init
    def __init__(self, cfg: NicConfig):
        if not isinstance(cfg, NicConfig):
            raise TypeError(f"cfg = {cfg!r}: must be a NicConfig")
        self.cfg = cfg
        self._parts = mirror_lines(cfg)
        self.n_mirror = sum(n for _f, n in self._parts)
        super().__init__({
            "inval": In(stream.Signature(32)),
            "mw": Out(stream.Signature(MemWrite)),
            "loaded": Out(1),
            "busy": Out(1),
            **{n: Out(32) for n in SYNC_STATS},
            **axi4_master_ports(1),
        })

    def elaborate(self, platform):
        m = Module()
        r = self.cfg.regions()
        n = self.n_mirror
        # -- the line of load step s (the mirrored regions back to back) --
        step = Signal(range(n + 1))
        step_line = Signal(32)
        at = 0
        offs = []
        for first, cnt in self._parts:
            offs.append((at, first, cnt))
            at += cnt
        for at, first, cnt in reversed(offs):
            with m.If(step < at + cnt):
                m.d.comb += step_line.eq(first + (step - at))

        def inside(line, first, cnt):
            return (line >= first) & (line < first + cnt)
        # -- inval entries --
        iv = self.inval.payload
        bkt = Signal()
        mir = Signal()
        m.d.comb += [bkt.eq(inside(iv, *r["buckets"]) | inside(iv, *r["stash"])),
                     mir.eq(Cat(*[inside(iv, first, cnt) for first, cnt in self._parts]).any())]
        m.submodules.queue = q = SyncFIFOBuffered(width=32, depth=n + 1)
        report = Signal()
        m.d.comb += report.eq(self.inval.valid & bkt)
        m.d.comb += [
            self.inval.ready.eq(Mux(bkt, self.mw.ready, Mux(mir, q.w_rdy, 1))),
            q.w_en.eq(self.inval.valid & mir & ~bkt), q.w_data.eq(iv),
        ]
        # -- the refetch / load engine: one read at a time --
        line = Signal(32)
        rdata = Signal(LINE_BITS)
        loading = Signal()              # the read in progress is a load step
        res_valid = Signal()
        m.d.comb += [self.m_axi_arid.eq(0), self.m_axi_arlen.eq(0), self.m_axi_arsize.eq(LINE_SHIFT),
                     self.m_axi_arburst.eq(1), self.m_axi_araddr.eq(line << LINE_SHIFT),
                     self.m_axi_awvalid.eq(0), self.m_axi_wvalid.eq(0), self.m_axi_bready.eq(1)]
        # bucket reports first; a refetch result waits for a cycle without one
        m.d.comb += [self.mw.valid.eq(report | res_valid),
                     self.mw.payload.addr.eq(Mux(report, iv, line)),
                     self.mw.payload.data.eq(Mux(report, 0, rdata))]
        res_fire = res_valid & ~report & self.mw.ready
        stats = {k: Signal(32, name=f"sync_{k}") for k in SYNC_STATS}
        m.d.comb += [getattr(self, k).eq(v) for k, v in stats.items()]
        with m.If(report & self.mw.ready):
            m.d.sync += stats["bucket_reports"].eq(stats["bucket_reports"] + 1)
        with m.FSM(name="sync"):
            with m.State("IDLE"):
                with m.If(step != n):
                    m.d.sync += [line.eq(step_line), loading.eq(1), step.eq(step + 1)]
                    m.next = "AR"
                with m.Elif(q.r_rdy):
                    m.d.comb += q.r_en.eq(1)
                    m.d.sync += [line.eq(q.r_data), loading.eq(0)]
                    m.next = "AR"
            with m.State("AR"):
                m.d.comb += self.m_axi_arvalid.eq(1)
                with m.If(self.m_axi_arready):
                    m.next = "R"
            with m.State("R"):
                m.d.comb += self.m_axi_rready.eq(1)
                with m.If(self.m_axi_rvalid):
                    with m.If(self.m_axi_rresp != 0):
                        m.d.sync += stats["read_errors"].eq(stats["read_errors"] + 1)
                        m.next = "AR"
                    with m.Else():
                        m.d.sync += rdata.eq(self.m_axi_rdata)
                        m.next = "MW"
            with m.State("MW"):
                m.d.comb += res_valid.eq(1)
                with m.If(res_fire):
                    with m.If(~loading):
                        m.d.sync += stats["refetches"].eq(stats["refetches"] + 1)
                    m.next = "IDLE"
        idle = Signal()
        m.d.comb += idle.eq(~self.m_axi_arvalid & ~self.m_axi_rready & ~res_valid)
        wrote = Signal()
        m.d.sync += wrote.eq(self.mw.valid & self.mw.ready)
        m.d.comb += [self.loaded.eq((step == n) & ~(loading & ~idle)),
                     self.busy.eq(self.inval.valid | q.r_rdy | ~idle | (step != n) | wrote)]
        return m


class SmartNic(wiring.Component):
    """CXL agent + datapath + counter block: Type 2 (device DRAM) or Type 1 (host memory).

    Ports of both types
    -------------------
    * ``i``, ``reinject``, ``o``, ``upcall``, ``drop``: the datapath's frame
      streams (see :class:`~cxlnic.hdl.datapath.Datapath`).
    * ``flush`` / ``flush_done``: write every counter delta back to the table
      image (Type 2: each write-back after its CXL grant).
    * ``wr_visible`` / ``wr_visible_addr``: pulses once per line the datapath
      applies (Type 2: per host write; Type 1: per mirror load, refetch and
      bucket report) when it is visible: every frame accepted on ``i`` from
      the next cycle on sees it.
    * ``stats``: the datapath's 32-bit counters.

    Type 2 (``cxl_type=2``, default)
    ---------------------------------
    * ``m2s_req``, ``m2s_rwd``, ``m2s_birsp`` (in) / ``s2m_ndr``, ``s2m_drs``,
      ``s2m_bisnp`` (out): the CXL.mem channels (:mod:`cxlnic.hdl.cxl_mem` layouts).
    * ``hdm_base``, ``hdm_size``: the HDM range in 64-byte lines; device line 0
      (the table image's line 0) is HPA line ``hdm_base``.
    * ``mem_stats``: the CXL.mem subordinate's counters.
    * ``m_axi_*``: the device DRAM (AXI4, one 64-byte line per beat).

    Host reads of counter lines return the exact live counters (the
    datapath assembles them from the counter block); before the counter
    block writes a line back to DRAM, the subordinate back-invalidates any
    host copy (HDM-DB ``BISnpInv``) and grants the write.

    Type 1 (``cxl_type=1``)
    -----------------------
    * ``d2h_req``, ``d2h_rsp``, ``d2h_data`` (out) / ``h2d_req``, ``h2d_rsp``,
      ``h2d_data`` (in): the CXL.cache channels (:mod:`cxlnic.hdl.cxl_cache`);
      the table image's line 0 is host line ``host_base``.
    * ``mirrors_loaded``: the on-chip copies have been loaded from host memory
      after reset (frames sent before are classified with empty mirrors).
    * ``sync_busy``: :class:`MirrorSync` has work left; a host write that has
      completed at the host is visible to every frame accepted once
      ``sync_busy`` is low.
    * ``cache_stats``: the agent's counters and MirrorSync's (:data:`CacheStats`).

    Counters are written back through the agent (to host memory, with
    ItoMWr or RdOwn); the host reads them exactly after ``flush_done``,
    snooping back any line the device still owns.
    """

    @checked_init
    def __init__(self, cfg: NicConfig | None = None, *, cxl_type: int = 2, lookups: int = 128,
                 frame_fifo: int = 512, counters: int | None = None, counter_cache: int | None = None,
                 mem_depth: int = 32, filter_entries: int = 64, host_base: int = 0, cache_sets: int = 64,
                 cache_ways: int = 4, cache_trackers: int = 16, rewriters: int = 2,
                 bucket_cache: int | None = None):
        if cxl_type not in CXL_TYPES:
            raise ValueError(f"cxl_type = {cxl_type!r}: must be 1 (tables in host memory behind CXL.cache) or "
                             f"2 (tables in device DRAM behind CXL.mem); supported: {CXL_TYPES}")
        self.cxl_type = cxl_type
        self.datapath = Datapath(cfg, lookups=lookups, frame_fifo=frame_fifo, counters=counters,
                                 counter_cache=counter_cache, wb_grant=cxl_type == 2,
                                 host_writes="dram" if cxl_type == 2 else "mirror", rewriters=rewriters,
                                 bucket_cache=bucket_cache)
        self.cfg = self.datapath.cfg
        dp = self.datapath.signature.members
        common = {
            **{n: dp[n] for n in ("i", "reinject", "o", "upcall", "drop", "flush", "flush_done")},
            "wr_visible": Out(1),
            "wr_visible_addr": Out(32),
            "stats": dp["stats"],
        }
        if cxl_type == 2:
            self.cxl_mem = CxlMemSubordinate(depth=mem_depth, filter_entries=filter_entries)
            cm = self.cxl_mem.signature.members
            super().__init__({
                # the CXL.mem side is the subordinate's, the frame side and the DRAM port the datapath's
                **{n: cm[n] for n in ("m2s_req", "m2s_rwd", "m2s_birsp", "s2m_ndr", "s2m_drs", "s2m_bisnp",
                                      "hdm_base", "hdm_size")},
                **common,
                "mem_stats": Out(CxlMemStats),
                **{n: m for n, m in dp.items() if n.startswith("m_axi_")},
            })
        else:
            id_bits = len(self.datapath.m_axi_arid) + 1          # the datapath and MirrorSync share the agent
            self.sync = MirrorSync(self.cfg)
            self.cache = CxlCacheAgent(sets=cache_sets, ways=cache_ways, trackers=cache_trackers, id_bits=id_bits,
                                       host_base=host_base, track=tracked_range(self.cfg))
            ca = self.cache.signature.members
            super().__init__({
                **{n: ca[n] for n in (*CXL_CACHE_OUT, *CXL_CACHE_IN)},
                **common,
                "mirrors_loaded": Out(1),
                "sync_busy": Out(1),
                "cache_stats": Out(CacheStats),
            })

    @property
    def frame_cap(self) -> int:
        return self.datapath.frame_cap

    def elaborate(self, platform):
        m = Module()
        m.submodules.datapath = dp = self.datapath
        # frames, control, statistics
        pass_through(m, self, dp, ins=("i", "reinject"), outs=("o", "upcall", "drop"))
        # exact counter reads go through the CXL side (counter lines); the direct port stays idle
        m.d.comb += [dp.crd.valid.eq(0), dp.crd_data.ready.eq(1),
                     dp.flush.eq(self.flush), self.flush_done.eq(dp.flush_done), self.stats.eq(dp.stats),
                     self.wr_visible.eq(dp.mw_done), self.wr_visible_addr.eq(dp.mw_done_addr)]
        if self.cxl_type == 2:
            self._type2(m, dp)
        else:
            self._type1(m, dp)
        return m

    def _type2(self, m, dp):
        m.submodules.cxl_mem = cm = self.cxl_mem
        # CXL.mem channels and the HDM range
        pass_through(m, self, cm, ins=("m2s_req", "m2s_rwd", "m2s_birsp"), outs=("s2m_ndr", "s2m_drs", "s2m_bisnp"))
        m.d.comb += [cm.hdm_base.eq(self.hdm_base), cm.hdm_size.eq(self.hdm_size), self.mem_stats.eq(cm.stats)]
        # the subordinate's backend is the datapath's host ports; its grants gate counter write-backs
        wiring.connect(m, cm.mw, dp.mw)
        wiring.connect(m, cm.mr, dp.mr)
        wiring.connect(m, dp.mr_data, cm.mr_data)
        wiring.connect(m, dp.wb_req, cm.dev_wr)
        wiring.connect(m, cm.dev_wr_ok, dp.wb_ok)
        m.d.comb += [cm.mw_done.eq(dp.mw_done), cm.mw_done_addr.eq(dp.mw_done_addr)]
        for name, member in self.signature.members.items():
            if name.startswith("m_axi_"):
                port, inner = getattr(self, name), getattr(dp, name)
                m.d.comb += port.eq(inner) if member.flow == wiring.Out else inner.eq(port)

    def _type1(self, m, dp):
        m.submodules.sync = sync = self.sync
        m.submodules.cache = ca = self.cache
        pass_through(m, self, ca, ins=CXL_CACHE_IN, outs=CXL_CACHE_OUT)
        # the host writes host memory itself: the datapath only hears of the lines it keeps copies of
        wiring.connect(m, ca.inval, sync.inval)
        wiring.connect(m, sync.mw, dp.mw)
        m.d.comb += [dp.mr.valid.eq(0), dp.mr_data.ready.eq(1),
                     self.mirrors_loaded.eq(sync.loaded), self.sync_busy.eq(sync.busy)]
        m.d.comb += [getattr(self.cache_stats, n).eq(getattr(ca, n)) for n in CACHE_STATS]
        m.d.comb += [getattr(self.cache_stats, n).eq(getattr(sync, n)) for n in SYNC_STATS]
        # the datapath's DRAM port and MirrorSync's reads share the agent's AXI4 slave
        id_bits = ca.id_bits
        bus = AxiWires(id_bits, "dev")
        read_mux(m, [dp, sync], bus, id_bits, name="dev_rd")
        write_mux(m, [dp], bus, id_bits, name="dev_wr")
        for name, member in axi4_master_ports(id_bits).items():
            port = getattr(ca, "s_axi_" + name[len("m_axi_"):])
            wire = getattr(bus, name)
            m.d.comb += port.eq(wire) if member.flow == wiring.Out else wire.eq(port)
