"""The SmartNIC datapath top: parser, CAM, cuckoo engine, resolve, rewrite, counters, DRAM port.

Bit-exact with the golden model's fast path (:meth:`cxlnic.model.slowpath.SlowPath.fast_path`
for received frames, :meth:`~cxlnic.model.slowpath.SlowPath.execute` for reinjected ones);
``docs/datapath.md`` describes the pipeline, the ports and the visibility rules.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cxlnic.config import NicConfig
from cxlnic.hdl.axi import LINE_SHIFT, AxiWires, axi4_master_ports, read_mux, write_mux
from cxlnic.hdl.cam import CamResult, TernaryCam
from cxlnic.hdl.counters import CounterBlock
from cxlnic.hdl.cuckoo import CuckooEngine
from cxlnic.hdl.cxl_mem import DevWrite, MemRead, MemReadData, MemWrite  # the ports the CXL.mem agent drives
from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES, ActionEntry, ConnState, Counter, TcpFlags
from cxlnic.hdl.parser import BEAT_BYTES, Beat, PacketParser
from cxlnic.hdl.rewrite import HeaderRewriter
from cxlnic.hdl.util import checked_init
from cxlnic.model.actions import Verdict

__all__ = ["Datapath", "frame_cap_beats", "UpcallReason", "DropReason", "Reinject", "OutBeat", "UpcallBeat", "DropInfo",
           "MemWrite", "STATS"]


class UpcallReason(enum.IntEnum, shape=4):
    """Why a frame leaves on the upcall stream (the model's ``Decision.upcall`` names in comments)."""
    NONE = 0
    EXCEPTION = 1    # "exception": the parser flagged it (frame unchanged)
    FLOW_STATE = 2   # "flow_state": a flow hit not eligible for the fast path
    CT_COMMIT = 3    # "ct_commit": the CAM's rule commits a connection
    CT_RULE = 4      # "ct_rule": a ct_state-matching rule could change the CAM's answer
    CAM_MISS = 5     # "cam_miss": no flow, no CAM rule
    TO_HOST = 6      # an executed action's verdict is TO_HOST (path flow, CAM or reinject)
    BAD_ACTION = 7   # a flow entry or CAM rule names an action index >= n_actions


class DropReason(enum.IntEnum, shape=2):
    ACTION = 0        # the action's verdict is DROP
    BAD_PORT = 1      # OUTPUT to a port >= n_ports (the model's "bad_port")
    BAD_REINJECT = 2  # a reinjected frame names an action index >= n_actions


#: A reinjected beat: the frame and, on every beat, the action record index to apply and
#: the counter to count it on (``count`` 0: not counted).
Reinject = data.StructLayout({"beat": Beat, "action": 20, "counter": 24, "count": 1})
OutBeat = data.StructLayout({"beat": Beat, "out_port": 8})
UpcallBeat = data.StructLayout({"beat": Beat, "reason": UpcallReason})
DropInfo = data.StructLayout({"reason": DropReason, "in_port": 8})

#: 32-bit running statistics, in the order of the ``stats`` port.
STATS = ("rx_frames", "reinjected", "flow", "cam", "executed", "upcalls", "out_frames", "upcall_frames",
         "drop_frames", "exceptions", "trunc_beats", "bad_counter", "host_writes",
         # the cuckoo engine's own counters
         "lookups", "lookup_hits", "lines_read", "cache_hits", "replays", "giveups")
StatsLayout = data.StructLayout({n: 32 for n in STATS})

# Resolve kinds
_EXEC, _UPCALL, _CAMCHK, _DISCARD = range(4)
_PATH_FLOW, _PATH_CAM, _PATH_REINJECT, _PATH_HOST = range(4)

_SIDE = data.StructLayout({"src": 1, "action": 20, "counter": 24, "count": 1})
_DESC = data.StructLayout({"src": 1, "need": 1, "exception": 1, "tcp_flags": 8, "tracked": 1, "length": 16,
                           "action": 20, "counter": 24, "count": 1})
_ROUTE = data.StructLayout({"act": ActionEntry, "reason": UpcallReason, "discard": 1})
_META = data.StructLayout({"reason": UpcallReason, "bad_reinject": 1})


def frame_cap_beats(cfg: NicConfig) -> int:
    """Beats of a frame the datapath keeps (:attr:`Datapath.frame_cap`): a maximum frame plus one."""
    return -(-cfg.max_frame // BEAT_BYTES) + 1


class Datapath(wiring.Component):
    """The SmartNIC fast path over one DRAM table image (``docs/datapath.md``).

    Ports
    -----
    * ``i``: received frames (:data:`~cxlnic.hdl.parser.Beat` stream).
    * ``reinject``: frames the host sends back (:data:`Reinject`): the action
      record ``action`` is applied and the frame counted on ``counter`` when
      ``count`` is set, as :meth:`SlowPath.execute` does.
    * ``o``: output frames (:data:`OutBeat`), verdict OUTPUT to a port < ``n_ports``.
    * ``upcall``: frames for the host (:data:`UpcallBeat`), the reason on every beat.
    * ``drop``: one :data:`DropInfo` per dropped frame.
    * ``mw``: host line writes (:data:`MemWrite`), one per cycle; ``mw_done``
      pulses (with ``mw_done_addr``) once per write, in order, when the write
      is visible: every frame accepted on ``i`` from the next cycle on sees it.
    * ``mr`` / ``mr_data``: host line reads (line index → 512-bit line), answered in order;
      a read waits until every write accepted on ``mw`` before it is complete, and
      counter-region lines are assembled from the counter block's exact values.
    * ``crd`` / ``crd_data``: exact counter reads (counter index / :class:`Counter`).
    * ``flush`` / ``flush_done``: write every counter back to DRAM.
    * ``m_axi_*``: the DRAM port (AXI4, one line per beat).
    * ``stats``: 32-bit running counters (:data:`STATS`).
    * ``wb_req`` / ``wb_ok`` (only with ``wb_grant=True``): before the counter
      block writes a counter line back to DRAM it asks for the line on
      ``wb_req`` and waits for ``wb_ok`` (CXL.mem's ``dev_wr`` / ``dev_wr_ok``:
      the host's cached copies are back-invalidated first).

    ``host_writes`` says what a write on ``mw`` is: ``"dram"`` (default, Type 2:
    the host's write of the table image, written to DRAM through ``m_axi`` and
    applied to the mirrors; ``mw_done`` at its B response) or ``"mirror"``
    (Type 1: the line is already in memory, the host wrote it there; ``mw``
    only updates the on-chip mirrors, the CAM, the action table and the hash
    key, and reports bucket/stash lines to the cuckoo engine's bucket cache;
    ``mw`` is always ready and ``mw_done`` pulses the cycle after).

    ``rewriters``: 2 (default) header rewriters taking frames in turn, so frames
    of any length leave at one beat per cycle; 1 for a small FPGA build (about
    26k LUT4s less on an ECP5): a rewriter spends at least one idle cycle per
    frame, so one-beat frames then leave at most every other cycle.  Output is
    the same frames in the same order either way.

    ``bucket_cache``: the cuckoo engine's on-chip bucket cache lines
    (``CuckooEngine.bucket_cache_lines``: default one per bucket; 0 = none, so
    every bucket and stash line of a lookup is a DRAM read; about 9k LUT4s less
    on an ECP5 at 4 lookups).  Results are the same with or without it.
    """

    @checked_init
    def __init__(self, cfg: NicConfig | None = None, *, lookups: int = 128, frame_fifo: int = 512,
                 counters: int | None = None, counter_cache: int | None = None, wb_grant: bool = False,
                 host_writes: str = "dram", rewriters: int = 2, bucket_cache: int | None = None):
        cfg = NicConfig() if cfg is None else cfg
        if rewriters not in (1, 2):
            raise ValueError(f"rewriters = {rewriters!r}: must be 1 (half the frame rate of one-beat frames, "
                             f"for a small FPGA build) or 2 (frames alternate between them)")
        if host_writes not in ("dram", "mirror"):
            raise ValueError(f"host_writes = {host_writes!r}: must be 'dram' (Type 2: host writes go to DRAM) "
                             f"or 'mirror' (Type 1: they only update the on-chip mirrors)")
        self._mirror_only = host_writes == "mirror"
        if not isinstance(cfg, NicConfig):
            raise TypeError(f"cfg = {cfg!r}: must be a NicConfig")
        if cfg.cam_entries < 2 or cfg.cam_entries & (cfg.cam_entries - 1):
            raise ValueError(f"cfg.cam_entries = {cfg.cam_entries}: the CAM needs a power of two >= 2")
        self._cap = frame_cap_beats(cfg)                          # beats kept of one frame
        if not isinstance(frame_fifo, int) or frame_fifo < 2 * self._cap:
            raise ValueError(f"frame_fifo = {frame_fifo!r}: must hold two maximum frames "
                             f"({2 * self._cap} beats for max_frame {cfg.max_frame})")
        n_counters = cfg.counters if counters is None else counters
        if not isinstance(n_counters, int) or n_counters < 4:
            raise ValueError(f"counters = {counters!r}: must be an integer >= 4")
        self._n_counters = -(-n_counters // 4) * 4
        self.cfg = cfg
        self._regions = cfg.regions()
        self.parser = PacketParser(min_frame=cfg.min_frame, max_frame=cfg.max_frame)
        self.cam = TernaryCam(entries=cfg.cam_entries)
        r = self._regions
        ctx_bits = (lookups - 1).bit_length()
        self.cuckoo = CuckooEngine(n_buckets=cfg.n_buckets, buckets_off=r["buckets"][0], stash_off=r["stash"][0],
                                   n_stash=cfg.n_stash, flows_off=r["flows"][0], max_outstanding=lookups,
                                   axi_id_bits=ctx_bits, tag_bits=1, bucket_cache_lines=bucket_cache)
        # Default: a delta line on chip for every counter line, so a counter update never waits
        # for a DRAM read-modify-write (with flows chosen at random, a smaller cache evicts on
        # nearly every update and its RMWs, not the lookups, bound the packet rate).
        lines = self._n_counters // 4
        counter_cache = 1 << (lines - 1).bit_length() if counter_cache is None else counter_cache
        self.counter_block = CounterBlock(n_counters=self._n_counters, counters_off=r["counters"][0],
                                          cache_lines=max(2, counter_cache), wb_grant=wb_grant)
        self.rewriters = [HeaderRewriter(min_frame=cfg.min_frame, max_frame=cfg.max_frame) for _ in range(rewriters)]
        self._frame_fifo = frame_fifo
        self._lookups = lookups
        child_id = max(len(self.cuckoo.m_axi_arid), len(self.counter_block.m_axi_arid), 1)
        self._id_bits = child_id + 2            # three read masters, two write masters
        super().__init__({
            "i": In(stream.Signature(Beat)),
            "reinject": In(stream.Signature(Reinject)),
            "o": Out(stream.Signature(OutBeat)),
            "upcall": Out(stream.Signature(UpcallBeat)),
            "drop": Out(stream.Signature(DropInfo)),
            "mw": In(stream.Signature(MemWrite)),
            "mw_done": Out(1),
            "mw_done_addr": Out(32),
            "mr": In(stream.Signature(MemRead)),
            "mr_data": Out(stream.Signature(MemReadData)),
            "crd": In(stream.Signature(len(self.counter_block.rd.payload))),
            "crd_data": Out(stream.Signature(Counter)),
            "flush": In(1),
            "flush_done": Out(1),
            "stats": Out(StatsLayout),
            **axi4_master_ports(self._id_bits),
            # the counter block's write-back grants (wb_grant): CXL.mem's dev_wr / dev_wr_ok
            **({"wb_req": Out(stream.Signature(DevWrite)), "wb_ok": In(stream.Signature(DevWrite))}
               if wb_grant else {}),
        })

    @property
    def frame_cap(self) -> int:
        """Beats of a frame kept: frames longer than this are cut to it (oversize upcalls)."""
        return self._cap

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        r = self._regions
        m.submodules.parser = parser = self.parser
        m.submodules.cam = cam = self.cam
        m.submodules.cuckoo = ck = self.cuckoo
        m.submodules.counters = cb = self.counter_block
        for k, rw in enumerate(self.rewriters):
            m.submodules[f"rewrite{k}"] = rw
        stats = {n: Signal(32, name=f"st_{n}") for n in STATS}
        m.d.comb += [getattr(self.stats, n).eq(s) for n, s in stats.items()]
        ck_stats = {"lookups": ck.lookups, "lookup_hits": ck.hits, "lines_read": ck.lines_read,
                    "cache_hits": getattr(ck, "cache_hits", None), "replays": ck.replays, "giveups": ck.giveups}
        for n, v in ck_stats.items():
            if v is not None:
                m.d.comb += stats[n].eq(v)

        def bump(name, cond):
            with m.If(cond):
                m.d.sync += stats[name].eq(stats[name] + 1)

        # ---------------------------------------------------------------- host writes
        hash_key = Signal(LINE_BITS, init=int.from_bytes(cfg.hash_key, "little"))
        m.d.comb += ck.hash_key.eq(hash_key)
        actions = Memory(shape=ActionEntry, depth=cfg.n_actions, init=[])
        m.submodules.actions = actions
        act_w = actions.write_port()
        mw = self.mw.payload
        hw = AxiWires(1, "hw")
        # One write in the output register at a time; AW and W handshakes tracked apart.
        ob_valid, ob_aw, ob_w = Signal(), Signal(), Signal()
        ob_addr = Signal(32)
        ob_data = Signal(LINE_BITS)
        pending = Signal(range(33))        # bucket/stash writes awaiting their B response
        done_fire = Signal()               # a write is complete (its B response, or mirror-only: applied)
        done_addr = Signal(32)
        b_bkt = Signal()                   # ... and it was a bucket/stash line
        writes_busy = Signal()             # a write accepted on ``mw`` is not complete yet

        def in_region(addr, name, n=None):
            first, size = r[name]
            size = size if n is None else n
            return (addr >= first) & (addr < first + size)
        is_bkt = Signal()
        m.d.comb += is_bkt.eq(in_region(mw.addr, "buckets") | in_region(mw.addr, "stash"))
        mw_fire = self.mw.valid & self.mw.ready
        m.d.comb += [hw.m_axi_arvalid.eq(0), hw.m_axi_rready.eq(1), hw.m_axi_bready.eq(1),
                     self.mw_done.eq(done_fire), self.mw_done_addr.eq(done_addr)]
        if self._mirror_only:
            # Type 1: the host already wrote the line; only the mirrors and the bucket cache hear of it
            d_bkt = Signal()
            m.d.comb += [self.mw.ready.eq(1), hw.m_axi_awvalid.eq(0), hw.m_axi_wvalid.eq(0),
                         writes_busy.eq(done_fire), b_bkt.eq(done_fire & d_bkt)]
            m.d.sync += [done_fire.eq(mw_fire), done_addr.eq(mw.addr), d_bkt.eq(is_bkt)]
        else:
            inflight = SyncFIFOBuffered(width=33, depth=32)        # {addr, bucket?} of writes awaiting B
            m.submodules.mw_inflight = inflight
            ob_free = ~ob_valid | ((ob_aw | (hw.m_axi_awvalid & hw.m_axi_awready))
                                   & (ob_w | (hw.m_axi_wvalid & hw.m_axi_wready)))
            # one write per cycle: a bucket write's accept report (``wr``) and another's B report (``wr_done``)
            # use separate ports of the cuckoo engine
            m.d.comb += self.mw.ready.eq(ob_free & inflight.w_rdy)
            m.d.comb += [
                done_fire.eq(hw.m_axi_bvalid & hw.m_axi_bready), done_addr.eq(inflight.r_data[:32]),
                b_bkt.eq(done_fire & inflight.r_data[32]), writes_busy.eq(inflight.r_rdy | ob_valid),
                hw.m_axi_awvalid.eq(ob_valid & ~ob_aw), hw.m_axi_awaddr.eq(ob_addr << LINE_SHIFT),
                hw.m_axi_awid.eq(0), hw.m_axi_awlen.eq(0), hw.m_axi_awsize.eq(LINE_SHIFT), hw.m_axi_awburst.eq(1),
                hw.m_axi_wvalid.eq(ob_valid & ~ob_w), hw.m_axi_wdata.eq(ob_data),
                hw.m_axi_wstrb.eq(Const(-1, LINE_BYTES)), hw.m_axi_wlast.eq(1),
                inflight.w_en.eq(mw_fire), inflight.w_data.eq(Mux(is_bkt, 1 << 32, 0) | mw.addr),
                inflight.r_en.eq(done_fire),
            ]
            with m.If(ob_valid):
                with m.If(hw.m_axi_awvalid & hw.m_axi_awready):
                    m.d.sync += ob_aw.eq(1)
                with m.If(hw.m_axi_wvalid & hw.m_axi_wready):
                    m.d.sync += ob_w.eq(1)
            with m.If(ob_free):
                m.d.sync += ob_valid.eq(0)
            with m.If(mw_fire):
                m.d.sync += [ob_valid.eq(1), ob_aw.eq(0), ob_w.eq(0), ob_addr.eq(mw.addr), ob_data.eq(mw.data)]
        m.d.sync += pending.eq(pending + (mw_fire & is_bkt) - b_bkt)
        bump("host_writes", mw_fire)
        # the cuckoo engine hears of bucket/stash writes when accepted (``wr``) and at their B response
        # (``wr_done``: both in one cycle when they coincide)
        m.d.comb += [ck.wr.valid.eq(mw_fire & is_bkt), ck.wr.payload.line.eq(mw.addr),
                     ck.wr_done.valid.eq(b_bkt), ck.wr_done.payload.line.eq(done_addr)]
        if hasattr(ck, "wr_pending"):
            m.d.comb += ck.wr_pending.eq(pending != 0)
        # mirrors: the CAM (first cam_entries rule lines), the action table, the hash key
        rules_off = r["rules"][0]
        acts_off = r["actions"][0]
        m.d.comb += [
            cam.w.valid.eq(mw_fire & in_region(mw.addr, "rules", cfg.cam_entries)),
            cam.w.payload.index.eq(mw.addr - rules_off),
            cam.w.payload.line.eq(mw.data),
            act_w.en.eq(mw_fire & in_region(mw.addr, "actions")),
            act_w.addr.eq(mw.addr - acts_off),
            act_w.data.eq(mw.data),
        ]
        with m.If(mw_fire & (mw.addr == r["hashkey"][0])):
            m.d.sync += hash_key.eq(mw.data)

        # ---------------------------------------------------------------- input: i / reinject
        side = SyncFIFOBuffered(width=_SIDE.size, depth=16)
        frames = SyncFIFOBuffered(width=Beat.size, depth=self._frame_fifo)
        m.submodules.side = side
        m.submodules.frames = frames
        in_frame = Signal()          # inside a frame: the source is locked
        src = Signal()               # 0: i, 1: reinject
        prefer = Signal()            # round-robin between frames
        beat_n = Signal(range(self._cap + 1))
        cur_src = Signal()
        m.d.comb += cur_src.eq(Mux(in_frame, src,
                                   Mux(self.i.valid & self.reinject.valid, prefer, self.reinject.valid)))
        beat = Signal(Beat)
        in_valid = Signal()
        m.d.comb += [beat.eq(Mux(cur_src, self.reinject.payload.beat, self.i.payload)),
                     in_valid.eq(Mux(cur_src, self.reinject.valid, self.i.valid))]
        keep_beat = Signal()                              # stored in the frame FIFO
        m.d.comb += keep_beat.eq(beat_n < self._cap)
        accept = Signal()
        m.d.comb += accept.eq(in_valid & parser.i.ready & (frames.w_rdy | ~keep_beat) & (in_frame | side.w_rdy))
        m.d.comb += [
            parser.i.valid.eq(in_valid & (frames.w_rdy | ~keep_beat) & (in_frame | side.w_rdy)),
            parser.i.payload.eq(beat),
            self.i.ready.eq(accept & ~cur_src),
            self.reinject.ready.eq(accept & cur_src),
            frames.w_en.eq(accept & keep_beat),
            side.w_en.eq(accept & ~in_frame),
        ]
        sd_in = Signal(_SIDE)
        rp = self.reinject.payload
        m.d.comb += side.w_data.eq(sd_in)
        with m.If(cur_src):
            m.d.comb += [sd_in.src.eq(1), sd_in.action.eq(rp.action), sd_in.counter.eq(rp.counter),
                         sd_in.count.eq(rp.count)]
        stored = Signal(Beat)
        m.d.comb += [stored.eq(beat), frames.w_data.eq(stored)]
        with m.If(beat_n == self._cap - 1):
            m.d.comb += stored.last.eq(1)                 # cut an oversize frame here
        with m.If(accept):
            with m.If(beat.last):
                m.d.sync += [in_frame.eq(0), beat_n.eq(0), prefer.eq(~cur_src)]
            with m.Else():
                m.d.sync += [in_frame.eq(1), src.eq(cur_src), beat_n.eq(Mux(keep_beat, beat_n + 1, beat_n))]
        bump("rx_frames", accept & beat.last & ~cur_src)
        bump("reinjected", accept & beat.last & cur_src)
        bump("trunc_beats", accept & ~keep_beat)

        # ---------------------------------------------------------------- lookups
        p = parser.o.payload
        sd = Signal(_SIDE)
        m.d.comb += sd.eq(side.r_data)
        fk = p.key.flow
        need = Signal()
        m.d.comb += need.eq(~sd.src & (p.key.exception == 0))
        descs = SyncFIFOBuffered(width=_DESC.size, depth=self._lookups + 16)
        camq = SyncFIFOBuffered(width=CamResult(cfg.cam_entries).size,
                                depth=self._lookups + 16)
        m.submodules.descs = descs
        m.submodules.camq = camq
        go = Signal()
        m.d.comb += go.eq(parser.o.valid & side.r_rdy & descs.w_rdy & cam.i.ready & (ck.i.ready | ~need))
        d_in = Signal(_DESC)
        m.d.comb += [
            d_in.src.eq(sd.src), d_in.need.eq(need), d_in.exception.eq(p.key.exception != 0),
            d_in.tcp_flags.eq(p.key.tcp_flags), d_in.length.eq(p.length),
            d_in.tracked.eq(((fk.eth_type == 0x0800) | (fk.eth_type == 0x86DD))
                            & ((fk.ip_proto == 6) | (fk.ip_proto == 17))),
            d_in.action.eq(sd.action), d_in.counter.eq(sd.counter), d_in.count.eq(sd.count),
            parser.o.ready.eq(go), side.r_en.eq(go),
            descs.w_en.eq(go), descs.w_data.eq(d_in),
            cam.i.valid.eq(parser.o.valid & side.r_rdy & descs.w_rdy & (ck.i.ready | ~need)),
            cam.i.payload.eq(p.key), cam.i.payload.ct_state.eq(0),
            ck.i.valid.eq(parser.o.valid & side.r_rdy & descs.w_rdy & cam.i.ready & need),
            ck.i.payload.key.eq(fk), ck.i.payload.tag.eq(0),
            camq.w_en.eq(cam.o.valid), camq.w_data.eq(cam.o.payload), cam.o.ready.eq(camq.w_rdy),
        ]

        # ---------------------------------------------------------------- resolve (2 stages)
        d = Signal(_DESC)
        c = Signal(CamResult(cfg.cam_entries))
        fr = ck.o.payload
        m.d.comb += [d.eq(descs.r_data), c.eq(camq.r_data)]
        a_ready = Signal()
        m.d.comb += a_ready.eq(descs.r_rdy & camq.r_rdy & (~d.need | ck.o.valid))
        b_valid = Signal()
        b_fire = Signal()
        a_fire = Signal()
        m.d.comb += a_fire.eq(a_ready & (~b_valid | b_fire))
        m.d.comb += [descs.r_en.eq(a_fire), camq.r_en.eq(a_fire), ck.o.ready.eq(a_fire & d.need)]
        e = fr.entry
        flags = d.tcp_flags
        eligible = Signal()
        m.d.comb += eligible.eq(~e.nocache & (
            (e.conn_state == ConnState.NONE) | (e.conn_state == ConnState.UDP_REPLIED)
            | ((e.conn_state == ConnState.ESTABLISHED)
               & ((flags & (TcpFlags.SYN | TcpFlags.FIN | TcpFlags.RST)) == 0))))
        kind_a = Signal(2)
        reason_a = Signal(UpcallReason)
        path_a = Signal(2)
        act_a = Signal(20)
        cnt_a = Signal(24)
        count_a = Signal()
        with m.If(d.src):
            m.d.comb += [kind_a.eq(Mux(d.action >= cfg.n_actions, _DISCARD, _EXEC)), path_a.eq(_PATH_REINJECT),
                         act_a.eq(d.action), cnt_a.eq(d.counter), count_a.eq(d.count)]
        with m.Elif(d.exception):
            m.d.comb += [kind_a.eq(_UPCALL), reason_a.eq(UpcallReason.EXCEPTION)]
        with m.Elif(fr.hit):
            with m.If(~eligible):
                m.d.comb += [kind_a.eq(_UPCALL), reason_a.eq(UpcallReason.FLOW_STATE)]
            with m.Elif(e.action >= cfg.n_actions):
                m.d.comb += [kind_a.eq(_UPCALL), reason_a.eq(UpcallReason.BAD_ACTION)]
            with m.Else():
                m.d.comb += [kind_a.eq(_EXEC), path_a.eq(_PATH_FLOW), act_a.eq(e.action), cnt_a.eq(e.counter),
                             count_a.eq(1)]
        with m.Elif(c.hit):
            with m.If(c.action >= cfg.n_actions):
                m.d.comb += [kind_a.eq(_UPCALL), reason_a.eq(UpcallReason.BAD_ACTION)]
            with m.Else():
                m.d.comb += [kind_a.eq(_CAMCHK), path_a.eq(_PATH_CAM), act_a.eq(c.action), cnt_a.eq(c.counter),
                             count_a.eq(1)]
        with m.Else():
            m.d.comb += [kind_a.eq(_UPCALL), reason_a.eq(UpcallReason.CAM_MISS)]
        act_r = actions.read_port(domain="sync")
        m.d.comb += [act_r.addr.eq(act_a), act_r.en.eq(a_fire)]
        kind_b = Signal(2)
        reason_b = Signal(UpcallReason)
        path_b = Signal(2)
        cnt_b = Signal(24)
        count_b = Signal()
        len_b = Signal(16)
        ctc_b = Signal()
        with m.If(b_fire):
            m.d.sync += b_valid.eq(0)
        with m.If(a_fire):
            m.d.sync += [b_valid.eq(1), kind_b.eq(kind_a), reason_b.eq(reason_a), path_b.eq(path_a),
                         cnt_b.eq(cnt_a), count_b.eq(count_a), len_b.eq(d.length),
                         ctc_b.eq(d.tracked & c.ct_conflict)]
        act = Signal(ActionEntry)
        m.d.comb += act.eq(act_r.data)
        kind = Signal(2)
        reason = Signal(UpcallReason)
        m.d.comb += [kind.eq(kind_b), reason.eq(Mux(kind_b == _UPCALL, reason_b, UpcallReason.TO_HOST))]
        with m.If(kind_b == _CAMCHK):
            with m.If(act.ct_commit):
                m.d.comb += [kind.eq(_UPCALL), reason.eq(UpcallReason.CT_COMMIT)]
            with m.Elif(ctc_b):
                m.d.comb += [kind.eq(_UPCALL), reason.eq(UpcallReason.CT_RULE)]
            with m.Else():
                m.d.comb += kind.eq(_EXEC)
        routes = SyncFIFOBuffered(width=_ROUTE.size, depth=8)
        m.submodules.routes = routes
        counting = Signal()
        in_range = Signal()
        m.d.comb += [in_range.eq(cnt_b < self._n_counters), counting.eq((kind == _EXEC) & count_b)]
        m.d.comb += [
            b_fire.eq(b_valid & routes.w_rdy & (~(counting & in_range) | cb.upd.valid & cb.upd.ready)),
            cb.upd.valid.eq(b_valid & routes.w_rdy & counting & in_range),
            cb.upd.payload.index.eq(cnt_b), cb.upd.payload.bytes.eq(len_b),
            routes.w_en.eq(b_fire),
        ]
        rt_in = Signal(_ROUTE)
        m.d.comb += [rt_in.reason.eq(reason), rt_in.discard.eq(kind == _DISCARD), routes.w_data.eq(rt_in)]
        with m.If(kind == _EXEC):
            m.d.comb += rt_in.act.eq(act)
        with m.Else():
            m.d.comb += rt_in.act.to_host.eq(1)                # pass the frame through unchanged
        bump("flow", b_fire & (kind == _EXEC) & (path_b == _PATH_FLOW))
        bump("cam", b_fire & (kind == _EXEC) & (path_b == _PATH_CAM))
        bump("executed", b_fire & (kind == _EXEC))
        bump("upcalls", b_fire & (kind == _UPCALL))
        bump("exceptions", b_fire & (kind == _UPCALL) & (reason == UpcallReason.EXCEPTION))
        bump("bad_counter", b_fire & counting & ~in_range)

        # ---------------------------------------------------------------- route frames to the rewriters
        rt = Signal(_ROUTE)
        fb = Signal(Beat)
        m.d.comb += [rt.eq(routes.r_data), fb.eq(frames.r_data)]
        meta = SyncFIFOBuffered(width=_META.size, depth=32)
        m.submodules.meta = meta
        rr = Signal()                                # rewriter taking the next frame
        first = Signal(init=1)
        head = Signal()
        m.d.comb += head.eq(routes.r_rdy & frames.r_rdy)
        merge_drop_v = Signal()
        for k, rw in enumerate(self.rewriters):
            # discarded frames go through a rewriter too (action all zero: verdict DROP), so every
            # output stream, drops included, stays in frame order
            mine = head & (rr == k) & (~first | meta.w_rdy)
            m.d.comb += [rw.i.valid.eq(mine), rw.i.payload.eq(fb),
                         rw.act.valid.eq(mine & first), rw.act.payload.eq(Mux(rt.discard, 0, rt.act.as_value()))]
        fwd = Signal()                               # the head beat goes into its rewriter
        m.d.comb += fwd.eq(Cat(rw.i.valid & rw.i.ready for rw in self.rewriters).any())
        mt_in = Signal(_META)
        m.d.comb += [
            frames.r_en.eq(fwd),
            routes.r_en.eq(fwd & fb.last),
            mt_in.reason.eq(rt.reason), mt_in.bad_reinject.eq(rt.discard),
            meta.w_en.eq(fwd & first), meta.w_data.eq(mt_in),
        ]
        with m.If(fwd):
            m.d.sync += first.eq(fb.last)
            with m.If(fb.last):
                if len(self.rewriters) == 2:
                    m.d.sync += rr.eq(~rr)

        # ---------------------------------------------------------------- merge, verdicts, outputs
        rw_o = self.rewriters[0].o
        cur = Signal()
        ro = Signal.like(rw_o.payload)
        ro_valid = Signal()
        rw_l = self.rewriters[-1].o                  # rewriter 1 (rewriter 0 again when there is one)
        m.d.comb += [ro.eq(Mux(cur, rw_l.payload.as_value(), rw_o.payload.as_value())),
                     ro_valid.eq(Mux(cur, rw_l.valid, rw_o.valid))]
        verdict = ro.verdict
        bad_port = Signal()
        m.d.comb += bad_port.eq(ro.out_port >= cfg.n_ports)
        to_out = ro_valid & (verdict == Verdict.OUTPUT) & ~bad_port
        to_up = ro_valid & (verdict == Verdict.TO_HOST)
        to_drop = ro_valid & ((verdict == Verdict.DROP) | (verdict == Verdict.OUTPUT) & bad_port)
        mt = Signal(_META)
        m.d.comb += mt.eq(meta.r_data)
        m.d.comb += [
            self.o.valid.eq(to_out), self.o.payload.beat.eq(ro.beat), self.o.payload.out_port.eq(ro.out_port),
            self.upcall.valid.eq(to_up), self.upcall.payload.beat.eq(ro.beat),
            self.upcall.payload.reason.eq(mt.reason),
            merge_drop_v.eq(to_drop & ro.beat.last),
        ]
        taken = Signal()
        m.d.comb += taken.eq(Mux(to_out, self.o.ready, Mux(to_up, self.upcall.ready,
                                                             ~ro.beat.last | self.drop.ready)) & ro_valid)
        for k, rw in enumerate(self.rewriters):
            m.d.comb += rw.o.ready.eq(taken & (cur == k))
        m.d.comb += [self.drop.valid.eq(merge_drop_v), self.drop.payload.in_port.eq(ro.beat.in_port),
                     self.drop.payload.reason.eq(Mux(mt.bad_reinject, DropReason.BAD_REINJECT,
                                                     Mux(verdict == Verdict.OUTPUT, DropReason.BAD_PORT,
                                                         DropReason.ACTION)))]
        end = taken & ro.beat.last
        m.d.comb += meta.r_en.eq(end)
        if len(self.rewriters) == 2:
            with m.If(end):
                m.d.sync += cur.eq(~cur)
        bump("out_frames", end & to_out)
        bump("upcall_frames", end & to_up)
        bump("drop_frames", end & to_drop)

        # ---------------------------------------------------------------- host reads (mr)
        # kinds of the reads in flight, in order: 0 DRAM line, 1 counter line
        hr = AxiWires(1, "hr")
        kinds = SyncFIFOBuffered(width=1, depth=32)
        dram_q = SyncFIFOBuffered(width=LINE_BITS, depth=32)
        cnt_q = SyncFIFOBuffered(width=LINE_BITS, depth=4)
        m.submodules.mr_kinds = kinds
        m.submodules.mr_dram = dram_q
        m.submodules.mr_cnt = cnt_q
        c_first, c_lines = r["counters"]
        mra = self.mr.payload.addr
        is_cnt = Signal()
        m.d.comb += is_cnt.eq((mra >= c_first) & (mra < c_first + c_lines))
        # counter lines: one exact read through the counter block per line (its ``rd_line`` is the whole
        # line, as of one instant), one line at a time
        cl_busy = Signal()
        cl_line = Signal(32)
        cl_req = Signal()                  # the read was issued
        cl_got = Signal()                  # its answer arrived
        cl_data = Signal(LINE_BITS)
        # a DRAM read: at most 32 in flight (the response FIFO is reserved at issue)
        dram_credits = Signal(range(33), init=32)
        hr_ar_valid = Signal()
        hr_addr = Signal(32)
        writes_idle = Signal()
        m.d.comb += writes_idle.eq(~writes_busy & ~(self.mw.valid & self.mw.ready))
        hr_ar_fire = hr.m_axi_arvalid & hr.m_axi_arready
        take_dram = (self.mr.valid & ~is_cnt & writes_idle & kinds.w_rdy & (~hr_ar_valid | hr_ar_fire)
                     & (dram_credits != 0))
        take_cnt = self.mr.valid & is_cnt & writes_idle & kinds.w_rdy & ~cl_busy
        m.d.comb += [self.mr.ready.eq(take_dram | take_cnt), kinds.w_en.eq(take_dram | take_cnt),
                     kinds.w_data.eq(is_cnt)]
        r_fire = hr.m_axi_rvalid & hr.m_axi_rready
        with m.If(take_dram):
            m.d.sync += [hr_ar_valid.eq(1), hr_addr.eq(mra - 0)]
        with m.Elif(hr_ar_fire):
            m.d.sync += hr_ar_valid.eq(0)
        m.d.sync += dram_credits.eq(dram_credits - take_dram + (dram_q.r_en & dram_q.r_rdy))
        m.d.comb += [
            hr.m_axi_arvalid.eq(hr_ar_valid), hr.m_axi_araddr.eq(hr_addr << LINE_SHIFT), hr.m_axi_arid.eq(0),
            hr.m_axi_arlen.eq(0), hr.m_axi_arsize.eq(LINE_SHIFT), hr.m_axi_arburst.eq(1),
            hr.m_axi_rready.eq(1), hr.m_axi_bready.eq(1), hr.m_axi_awvalid.eq(0), hr.m_axi_wvalid.eq(0),
            dram_q.w_en.eq(r_fire), dram_q.w_data.eq(hr.m_axi_rdata),
        ]
        with m.If(take_cnt):
            m.d.sync += [cl_busy.eq(1), cl_line.eq(mra - c_first), cl_req.eq(0), cl_got.eq(0)]
        # the counter block's read port: the line read has priority over ``crd``
        cl_rd = cl_busy & ~cl_req
        own = Signal()                     # rd_data belongs to the line read
        m.d.comb += own.eq(cl_busy & cl_req & ~cl_got)
        m.d.comb += [
            cb.rd.valid.eq(Mux(cl_busy, cl_rd, self.crd.valid)),
            cb.rd.payload.eq(Mux(cl_busy, cl_line << 2, self.crd.payload)),
            self.crd.ready.eq(~cl_busy & cb.rd.ready),
            self.crd_data.valid.eq(cb.rd_data.valid & ~own), self.crd_data.payload.eq(cb.rd_data.payload),
            cb.rd_data.ready.eq(Mux(own, 1, self.crd_data.ready)),
        ]
        with m.If(cl_rd & cb.rd.ready):
            m.d.sync += cl_req.eq(1)
        with m.If(own & cb.rd_data.valid):
            m.d.sync += [cl_got.eq(1), cl_data.eq(cb.rd_line)]
        with m.If(cl_busy & cl_got & cnt_q.w_rdy):
            m.d.sync += cl_busy.eq(0)
        m.d.comb += [cnt_q.w_en.eq(cl_busy & cl_got), cnt_q.w_data.eq(cl_data)]
        # answers in request order
        k_cnt = kinds.r_data[0]
        m.d.comb += [
            self.mr_data.valid.eq(kinds.r_rdy & Mux(k_cnt, cnt_q.r_rdy, dram_q.r_rdy)),
            self.mr_data.payload.data.eq(Mux(k_cnt, cnt_q.r_data, dram_q.r_data)),
            kinds.r_en.eq(self.mr_data.valid & self.mr_data.ready),
            dram_q.r_en.eq(self.mr_data.valid & self.mr_data.ready & ~k_cnt),
            cnt_q.r_en.eq(self.mr_data.valid & self.mr_data.ready & k_cnt),
        ]

        # ---------------------------------------------------------------- counters, DRAM
        m.d.comb += [cb.flush.eq(self.flush), self.flush_done.eq(cb.flush_done)]
        if cb.wb_grant:
            m.d.comb += [
                self.wb_req.valid.eq(cb.wb_req.valid), self.wb_req.payload.addr.eq(cb.wb_req.payload),
                cb.wb_req.ready.eq(self.wb_req.ready),
                cb.wb_ok.valid.eq(self.wb_ok.valid), cb.wb_ok.payload.eq(self.wb_ok.payload.addr),
                self.wb_ok.ready.eq(cb.wb_ok.ready),
            ]
        read_mux(m, [ck, cb, hr], self, self._id_bits)
        write_mux(m, [hw, cb], self, self._id_bits)
        return m
