"""Drivers, monitors and the model-side expectations for the Datapath top under cocotb.

One coroutine per clock cycle drives every input stream of the DUT (received
frames, reinjected frames, host line writes, counter reads) from queues and
collects every output stream (output frames, upcalls, drops, counter values),
with random idle gaps on the inputs and random ``ready`` on the outputs.  The
expectations come from the golden model only: :meth:`SlowPath.fast_path` for
received frames, :meth:`SlowPath.execute` for reinjected ones, and the
model's :class:`CounterBank` for counter values.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from dataclasses import dataclass

from amaranth.lib import data
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from cxlnic.config import NicConfig
from cxlnic.hdl.datapath import STATS, DropInfo, DropReason, MemWrite, OutBeat, Reinject, UpcallBeat, UpcallReason
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.hdl.parser import BEAT_BYTES, Beat
from cxlnic.model.actions import Verdict
from cxlnic.model.counters import CLINE
from cxlnic.model.slowpath import Path, SlowPath, Upcall
from cxlnic.tb.common import clock_and_reset, frame_beats
from cxlnic.tb.cxl_mem_host import CocotbIO

__all__ = ["Expect", "DatapathTB", "expect_rx", "expect_reinject", "counter_line", "UPCALL_REASONS"]

#: The model's upcall names -> the RTL's reason codes.
UPCALL_REASONS = {"exception": UpcallReason.EXCEPTION, "flow_state": UpcallReason.FLOW_STATE,
                  "ct_commit": UpcallReason.CT_COMMIT, "ct_rule": UpcallReason.CT_RULE,
                  "cam_miss": UpcallReason.CAM_MISS}
_DROPS = {"action": DropReason.ACTION, "bad_port": DropReason.BAD_PORT}


def _offsets(layout) -> dict:
    return {name: f.offset for name, f in data.Layout.cast(layout)}


_B = _offsets(Beat)
_O = _offsets(OutBeat)
_U = _offsets(UpcallBeat)
_D = _offsets(DropInfo)
_R = _offsets(Reinject)
_W = _offsets(MemWrite)
_STATS_WIDTH = 32


@dataclass(frozen=True)
class Expect:
    """Where one frame must come out: ``stream`` "out" (``arg`` = port), "upcall"
    (``arg`` = reason) or "drop" (``arg`` = reason, ``frame`` = None)."""
    stream: str
    arg: int
    frame: bytes | None
    path: str = ""


def _dest(d, in_port: int) -> Expect:
    if d.verdict == Verdict.OUTPUT:
        return Expect("out", d.out_port, d.frame, d.path.value)
    if d.verdict == Verdict.TO_HOST:
        return Expect("upcall", int(UpcallReason.TO_HOST), d.frame, d.path.value)
    return Expect("drop", int(_DROPS[d.drop_reason]), None, d.path.value)


def expect_rx(sp: SlowPath, frame: bytes, in_port: int, cap_bytes: int) -> Expect:
    """The datapath's answer for a received frame (counts it in ``sp.counters`` like the device)."""
    d = sp.fast_path(frame, in_port)
    if isinstance(d, Upcall):
        return Expect("upcall", int(UPCALL_REASONS[d.reason]), bytes(frame), "upcall")
    if d.path == Path.EXCEPTION:
        return Expect("upcall", int(UpcallReason.EXCEPTION), bytes(frame[:cap_bytes]), "exception")
    return _dest(d, in_port)


def expect_reinject(sp: SlowPath, frame: bytes, action: int, counter: int | None) -> Expect:
    if action >= sp.cfg.n_actions:
        return Expect("drop", int(DropReason.BAD_REINJECT), None, "reinject")
    return _dest(sp.execute(frame, action, counter), 0)


def counter_line(sp: SlowPath, line: int) -> bytes:
    """Counter line ``line`` of the region as the model's counters say (the table format)."""
    rec = CLINE.new()
    for j in range(4):
        i = line * 4 + j
        if i < sp.counters.n:
            rec.counters[j].packets, rec.counters[j].bytes = (v & (2**64 - 1) for v in sp.counters.get(i))
    return CLINE.to_bytes(rec)


