"""The system-simulation top: the SmartNic with its DRAM and every stream end in RTL.

Python touching the design every cycle caps a cocotb testbench at tens of
thousands of cycles per second.  :class:`SystemHarness` moves the cycle-level
work into the simulated design so the testbench only acts between bursts:

* each input stream (received frames, reinjected frames, CXL.mem M2S requests)
  is played by a ``cxlnic_hexsrc`` (``tb/hdl/cxlnic_hexio.v``) from a hex file
  Python writes before a burst; every word carries a *gate*: the word waits
  until that many S2M NDR messages (Cmp of host writes) have left the device,
  which is how a frame is sent "right after its flow's install completed"
  without Python watching the cycle;
* each output stream (output frames, upcalls, drops, S2M NDR and DRS, and the
  write-visible pulses) is
  appended by a ``cxlnic_hexsink`` to a text file, each record stamped with
  the cycle, read back by Python after the burst;
* the device DRAM is :class:`SimDram`, a fixed-latency AXI4 memory;
* back-invalidation snoops (``s2m_bisnp``) are answered at once with
  ``BIRspI``: the testbench's host caches no table line (it reads with
  MetaValue none), so it never holds one the device wants to write back.

``done`` is high when every source has played its words and the output
counters have reached the targets Python set (``want_*``), so a burst ends on
``RisingEdge(done)``; a DUT that stops producing output never raises it and the
testbench's cycle limit names the stream that stalled.

A Type 1 SmartNic (``cxl_type=1``) has no DRAM and no CXL.mem: the harness
then has no ``m2s`` source and no NDR/DRS sinks, and passes the six CXL.cache
channels through as its own ports, which the testbench's home agent
(:class:`~cxlnic.tb.cxl_home.CxlHomeAgent`, host memory holding the tables)
drives every cycle; words are not gated (the testbench orders host writes and
frames itself).

Simulation only (the ``$readmemh``/``$fwrite`` modules have no hardware meaning).
"""

from __future__ import annotations

from pathlib import Path

from amaranth.hdl import (
    Cat,
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Elaboratable,
    Instance,
    Module,
    Mux,
    ResetSignal,
    Signal,
)
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from cxlnic.config import NicConfig
from cxlnic.hdl.cxl_mem import S2MDRS, S2MNDR, BIRspOpcode, CxlMemStats, M2SReq, M2SRwD
from cxlnic.hdl.datapath import DropInfo, OutBeat, Reinject, StatsLayout, UpcallBeat, frame_cap_beats
from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES
from cxlnic.hdl.parser import BEAT_BYTES, Beat
from cxlnic.hdl.smartnic import CXL_CACHE_IN, CXL_CACHE_OUT, SmartNic, pass_through

__all__ = ["SystemHarness", "system_config", "system_harness", "run_system_sim", "SYSTEM_SCENARIOS", "SYSTEM_BUILD",
           "DRAM_LATENCY", "SimDram", "VERILOG_IO", "SOURCES", "SINKS", "RxWord", "ReinjectWord", "M2SWord",
           "HDM_BASE", "TYPE1_BUILD", "TYPE1_SCENARIOS", "TYPE2_ONLY", "sources_of", "sinks_of"]