class FixedLatencyDram:
    """A DRAM that answers every read exactly ``latency`` cycles after its AR handshake, one R beat
    per cycle at most (the line rate), oldest first; writes land at their W handshake and get B
    ``latency`` cycles later.  Driven from :meth:`DatapathTB.run`'s cycle loop (no coroutine of its
    own), so it costs nothing when idle.  ``mem`` is a bytearray image."""

    def __init__(self, dut, mem: bytearray, latency: int):
        self.dut, self.mem, self.latency = dut, mem, latency
        self.reads: deque = deque()        # (due cycle, id, line)
        self.writes: deque = deque()       # (due cycle, id)
        self.aw: deque = deque()           # ids whose AW came before their W
        self.beats = 0                     # R beats sent
        dut.m_axi_arready.value = 1
        dut.m_axi_awready.value = 1
        dut.m_axi_wready.value = 1
        dut.m_axi_rvalid.value = 0
        dut.m_axi_bvalid.value = 0

    def drive(self, cycle: int) -> None:
        """Before the edge: present the R beat and the B response due now."""
        d = self.dut
        r = self.reads[0] if self.reads and self.reads[0][0] <= cycle else None
        d.m_axi_rvalid.value = int(r is not None)
        if r is not None:
            d.m_axi_rid.value = r[1]
            d.m_axi_rlast.value = 1
            d.m_axi_rresp.value = 0
            d.m_axi_rdata.value = int.from_bytes(self.mem[r[2] * LINE_BYTES:(r[2] + 1) * LINE_BYTES], "little")
        b = self.writes[0] if self.writes and self.writes[0][0] <= cycle else None
        d.m_axi_bvalid.value = int(b is not None)
        if b is not None:
            d.m_axi_bid.value = b[1]
            d.m_axi_bresp.value = 0

    def sample(self, cycle: int) -> None:
        """In ReadOnly: take the handshakes of this cycle."""
        d = self.dut
        if d.m_axi_rvalid.value and d.m_axi_rready.value:
            self.reads.popleft()
            self.beats += 1
        if d.m_axi_bvalid.value and d.m_axi_bready.value:
            self.writes.popleft()
        if d.m_axi_arvalid.value:
            self.reads.append((cycle + self.latency, d.m_axi_arid.value.to_unsigned(),
                               d.m_axi_araddr.value.to_unsigned() // LINE_BYTES))
        if d.m_axi_awvalid.value:
            self.aw.append((d.m_axi_awid.value.to_unsigned(), d.m_axi_awaddr.value.to_unsigned() // LINE_BYTES))
        if d.m_axi_wvalid.value:
            wid, line = self.aw.popleft()    # AW and W of one write arrive together or AW first
            data_ = d.m_axi_wdata.value.to_unsigned().to_bytes(LINE_BYTES, "little")
            strb = d.m_axi_wstrb.value.to_unsigned()
            for k in range(LINE_BYTES):
                if strb >> k & 1:
                    self.mem[line * LINE_BYTES + k] = data_[k]
            self.writes.append((cycle + self.latency, wid))


class DatapathTB:
    """The DUT's clock, reset, DRAM (AxiRam with random stalls) and every stream end."""

    def __init__(self, dut, cfg: NicConfig, seed: int, *, dram_stall: float = 0.0, out_stall: float = 0.0,
                 in_gap: tuple[int, int] = (0, 8), burst: int = 32, fixed_latency: int | None = None,
                 image: bytearray | None = None, host_ports: bool = True):
        self.dut = dut
        # host_ports: the DUT has the Datapath's mw/mr/crd ports (False: a top whose host side is CXL,
        # driven by cycle agents added to ``agents``)
        self.host_ports = host_ports
        self.agents: list = []            # drive(io, cycle), sample(io, cycle), idle(), progress()
        self.io = CocotbIO(dut)
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.out_stall = out_stall
        self.in_gap = in_gap
        self.burst = burst
        size = 1 << (cfg.image_lines * LINE_BYTES - 1).bit_length()
        self.fixed = None
        if fixed_latency is not None:
            mem = bytearray(size)
            if image is not None:
                mem[:len(image)] = image
            self.fixed = FixedLatencyDram(dut, mem, fixed_latency)
            self.ram = None
        else:
            self._axiram(dut, size, dram_stall)
        self.rx: deque = deque()          # Beat words

        self.rein: deque = deque()        # Reinject words
        self.mw: deque = deque()          # (line, bytes)
        self.crd: deque = deque()         # counter indices
        self.mrq: deque = deque()         # line reads
        self.mr_lines: list = []          # their data, in order
        self.out: list = []               # (port, frame)
        self.upcalls: list = []           # (reason, frame)
        self.drops: list = []             # (reason, in_port)
        self.counters: list = []          # (packets, bytes)
        self.visible: list = []           # (cycle, line) of each write-visible pulse, in completion order
        self.cycles = 0
        self.mw_prob = 1.0                # chance per cycle that a queued write is presented
        self.rx_last: list = []           # cycle of each received frame's last beat
        self.out_first: list = []         # cycle of each output frame's first beat
        self._cur = {"out": bytearray(), "upcall": bytearray()}

    def _axiram(self, dut, size: int, stall: float) -> None:
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=size)
        self.ram.read_if.log.setLevel(logging.WARNING)
        self.ram.write_if.log.setLevel(logging.WARNING)
        if stall:
            rng = random.Random(self.rng.getrandbits(32))
            for ch in (self.ram.read_if.ar_channel, self.ram.read_if.r_channel, self.ram.write_if.aw_channel,
                       self.ram.write_if.w_channel, self.ram.write_if.b_channel):
                ch.set_pause_generator(rng.random() < stall for _ in itertools.count())

    @property
    def mw_done(self) -> list:
        """Line indices of the writes made visible (``mw_done`` / ``wr_visible`` pulses), in order."""
        return [line for _c, line in self.visible]

    async def reset(self, extra: dict | None = None):
        init = {"i__valid": 0, "reinject__valid": 0, "o__ready": 0, "upcall__ready": 0, "drop__ready": 0, "flush": 0}
        if self.host_ports:
            init.update({"mw__valid": 0, "crd__valid": 0, "mr__valid": 0, "mr_data__ready": 0,
                         "crd_data__ready": 0})
        await clock_and_reset(self.dut, {**init, **(extra or {})})
        await RisingEdge(self.dut.clk)

    # -- queueing ------------------------------------------------------------------
    def send(self, frame: bytes, in_port: int) -> None:
        self.rx.extend(frame_beats(frame, in_port, self.rng))

    def send_reinject(self, frame: bytes, action: int, counter: int | None, in_port: int = 0) -> None:
        side = action << _R["action"] | (counter or 0) << _R["counter"] | int(counter is not None) << _R["count"]
        self.rein.extend(w << _R["beat"] | side for w in frame_beats(frame, in_port, self.rng))

    def write_line(self, line: int, raw: bytes) -> None:
        self.mw.append((line, bytes(raw)))

    def read_counter(self, index: int) -> None:
        self.crd.append(index)

    def read_line(self, line: int) -> None:
        self.mrq.append(line)

    # -- the cycle loop ------------------------------------------------------------
    def _frame_beat(self, word: int, which: str):
        raw = word >> _B["data"] & ((1 << 8 * BEAT_BYTES) - 1)
        keep = word >> _B["keep"] & ((1 << BEAT_BYTES) - 1)
        n = keep.bit_length()
        assert keep == (1 << n) - 1, f"{which}: keep {keep:#x} is not contiguous from byte 0"
        self._cur[which] += raw.to_bytes(BEAT_BYTES, "little")[:n]
        if word >> _B["last"] & 1:
            f = bytes(self._cur[which])
            self._cur[which] = bytearray()
            return f
        return None

    async def run(self, *, until=None, stop=None, stuck_cycles: int = 5000, max_cycles: int = 5_000_000) -> None:
        """Run until every input queue is empty and ``until()`` (default: the DUT is idle for
        200 cycles) holds, or until ``stop()`` holds whatever is queued (checked after each cycle);
        raise naming the stuck streams if nothing moves for ``stuck_cycles``."""
        d, rng = self.dut, self.rng
        idle = quiet = settle = 0
        in_burst = self.burst
        mw_now = None
        while True:
            d.o__ready.value = int(rng.random() >= self.out_stall)
            d.upcall__ready.value = int(rng.random() >= self.out_stall)
            d.drop__ready.value = int(rng.random() >= self.out_stall)
            if self.host_ports:
                d.crd_data__ready.value = 1
                d.mr_data__ready.value = int(rng.random() >= self.out_stall)
                d.mr__valid.value = int(bool(self.mrq))
                if self.mrq:
                    d.mr__payload.value = self.mrq[0]
            if idle:
                idle -= 1
                d.i__valid.value = 0
                d.reinject__valid.value = 0
            else:
                d.i__valid.value = int(bool(self.rx))
                if self.rx:
                    d.i__payload.value = self.rx[0]
                d.reinject__valid.value = int(bool(self.rein))
                if self.rein:
                    d.reinject__payload.value = self.rein[0]
            if self.host_ports:
                if mw_now is None and self.mw and rng.random() < self.mw_prob:
                    mw_now = self.mw[0]
                    d.mw__payload.value = (mw_now[0] << _W["addr"]
                                           | int.from_bytes(mw_now[1], "little") << _W["data"])
                d.mw__valid.value = int(mw_now is not None)
                d.crd__valid.value = int(bool(self.crd))
                if self.crd:
                    d.crd__payload.value = self.crd[0]
            if self.fixed:
                self.fixed.drive(self.cycles)
            for a in self.agents:
                a.drive(self.io, self.cycles)
            await ReadOnly()
            if self.fixed:
                self.fixed.sample(self.cycles)
            before = [a.progress() for a in self.agents]
            for a in self.agents:
                a.sample(self.io, self.cycles)
            moved = before != [a.progress() for a in self.agents]
            if d.i__valid.value and d.i__ready.value:
                w = self.rx.popleft()
                moved = True
                if w >> _B["last"] & 1:
                    self.rx_last.append(self.cycles)
                    in_burst -= 1
                    if in_burst <= 0:
                        in_burst = rng.randint(1, self.burst)
                        idle = rng.randint(*self.in_gap)
            if d.reinject__valid.value and d.reinject__ready.value:
                self.rein.popleft()
                moved = True
            if self.host_ports:
                if mw_now is not None and d.mw__ready.value:
                    self.mw.popleft()
                    mw_now = None
                    moved = True
                if self.crd and d.crd__ready.value:
                    self.crd.popleft()
                    moved = True
                if self.mrq and d.mr__ready.value:
                    self.mrq.popleft()
                    moved = True
                if d.mr_data__valid.value and d.mr_data__ready.value:
                    self.mr_lines.append(d.mr_data__payload.value.to_unsigned().to_bytes(LINE_BYTES, "little"))
                    moved = True
            done = d.mw_done if self.host_ports else d.wr_visible
            if done.value:
                addr = (d.mw_done_addr if self.host_ports else d.wr_visible_addr).value.to_unsigned()
                self.visible.append((self.cycles, addr))
                moved = True
            if d.o__valid.value and d.o__ready.value:
                w = d.o__payload.value.to_unsigned()
                if not self._cur["out"]:
                    self.out_first.append(self.cycles)
                f = self._frame_beat(w >> _O["beat"], "out")
                if f is not None:
                    self.out.append((w >> _O["out_port"] & 0xFF, f))
                moved = True
            if d.upcall__valid.value and d.upcall__ready.value:
                w = d.upcall__payload.value.to_unsigned()
                f = self._frame_beat(w >> _U["beat"], "upcall")
                if f is not None:
                    self.upcalls.append((w >> _U["reason"] & 0xF, f))
                moved = True
            if d.drop__valid.value and d.drop__ready.value:
                w = d.drop__payload.value.to_unsigned()
                self.drops.append((w >> _D["reason"] & 3, w >> _D["in_port"] & 0xFF))
                moved = True
            if self.host_ports and d.crd_data__valid.value:
                w = d.crd_data__payload.value.to_unsigned()
                self.counters.append((w & (1 << 64) - 1, w >> 64))
                moved = True
            await RisingEdge(d.clk)
            self.cycles += 1
            busy = bool(self.rx or self.rein or self.mw or self.crd or self.mrq or mw_now
                        or not all(a.idle() for a in self.agents))
            quiet = 0 if moved or idle else quiet + 1
            settle = 0 if moved or busy else settle + 1
            if quiet > stuck_cycles and busy:
                raise AssertionError(self.stuck_report())
            if (stop and stop()) or (not busy and (until() if until else settle > 200)):
                return
            if self.cycles > max_cycles:
                raise AssertionError(f"gave up after {max_cycles} cycles: " + self.stuck_report())

    def stuck_report(self) -> str:
        d = self.dut
        chans = ("i", "reinject", "o", "upcall", "drop")
        chans += ("mw", "mr", "mr_data", "crd", "crd_data") if self.host_ports else ()
        parts = [f"{c} valid={getattr(d, c + '__valid').value} ready={getattr(d, c + '__ready').value}"
                 for c in chans]
        return (f"Datapath stuck after {self.cycles} cycles ({len(self.rx)} rx beats, {len(self.rein)} "
                f"reinject beats, {len(self.mw)} writes, {len(self.crd)} counter reads queued): " + ", ".join(parts)
                + "".join(f"; {a.describe()}" for a in self.agents))

    def stats(self) -> dict:
        w = self.dut.stats.value.to_unsigned()
        return {n: w >> (_STATS_WIDTH * k) & 0xFFFFFFFF for k, n in enumerate(STATS)}