VERILOG_IO = Path(__file__).resolve().parent / "hdl" / "cxlnic_hexio.v"
#: HPA line of device line 0 (the table image's line 0).
HDM_BASE = 0x1000
#: Scenarios of the system run: the generator's own, plus two that drive the flow table itself
#: (``storm``: bulk inserts during traffic; ``nearfull``: a table filled to 97 % first).
SYSTEM_SCENARIOS = ("mixed", "reactive", "conntrack", "static", "malformed", "storm", "nearfull")
#: Scenarios that need a Type 2 device (frames gated in hardware on CXL.mem completions while writes
#: stream), and the ones a Type 1 device runs.
TYPE2_ONLY = ("storm",)
TYPE1_SCENARIOS = tuple(s for s in SYSTEM_SCENARIOS if s not in TYPE2_ONLY)
#: The SmartNic build parameters of the system simulation, and its DRAM's read latency in cycles.
#: 16 outstanding lookups: the scenarios average under 0.1 received frames a cycle, and a flow hit
#: needs about 50 cycles (its entry line from DRAM), so 16 keep up outside bursts of minimum-size
#: frames, which they hold back (backpressure the checks cover).  The cuckoo engine's context logic
#: grows with the count: with 64, the harness simulated 41k streaming cycles/s; with 16, 58k.
SYSTEM_BUILD = {"lookups": 16, "frame_fifo": 128}
DRAM_LATENCY = 40


def system_config() -> NicConfig:
    """The device geometry of the system simulation (``make sim``): 2048 buckets x 8 slots."""
    return NicConfig(n_buckets=2048, n_stash=1, n_rules=256, cam_entries=64, n_actions=256, n_tenants=8,
                     n_ports=16, max_frame=1518)


#: Type 1 builds: the CXL.cache agent's geometry and the host line of image line 0.
TYPE1_BUILD = {"cache_sets": 64, "cache_ways": 4, "cache_trackers": 16, "host_base": HDM_BASE}


def system_harness(cxl_type: int = 2) -> SystemHarness:
    extra = TYPE1_BUILD if cxl_type == 1 else {}
    return SystemHarness(SmartNic(system_config(), cxl_type=cxl_type, **SYSTEM_BUILD, **extra),
                         dram_latency=DRAM_LATENCY)


def sources_of(cxl_type: int) -> dict:
    """The harness's sources for a device type (Type 1 has no CXL.mem requests to play)."""
    return {k: v for k, v in SOURCES.items() if cxl_type == 2 or k != "m2s"}


def sinks_of(cxl_type: int) -> dict:
    """The harness's sinks for a device type (Type 1 has no CXL.mem responses to log)."""
    return {k: v for k, v in SINKS.items() if cxl_type == 2 or k not in ("ndr", "drs")}


def run_system_sim(env: dict, *, build_dir: Path | None = None, seed: int = 1, testcase: str = "system",
                   cxl_type: int = 2) -> Path:
    """Build (or reuse) the system harness under Verilator and run ``tb/test_system.py`` with ``env``
    (``CXLNIC_*`` options, see that module) on a Type ``cxl_type`` device.  The simulation works in
    ``<CXLNIC_SIM_OUT>/run`` (its stream files, results and waves).  Returns that folder; raises
    AssertionError when the run fails."""
    from cxlnic.tb.sim import run_cocotb, source_key

    cfg = system_config()
    env = {"CXLNIC_CAP_BYTES": str(frame_cap_beats(cfg) * BEAT_BYTES), "CXLNIC_TYPE": str(cxl_type), **env}
    if env.get("CXLNIC_SIM_OUT"):                 # the simulation runs in its own folder: absolute paths
        env["CXLNIC_SIM_OUT"] = str(Path(env["CXLNIC_SIM_OUT"]).resolve())
    run_dir = Path(env["CXLNIC_SIM_OUT"]) / "run" if env.get("CXLNIC_SIM_OUT") else None
    if cxl_type == 1:
        key = source_key(repr(cfg), SYSTEM_BUILD, TYPE1_BUILD)
        top, params = (lambda: system_harness(1)), "system1"
    else:
        key = source_key(repr(cfg), SYSTEM_BUILD, DRAM_LATENCY)
        top, params = system_harness, "system"
    run_cocotb(top, "cxlnic.tb.test_system", gen_key=key, params=params, sources=[VERILOG_IO],
               public_top_only=True, extra_env=env, build_dir=build_dir, seed=seed, test_dir=run_dir, testcase=testcase)
    return run_dir

RxWord = data.StructLayout({"beat": Beat, "gate": 32})
ReinjectWord = data.StructLayout({"r": Reinject, "gate": 32})
#: One M2S message: ``rwd`` (MemWr, on the RwD channel) when ``is_rwd``, else ``req`` (MemRd).
M2SWord = data.StructLayout({"is_rwd": 1, "req": M2SReq, "rwd": M2SRwD, "gate": 32})

#: source name -> (word layout, file)
SOURCES = {"rx": (RxWord, "rx.hex"), "ri": (ReinjectWord, "reinject.hex"), "m2s": (M2SWord, "m2s.hex")}
#: sink name -> (record layout without the cycle stamp, file); every record is {cycle: 32, rec}
SINKS = {"out": (OutBeat, "out.txt"), "upcall": (UpcallBeat, "upcall.txt"), "drop": (DropInfo, "drop.txt"),
         "ndr": (S2MNDR, "ndr.txt"), "drs": (S2MDRS, "drs.txt"), "vis": (data.StructLayout({"addr": 32}), "vis.txt")}


class SimDram(wiring.Component):
    """A fixed-latency AXI4 memory (one 64-byte line per beat, single-beat bursts).

    A read's R beat is presented ``latency`` cycles after its AR handshake (in AR
    order, one per cycle at most) with the line as it was at the AR handshake; a
    write lands at its W handshake (after its AW) and its B follows ``latency``
    cycles later.  Up to 64 reads and 64 writes in flight.  ``oob`` rises (and
    stays) when an address beyond ``lines`` is used.
    """

    def __init__(self, lines: int, id_bits: int, latency: int):
        self.lines, self.latency = lines, latency
        self._abits = max(1, (lines - 1).bit_length())
        super().__init__({
            "arvalid": In(1), "arready": Out(1), "araddr": In(32 + 6), "arid": In(id_bits),
            "rvalid": Out(1), "rready": In(1), "rdata": Out(LINE_BITS), "rid": Out(id_bits),
            "awvalid": In(1), "awready": Out(1), "awaddr": In(32 + 6), "awid": In(id_bits),
            "wvalid": In(1), "wready": Out(1), "wdata": In(LINE_BITS), "wstrb": In(LINE_BYTES),
            "bvalid": Out(1), "bready": In(1), "bid": Out(id_bits),
            "cycle": In(32),
            "oob": Out(1),
        })
        self._id_bits = id_bits

    def elaborate(self, platform):
        m = Module()
        ib, ab = self._id_bits, self._abits
        rd = Signal(data.StructLayout({"addr": ab, "data": LINE_BITS}), name="rd")
        wr = Signal(data.StructLayout({"addr": ab, "data": LINE_BITS, "en": LINE_BYTES}), name="wr")
        m.submodules.mem = Instance("cxlnic_simmem", p_W=LINE_BITS, p_D=self.lines, p_AW=ab, i_clk=ClockSignal(),
                                    i_raddr=rd.addr, o_rdata=rd.data, i_waddr=wr.addr, i_wen=wr.en,
                                    i_wdata=wr.data)
        # a read takes its data at the AR handshake (a later write does not change it; RDATA is stable
        # while RVALID waits for RREADY), and waits in the FIFO until its due cycle
        m.submodules.rq = rq = SyncFIFOBuffered(width=32 + ib + LINE_BITS, depth=64)
        m.submodules.awq = awq = SyncFIFOBuffered(width=ib + ab, depth=64)
        m.submodules.bq = bq = SyncFIFOBuffered(width=32 + ib, depth=64)
        due = (self.cycle + self.latency)[:32]
        m.d.comb += [
            self.arready.eq(rq.w_rdy),
            rq.w_en.eq(self.arvalid & rq.w_rdy),
            rd.addr.eq(self.araddr[6:6 + ab]),
            rq.w_data.eq(Cat(due, self.arid, rd.data)),
            self.rvalid.eq(rq.r_rdy & (rq.r_data[:32] <= self.cycle)),
            self.rdata.eq(rq.r_data[32 + ib:]),
            self.rid.eq(rq.r_data[32:32 + ib]),
            rq.r_en.eq(self.rvalid & self.rready),
            # writes: AW first (or with W), W lands the line and queues B
            self.awready.eq(awq.w_rdy),
            awq.w_en.eq(self.awvalid & awq.w_rdy),
            awq.w_data.eq(Cat(self.awid, self.awaddr[6:6 + ab])),
            self.wready.eq(awq.r_rdy & bq.w_rdy),
            awq.r_en.eq(self.wvalid & self.wready),
            wr.addr.eq(awq.r_data[ib:]),
            wr.data.eq(self.wdata),
            wr.en.eq(Mux(self.wvalid & self.wready, self.wstrb, 0)),
            bq.w_en.eq(self.wvalid & self.wready),
            bq.w_data.eq(Cat(due, awq.r_data[:ib])),
            self.bvalid.eq(bq.r_rdy & (bq.r_data[:32] <= self.cycle)),
            self.bid.eq(bq.r_data[32:]),
            bq.r_en.eq(self.bvalid & self.bready),
        ]
        # sticky: an AR or AW beyond the memory (the DUT addressed outside the table image)
        with m.If(self.arvalid & self.arready & (self.araddr[6:] >= self.lines)
                  | self.awvalid & self.awready & (self.awaddr[6:] >= self.lines)):
            m.d.sync += self.oob.eq(1)
        return m


class SystemHarness(wiring.Component):
    """SmartNic + :class:`SimDram` + file-driven sources and sinks (see the module docstring).

    Control (from the testbench): ``<src>_load`` / ``<src>_count`` for each of
    :data:`SOURCES`, ``want_frames`` (output + upcall + drop frames), ``want_ndr``,
    ``want_drs``, ``flush_files``, ``out_stall`` (sinks take a beat when an 8-bit LFSR
    is >= it: 0 = always ready), ``nic_flush``.  Status: ``done``, ``cycle``, the
    source positions and output counters, ``flush_done``, ``stats``, ``mem_stats``.
    """

    def __init__(self, nic: SmartNic, *, dram_latency: int = 40, src_depth: int = 1 << 16):
        self.nic = nic
        self.cfg = nic.cfg
        self.cxl_type = nic.cxl_type
        self.dram_latency = dram_latency
        self.src_depth = src_depth
        members = {"done": Out(1), "cycle": Out(32), "flush_files": In(1), "out_stall": In(8),
                   "nic_flush": In(1), "flush_done": Out(1), "want_frames": In(32), "frames": Out(32),
                   "visible": Out(32), "stats": Out(StatsLayout)}
        if self.cxl_type == 2:
            members |= {"dram_oob": Out(1), "want_ndr": In(32), "want_drs": In(32), "ndr": Out(32), "drs": Out(32),
                        "bisnp": Out(32), "mem_stats": Out(CxlMemStats)}
        else:
            nm = nic.signature.members
            members |= {n: nm[n] for n in (*CXL_CACHE_OUT, *CXL_CACHE_IN, "mirrors_loaded", "sync_busy", "cache_stats")}
        for s in sources_of(self.cxl_type):
            members |= {f"{s}_load": In(1), f"{s}_count": In(32), f"{s}_pos": Out(32)}
        super().__init__(members)

    @property
    def frame_cap(self) -> int:
        return self.nic.frame_cap

    def elaborate(self, platform):
        # Verilator evaluates the model twice a clock (at each edge) and each time re-runs the
        # combinational logic that reads a top-level input.  Amaranth's synchronous reset is read by
        # every flop's next-state logic, so the design runs in domain ``dut``: the same clock, reset
        # by a flop that follows ``rst`` one cycle later (``_body`` registers the other inputs that
        # reach the SmartNic), and no input but the clock feeds its combinational logic.
        m = Module()
        m.domains.dut = ClockDomain("dut", local=True)
        rst_q = Signal(init=1, reset_less=True)
        m.d.sync += rst_q.eq(ResetSignal("sync"))
        m.d.comb += [ClockSignal("dut").eq(ClockSignal("sync")), ResetSignal("dut").eq(rst_q)]
        m.submodules.body = DomainRenamer("dut")(_Deferred(self._body))
        return m

    def _body(self, platform):
        m = Module()
        m.submodules.nic = nic = self.nic
        type2 = self.cxl_type == 2
        cyc = Signal(32)
        m.d.sync += cyc.eq(cyc + 1)
        m.d.comb += [self.cycle.eq(cyc), self.flush_done.eq(nic.flush_done),
                     self.stats.eq(nic.stats)]
        if type2:
            m.d.comb += [nic.hdm_base.eq(HDM_BASE), nic.hdm_size.eq(self.cfg.image_lines),
                         self.mem_stats.eq(nic.mem_stats)]
        else:
            pass_through(m, self, nic, ins=CXL_CACHE_IN, outs=CXL_CACHE_OUT)
            m.d.comb += [self.mirrors_loaded.eq(nic.mirrors_loaded), self.sync_busy.eq(nic.sync_busy),
                         self.cache_stats.eq(nic.cache_stats)]
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq(lfsr[1:] | (lfsr[0] ^ lfsr[2] ^ lfsr[3] ^ lfsr[5]) << 15)
        # inputs that reach the design's combinational logic go through flops (see SystemHarness.elaborate)
        sink_ready, stall = Signal(), Signal(8, reset_less=True)
        m.d.sync += [stall.eq(self.out_stall), nic.flush.eq(self.nic_flush)]
        m.d.comb += sink_ready.eq(lfsr[:8] >= stall)

        # -- sources -----------------------------------------------------------------
        # a word waits for its gate: that many NDRs (Type 2; Type 1 words are never gated)
        gate_count = self.ndr if type2 else Signal(32)
        srcs = {}
        for name, (layout, fname) in sources_of(self.cxl_type).items():
            word = Signal(layout, name=f"{name}_word")
            valid, ready = Signal(name=f"{name}_valid"), Signal(name=f"{name}_ready")
            m.submodules[f"src_{name}"] = Instance(
                "cxlnic_hexsrc", p_W=data.Layout.cast(layout).size, p_D=self.src_depth, p_FILE=fname,
                i_clk=ClockSignal(), i_rst=ResetSignal(), i_load=getattr(self, f"{name}_load"),
                i_count=getattr(self, f"{name}_count"), o_valid=valid, i_ready=ready, o_data=word,
                o_pos=getattr(self, f"{name}_pos"))
            open_ = Signal(name=f"{name}_open")
            m.d.comb += open_.eq(valid & (gate_count >= word.gate))
            srcs[name] = (word, valid, ready, open_)

        word, _, ready, open_ = srcs["rx"]
        m.d.comb += [nic.i.valid.eq(open_), nic.i.payload.eq(word.beat), ready.eq(nic.i.ready)]
        word, _, ready, open_ = srcs["ri"]
        m.d.comb += [nic.reinject.valid.eq(open_), nic.reinject.payload.eq(word.r), ready.eq(nic.reinject.ready)]
        streams = {"out": nic.o, "upcall": nic.upcall, "drop": nic.drop}
        if type2:
            word, _, ready, open_ = srcs["m2s"]
            m.d.comb += [nic.m2s_req.valid.eq(open_ & ~word.is_rwd), nic.m2s_req.payload.eq(word.req),
                         nic.m2s_rwd.valid.eq(open_ & word.is_rwd), nic.m2s_rwd.payload.eq(word.rwd),
                         ready.eq(open_ & (word.is_rwd & nic.m2s_rwd.ready | ~word.is_rwd & nic.m2s_req.ready))]

            # -- back-invalidation snoops: answered at once, the host holds no line ---------
            bi_pend = Signal()
            bi_id, bi_tag = Signal(12), Signal(12)
            m.d.comb += [nic.s2m_bisnp.ready.eq(~bi_pend), nic.m2s_birsp.valid.eq(bi_pend),
                         nic.m2s_birsp.payload.opcode.eq(BIRspOpcode.I), nic.m2s_birsp.payload.bi_id.eq(bi_id),
                         nic.m2s_birsp.payload.bi_tag.eq(bi_tag)]
            with m.If(nic.s2m_bisnp.valid & ~bi_pend):
                m.d.sync += [bi_pend.eq(1), bi_id.eq(nic.s2m_bisnp.payload.bi_id),
                             bi_tag.eq(nic.s2m_bisnp.payload.bi_tag), self.bisnp.eq(self.bisnp + 1)]
            with m.Elif(nic.m2s_birsp.ready):
                m.d.sync += bi_pend.eq(0)
            streams |= {"ndr": nic.s2m_ndr, "drs": nic.s2m_drs}

        # -- sinks ------------------------------------------------------------------
        fire = {}
        for name, st in streams.items():
            m.d.comb += st.ready.eq(sink_ready)
            fire[name] = st.valid & st.ready
        vis = Signal(32)
        m.d.comb += vis.eq(nic.wr_visible_addr)
        fire["vis"] = nic.wr_visible
        for name, (layout, fname) in sinks_of(self.cxl_type).items():
            payload = streams[name].payload if name in streams else vis
            m.submodules[f"sink_{name}"] = Instance(
                "cxlnic_hexsink", p_W=32 + data.Layout.cast(layout).size, p_FILE=fname, i_clk=ClockSignal(),
                i_valid=fire[name], i_ready=1, i_data=Cat(cyc, payload), i_flush=self.flush_files)

        # -- counters and done ---------------------------------------------------------
        with m.If(fire["out"] & nic.o.payload.beat.last | fire["upcall"] & nic.upcall.payload.beat.last
                  | fire["drop"]):
            m.d.sync += self.frames.eq(self.frames + 1)
        with m.If(nic.wr_visible):
            m.d.sync += self.visible.eq(self.visible + 1)
        played = Signal()
        m.d.comb += played.eq(Cat(*[v for _w, v, _r, _o in srcs.values()]) == 0)
        if not type2:
            m.d.comb += self.done.eq(played & (self.frames >= self.want_frames))
            return m
        with m.If(fire["ndr"]):
            m.d.sync += self.ndr.eq(self.ndr + 1)
        with m.If(fire["drs"]):
            m.d.sync += self.drs.eq(self.drs + 1)
        m.d.comb += self.done.eq(played & (self.frames >= self.want_frames) & (self.ndr >= self.want_ndr)
                                 & (self.drs >= self.want_drs))

        # -- DRAM ------------------------------------------------------------------------
        id_bits = len(nic.m_axi_arid)
        m.submodules.dram = dram = SimDram(self.cfg.image_lines, id_bits, self.dram_latency)
        m.d.comb += [dram.cycle.eq(cyc), self.dram_oob.eq(dram.oob)]
        for n, member in dram.signature.members.items():
            if n in ("cycle", "oob"):
                continue
            port = getattr(nic, f"m_axi_{n}")
            m.d.comb += port.eq(getattr(dram, n)) if member.flow == wiring.Out else getattr(dram, n).eq(port)
        m.d.comb += [nic.m_axi_rlast.eq(1), nic.m_axi_rresp.eq(0), nic.m_axi_bresp.eq(0)]
        return m


class _Deferred(Elaboratable):
    """An elaboratable whose ``elaborate`` is ``fn`` (so a domain renamer can wrap a method)."""

    def __init__(self, fn):
        self.fn = fn

    def elaborate(self, platform):
        return self.fn(platform)
