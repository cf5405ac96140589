"""The system testbench: the SmartNic (Type 2) in :class:`~cxlnic.tb.harness.SystemHarness`
against the golden slow path, packet by packet and write by write.

The loop, one *epoch* at a time (``--burst`` received frames):

1. **Traffic.**  The epoch's frames are played into the device at line rate;
   the model decides each one as the fast path would
   (:meth:`SlowPath.fast_path`, counting it on the model's counters).  Every
   output frame, upcall and drop is compared byte for byte and in order with
   the model's.
2. **Slow path.**  Each upcall the device raised (and the model expected) is
   handled by the golden slow path as OVS's handler thread would: it looks the
   frame up again (an earlier upcall of the same epoch may have installed its
   flow), classifies it with connection tracking and installs flows; every
   table line it writes becomes a CXL.mem MemWr to the device (the table bytes
   the model reads are the bytes it wrote, and the run ends by reading the
   whole image back through CXL.mem).  Then it reinjects the frame with the
   action and counter it chose; the device's result is compared with the
   model's.  Aging sweeps run on the scenario's clock between epochs; before
   each sweep every counter line is read through CXL.mem and compared with
   the model's counters (the sweep decides on them).
3. **Insert storm** (scenario ``storm``): each slow-path phase also streams
   bulk inserts of unrelated flows (cuckoo moves included) while frames of
   flows present before the phase keep arriving (none may miss), and a copy
   of each newly installed flow's frame is sent *gated* on the Cmp of the
   install's last write (the harness holds it until that NDR has left the
   device): it must take the fast path.  This is the visibility invariant,
   checked per packet at the cycle the Cmp leaves.
4. **Near full** (scenario ``nearfull``): the flow table is first filled to
   97 % with unrelated flows, so many installs fail and their packets keep
   going through the software path (upcall, classification, reinjection).

At the end every counter line and every table line is read through CXL.mem
and compared with the model.  The report (``report.json``) counts packets per
path, installs, install-to-first-fast-path latency, packets per cycle,
counters verified and mismatches; the test asserts zero mismatches.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from amaranth.lib import data
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer

from cxlnic.config import NicConfig
from cxlnic.hdl.cxl_mem import MetaField, MetaValue, ReqOpcode, RwdOpcode, SnpType
from cxlnic.hdl.datapath import STATS, UpcallReason
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.hdl.parser import BEAT_BYTES
from cxlnic.model.actions import Verdict
from cxlnic.model.flowtable import FKEY
from cxlnic.model.memory import BytearrayMemory, format_image
from cxlnic.model.slowpath import FENTRY, SlowPath, Upcall
from cxlnic.model.slowpath import Path as DPath
from cxlnic.tb.common import CLOCK_NS, clock_and_reset
from cxlnic.tb.datapath_tb import UPCALL_REASONS, Expect, _dest, counter_line
from cxlnic.tb.harness import (
    DRAM_LATENCY,
    HDM_BASE,
    SINKS,
    SOURCES,
    SYSTEM_BUILD,
    TYPE1_BUILD,
    TYPE1_SCENARIOS,
    TYPE2_ONLY,
    M2SWord,
    ReinjectWord,
    RxWord,
    sinks_of,
    sources_of,
    system_config,
)

__all__ = ["SystemTB", "SystemTB1", "run_system", "StuckError", "Scoreboard", "percentiles"]

def _offs(layout) -> dict:
    out = {}

    def walk(lay, base, prefix):
        for name, f in data.Layout.cast(lay):
            sub = f.shape
            if isinstance(sub, data.Layout) or (isinstance(sub, type) and issubclass(sub, data.Struct)):
                walk(sub, base + f.offset, f"{prefix}{name}.")
            out[f"{prefix}{name}"] = base + f.offset
    walk(layout, 0, "")
    return out


_RX, _RI, _M2S = _offs(RxWord), _offs(ReinjectWord), _offs(M2SWord)
_SINK_OFFS = {name: _offs(layout) for name, (layout, _f) in SINKS.items()}
_MASK32 = 0xFFFFFFFF
_KEEP_ALL = (1 << BEAT_BYTES) - 1
_FULL_BE = (1 << LINE_BYTES) - 1
_LINE_MASK = (1 << 8 * LINE_BYTES) - 1


#: Words a harness source holds (tb/harness.py ``src_depth``).
SRC_DEPTH = 1 << 16
#: Cycles without any stream moving after which a burst is declared stuck.
WATCHDOG = 20_000
#: Most words played in one go (the harness sources hold 65536; tags are 16 bits).
CHUNK = 16384


class StuckError(AssertionError):
    """The DUT stopped producing what the burst needs (the message names the stream)."""


class QueuedMemory(BytearrayMemory):
    """The model's table memory: every line written is also queued as a CXL.mem MemWr."""

    def __init__(self, n_lines: int):
        super().__init__(n_lines)
        self.queued: list[tuple[int, bytes]] = []

    def write_line(self, index: int, data_: bytes) -> None:
        super().write_line(index, data_)
        self.queued.append((index, bytes(data_)))

    def take(self) -> list[tuple[int, bytes]]:
        q, self.queued = self.queued, []
        return q


def _beat_words(frame: bytes, in_port: int, gate: int, off: dict, base: str) -> list[int]:
    """Packed source words of one frame (no trailing empty beat)."""
    words = []
    n = len(frame)
    d, k, la, ip = (off[f"{base}.data"], off[f"{base}.keep"], off[f"{base}.last"], off[f"{base}.in_port"])
    fixed = in_port << ip | gate << off["gate"]
    for s in range(0, max(n, 1), BEAT_BYTES):
        c = frame[s:s + BEAT_BYTES]
        last = s + BEAT_BYTES >= n
        keep = _KEEP_ALL if len(c) == BEAT_BYTES else (1 << len(c)) - 1
        words.append(int.from_bytes(c, "little") << d | keep << k | last << la | fixed)
    return words


@dataclass
class Totals:
    """Cumulative targets already met (the harness counters are cumulative)."""
    frames: int = 0
    ndr: int = 0
    drs: int = 0


@dataclass
class Burst:
    """What one :meth:`SystemTB.play` returned: records per sink and the cycles it spanned."""
    out: list = field(default_factory=list)        # (cycle of first beat, port, frame)
    upcall: list = field(default_factory=list)     # (cycle of first beat, reason, frame)
    drop: list = field(default_factory=list)       # (cycle, reason, in_port)
    ndr: list = field(default_factory=list)        # (cycle, opcode, tag)
    drs: list = field(default_factory=list)        # (cycle, tag, data)
    vis: list = field(default_factory=list)        # (cycle, line)
    cycles: int = 0
    start: int = 0


class SystemTB:
    """Drives :class:`~cxlnic.tb.harness.SystemHarness` (Type 2) a burst at a time through its files."""

    cxl_type = 2

    def __init__(self, dut, cfg: NicConfig, *, cap_beats: int, out_stall: int = 0, workdir: Path | None = None):
        self.dut, self.cfg, self.cap_beats = dut, cfg, cap_beats
        self.sources, self.sinks = sources_of(self.cxl_type), sinks_of(self.cxl_type)
        self.out_stall = out_stall
        self.dir = Path(workdir or os.getcwd())
        self.tot = Totals()
        self.tag = 0
        self._files = {}
        self._partial = {"out": None, "upcall": None}
        self.rtl_wall = 0.0                 # wall seconds spent simulating (the rest is Python)
        self.errors: list[str] = []         # protocol errors seen on the output streams
        self._oob = False

    async def reset(self) -> None:
        d = self.dut
        idle = {"out_stall": self.out_stall, "nic_flush": 0, "want_frames": 0, "flush_files": 0}
        if self.cxl_type == 2:
            idle |= {"want_ndr": 0, "want_drs": 0}
        for s in self.sources:
            idle |= {f"{s}_load": 0, f"{s}_count": 0}
        await clock_and_reset(d, idle)
        await RisingEdge(d.clk)
        for name, (_l, fname) in self.sinks.items():
            self._files[name] = open(self.dir / fname)          # noqa: SIM115 - read incrementally

    def close(self) -> None:
        for f in self._files.values():
            f.close()

    # -- words -------------------------------------------------------------------------------
    def rx_words(self, frame: bytes, in_port: int, gate: int = 0) -> list[int]:
        return _beat_words(frame, in_port, gate, _RX, "beat")

    def reinject_words(self, frame: bytes, action: int, counter: int | None, gate: int = 0) -> list[int]:
        extra = (action << _RI["r.action"] | (counter or 0) << _RI["r.counter"]
                 | int(counter is not None) << _RI["r.count"])
        return [w | extra for w in _beat_words(frame, 0, gate, _RI, "r.beat")]

    def _next_tag(self) -> int:
        self.tag = (self.tag + 1) & 0xFFFF
        return self.tag

    def write_word(self, line: int, raw: bytes, gate: int = 0) -> int:
        o = _M2S
        return (1 << o["is_rwd"] | RwdOpcode.MEM_WR.value << o["rwd.opcode"] | SnpType.NO_OP.value << o["rwd.snp_type"]
                | MetaField.META0_STATE.value << o["rwd.meta_field"] | MetaValue.I.value << o["rwd.meta_value"]
                | self._next_tag() << o["rwd.tag"] | (HDM_BASE + line) << o["rwd.addr"]
                | _FULL_BE << o["rwd.byte_enable"] | int.from_bytes(raw, "little") << o["rwd.data"]
                | gate << o["gate"])

    def read_word(self, line: int, gate: int = 0) -> int:
        o = _M2S
        return (ReqOpcode.MEM_RD.value << o["req.opcode"] | SnpType.SNP_CUR.value << o["req.snp_type"]
                | MetaField.NO_OP.value << o["req.meta_field"] | self._next_tag() << o["req.tag"]
                | (HDM_BASE + line) << o["req.addr"] | gate << o["gate"])

    # -- one burst ----------------------------------------------------------------------------
    async def play(self, *, rx=(), ri=(), m2s=(), frames: int = 0, ndr: int = 0, drs: int = 0,
                   what: str = "burst", drain: int = 24) -> Burst:
        """Play the words, wait until ``frames`` frames (out + upcall + drop), ``ndr`` NDRs and ``drs``
        DRSs more than before have left the device, then ``drain`` more cycles; returns the records."""
        d = self.dut
        t = self.tot
        # every input changes at a falling edge, so the rising edge that samples it is never in doubt
        await FallingEdge(d.clk)
        t.frames += frames
        t.ndr += ndr
        t.drs += drs
        d.want_frames.value = t.frames
        if self.cxl_type == 2:
            d.want_ndr.value, d.want_drs.value = t.ndr, t.drs
        for name, words in (("rx", rx), ("ri", ri), ("m2s", m2s)):
            if not words:
                continue
            if name not in self.sources:
                raise ValueError(f"{what}: a Type {self.cxl_type} harness has no {name} source")
            if len(words) > SRC_DEPTH:
                raise ValueError(f"{what}: {len(words)} {name} words in one burst, the harness holds {SRC_DEPTH}")
            path = self.dir / SOURCES[name][1]
            path.write_text("".join(f"{w:x}\n" for w in words))
            getattr(d, f"{name}_count").value = len(words)
            getattr(d, f"{name}_load").value = 1
        t0 = time.perf_counter()
        await FallingEdge(d.clk)                  # the loads were taken at the rising edge before
        start = int(d.cycle.value)
        for name in self.sources:
            getattr(d, f"{name}_load").value = 0
        # wait for done; a window of WATCHDOG cycles in which no stream moved means the DUT is stuck
        last = None
        while not int(d.done.value):
            await First(RisingEdge(d.done), Timer(WATCHDOG * CLOCK_NS, unit="ns"))
            if int(d.done.value):
                break
            now = self._progress()
            if now == last:
                raise StuckError(self._stuck(what, rx, ri, m2s))
            last = now
        end = int(d.cycle.value)
        await Timer(drain * CLOCK_NS, unit="ns")
        self.rtl_wall += time.perf_counter() - t0
        await FallingEdge(d.clk)
        d.flush_files.value = 1
        await FallingEdge(d.clk)
        d.flush_files.value = 0
        b = self._collect()
        b.start, b.cycles = start, end - start
        # every frame the device sent was expected (extra ones would be in the records too, but a burst
        # that expects none must see none); NDRs and DRSs are checked by the callers
        got = int(d.frames.value)
        if got != t.frames:
            self.errors.append(f"{what}: the device sent {got - (t.frames - frames)} frames, {frames} expected")
        t.frames = got
        if self.cxl_type == 1:
            return b
        t.ndr, t.drs = int(d.ndr.value), int(d.drs.value)
        if int(d.dram_oob.value) and not self._oob:
            self._oob = True
            self.errors.append(f"{what}: the device addressed DRAM beyond the table image")
        return b

    def _progress(self) -> tuple:
        d = self.dut
        names = ("rx_pos", "ri_pos", "m2s_pos", "frames", "ndr", "drs") if self.cxl_type == 2 else \
            ("rx_pos", "ri_pos", "frames")
        return tuple(int(getattr(d, n).value) for n in names)

    def _stuck(self, what, rx, ri, m2s) -> str:
        d = self.dut
        t = self.tot
        parts = [f"{what}: the device stopped: no stream moved in {WATCHDOG} cycles (cycle {int(d.cycle.value)})"]
        for name, words in (("rx", rx), ("reinject", ri), ("m2s", m2s)):
            if not words:
                continue
            pos = int(getattr(d, f"{'ri' if name == 'reinject' else name}_pos").value)
            if pos < len(words):
                parts.append(f"input stream {name}: {pos} of {len(words)} words accepted")
        outs = [("frames (out+upcall+drop)", t.frames)]
        if self.cxl_type == 2:
            outs += [("s2m_ndr", t.ndr), ("s2m_drs", t.drs)]
        for name, want in outs:
            key = {"s2m_ndr": "ndr", "s2m_drs": "drs"}.get(name, "frames")
            got = int(getattr(d, key).value)
            if got < want:
                parts.append(f"output stream {name}: {got} of {want}")
        return "; ".join(parts)

    def _lines(self, name):
        for line in self._files[name].read().split():
            v = int(line, 16)
            yield v & _MASK32, v >> 32

    def _collect(self) -> Burst:
        b = Burst()
        for name in ("out", "upcall"):
            o = _SINK_OFFS[name]
            d, k, la = o["beat.data"], o["beat.keep"], o["beat.last"]
            tag_off = o["out_port"] if name == "out" else o["reason"]
            dst = getattr(b, name)
            cur = self._partial[name]
            tmask = 0xFF if name == "out" else 0xF
            for cyc, v in self._lines(name):
                keep = (v >> k) & _KEEP_ALL
                n = keep.bit_count()
                last = v >> la & 1
                if keep != (1 << n) - 1 or not last and n != BEAT_BYTES:
                    self.errors.append(f"{name} beat at cycle {cyc}: keep {keep:#x} (must be all ones before the "
                                       f"last beat and a prefix on it)")
                chunk = ((v >> d) & ((1 << 8 * BEAT_BYTES) - 1)).to_bytes(BEAT_BYTES, "little")[:n]
                tag = (v >> tag_off) & tmask
                if cur is None:
                    cur = [cyc, tag, bytearray()]
                elif tag != cur[1]:
                    self.errors.append(f"{name} frame from cycle {cur[0]}: {'port' if name == 'out' else 'reason'} "
                                       f"changes from {cur[1]} to {tag} at cycle {cyc}")
                cur[2] += chunk
                if last:
                    dst.append((cur[0], cur[1], bytes(cur[2])))
                    cur = None
            self._partial[name] = cur
        o = _SINK_OFFS["drop"]
        b.drop = [(c, v >> o["reason"] & 3, v >> o["in_port"] & 0xFF) for c, v in self._lines("drop")]
        b.vis = [(c, v) for c, v in self._lines("vis")]
        if self.cxl_type == 1:
            return b
        o = _SINK_OFFS["ndr"]
        b.ndr = [(c, v >> o["opcode"] & 7, v >> o["tag"] & 0xFFFF) for c, v in self._lines("ndr")]
        o = _SINK_OFFS["drs"]
        b.drs = []
        for c, v in self._lines("drs"):
            if v >> o["opcode"] & 7 != 0 or v >> o["poison"] & 1:
                self.errors.append(f"DRS at cycle {c}: opcode {v >> o['opcode'] & 7}, poison {v >> o['poison'] & 1} "
                                   "(every read here is of a mapped, clean line: MemData, no poison)")
            b.drs.append((c, v >> o["tag"] & 0xFFFF, v >> o["data"] & _LINE_MASK))
        return b

    async def write_lines(self, writes, *, what="table writes") -> None:
        """MemWr every ``(line, bytes)``; waits for every Cmp."""
        for s in range(0, len(writes), CHUNK):
            words, tags = [], []
            for line, raw in writes[s:s + CHUNK]:
                words.append(self.write_word(line, raw))
                tags.append(self.tag)
            b = await self.play(m2s=words, ndr=len(words), what=what)
            self.check_ndr(what, b, tags)
            self.check_no_frames(what, b)

    def check_ndr(self, what, b: Burst, tags) -> None:
        """The burst's NDRs are exactly one Cmp per write, with the writes' tags, and each write was
        made visible to the datapath exactly once (``wr_visible``)."""
        if len(b.vis) != len(tags):
            self.errors.append(f"{what}: {len(b.vis)} write-visible pulses for {len(tags)} writes")
        bad = [r for r in b.ndr if r[1] != 0]
        if bad:
            self.errors.append(f"{what}: {len(bad)} NDRs that are not Cmp: {bad[:3]}")
        if sorted(r[2] for r in b.ndr) != sorted(tags):
            self.errors.append(f"{what}: NDR tags {sorted(r[2] for r in b.ndr)[:8]}.. are not the "
                               f"{len(tags)} writes' tags {sorted(tags)[:8]}..")

    def check_no_frames(self, what, b: Burst) -> None:
        if b.out or b.upcall or b.drop or any(self._partial.values()):
            self.errors.append(f"{what}: frames came out while none was sent: {len(b.out)} out, "
                               f"{len(b.upcall)} upcalls, {len(b.drop)} drops")

    async def read_lines(self, lines, what="reads") -> list[bytes]:
        """MemRd each line (No-Op, SnpCur: the host caches nothing); the data in request order."""
        if len(lines) > CHUNK:
            out = []
            for s in range(0, len(lines), CHUNK):
                out += await self.read_lines(lines[s:s + CHUNK], what)
            return out
        words, tags = [], []
        for line in lines:
            words.append(self.read_word(line))
            tags.append(self.tag)
        b = await self.play(m2s=words, drs=len(words), ndr=0, what=what)
        self.check_no_frames(what, b)
        if len(b.drs) != len(words):
            self.errors.append(f"{what}: {len(b.drs)} DRS for {len(words)} reads")
        tagset = set(tags)
        if any(r[2] not in tagset for r in b.ndr):
            self.errors.append(f"{what}: an NDR whose tag no read carried")
        by_tag = {}
        for _c, tag, dat in b.drs:
            by_tag.setdefault(tag, []).append(dat)
        out = []
        for tag, line in zip(tags, lines, strict=True):
            if not by_tag.get(tag):
                raise AssertionError(f"{what}: no data for the read of line {line} (tag {tag})")
            out.append(by_tag[tag].pop(0).to_bytes(LINE_BYTES, "little"))
        return out


    async def install_and_play(self, writes, ri, rx, frames: int, what: str) -> Burst:
        """One slow-path phase: MemWr every ``(line, bytes)`` of ``writes`` and play the reinjected
        words ``ri`` gated on the last write's Cmp (and the received words ``rx``, whose gates the
        caller set) in one burst; checks the NDRs; returns the burst."""
        gate = self.tot.ndr + len(writes)
        ri = [wd | gate << _RI["gate"] for wd in ri]
        words, tags = [], []
        for line, raw in writes:
            words.append(self.write_word(line, raw))
            tags.append(self.tag)
        b = await self.play(m2s=words, ri=ri, rx=rx, ndr=len(words), frames=frames, what=what)
        self.check_ndr(what, b, tags)
        return b

    def stats(self) -> dict:
        """The device's 32-bit counters by block."""
        from cxlnic.hdl.cxl_mem import CXL_MEM_STATS
        d = self.dut
        return {"datapath": _unpack32(int(d.stats.value), STATS),
                "cxl_mem": _unpack32(int(d.mem_stats.value), CXL_MEM_STATS)}


def _unpack32(v: int, names) -> dict:
    return {n: v >> (32 * k) & _MASK32 for k, n in enumerate(names)}


class SystemTB1(SystemTB):
    """Drives a Type 1 :class:`~cxlnic.tb.harness.SystemHarness`: the tables are in host memory,
    held by a :class:`~cxlnic.tb.cxl_home.CxlHomeAgent` that answers the device's CXL.cache
    requests every cycle (random per-message delays, reordering, snoops of lines the device may
    hold).  Host writes are the home agent's (snoop-invalidate the device's copy, then write):
    the testbench issues a phase's writes while no frame is in flight, waits until they have
    all completed at the host and the device's MirrorSync is idle, then plays the frames, so
    frames are never gated in hardware.  Host reads (counters, table read-back) are the home
    agent's reads, which snoop back lines the device owns; counter reads flush the device's
    counter deltas first."""

    cxl_type = 1

    def __init__(self, dut, cfg: NicConfig, *, seed: int = 1, **kw):
        super().__init__(dut, cfg, **kw)
        self.seed = seed
        self.home = None
        self.host_writes = 0
        self.host_reads = 0
        self._msgs = 0

    async def reset(self) -> None:
        from cxlnic.tb.cxl_home import CxlHomeAgent
        self.home = CxlHomeAgent(self.dut, self.cfg.image_lines, base=TYPE1_BUILD["host_base"], seed=self.seed)
        await super().reset()
        await self._until(lambda: int(self.dut.mirrors_loaded.value), "the mirror load after reset")

    async def _until(self, cond, what: str, futs=()) -> None:
        """Run the clock until ``cond()`` holds (checked every 8 cycles); a window of WATCHDOG
        cycles in which the home agent saw no message means the device is stuck."""
        d = self.dut
        log = self.home.core.log                     # every message the home agent exchanged
        last, since = self._msgs + len(log), int(d.cycle.value)
        while not cond():
            await Timer(8 * CLOCK_NS, unit="ns")
            now = int(d.cycle.value)
            if len(log) > 100_000:                   # a long run keeps the count, not the messages
                self._msgs += len(log)
                log.clear()
            n = self._msgs + len(log)
            if n != last:
                last, since = n, now
            elif now - since > WATCHDOG:
                left = sum(not f.done for f in futs)
                raise StuckError(f"{what}: the device stopped: no CXL.cache message in {WATCHDOG} cycles "
                                 f"(cycle {now}; {left} host accesses pending, sync_busy "
                                 f"{int(d.sync_busy.value)}, mirrors_loaded {int(d.mirrors_loaded.value)})")

    async def write_lines(self, writes, *, what="table writes") -> None:
        """Host-write every ``(line, bytes)`` (all issued at once: no frame is in flight), then wait
        until every write has completed and MirrorSync has applied what the snoops reported."""
        t0 = time.perf_counter()
        futs = [self.home.core.host_write(line, raw) for line, raw in writes]
        self.host_writes += len(futs)
        await self._until(lambda: all(f.done for f in futs), what, futs)
        await Timer(4 * CLOCK_NS, unit="ns")         # the last snoop's inval reaches MirrorSync
        await self._until(lambda: not int(self.dut.sync_busy.value), f"{what} (mirror refetches)")
        self.rtl_wall += time.perf_counter() - t0

    async def install_and_play(self, writes, ri, rx, frames: int, what: str) -> Burst:
        await self.write_lines(writes, what=what)
        return await self.play(ri=ri, rx=rx, frames=frames, what=what)

    async def read_lines(self, lines, what="reads") -> list[bytes]:
        """Host reads (snooping back what the device owns); counter lines after a flush."""
        t0 = time.perf_counter()
        c0 = self.cfg.regions()["counters"][0]
        if any(x >= c0 for x in lines):
            await self.flush(what)
        futs = [self.home.core.host_read(line) for line in lines]
        self.host_reads += len(futs)
        await self._until(lambda: all(f.done for f in futs), what, futs)
        self.rtl_wall += time.perf_counter() - t0
        return [f.value for f in futs]

    async def flush(self, what: str) -> None:
        d = self.dut
        await FallingEdge(d.clk)
        d.nic_flush.value = 1
        await FallingEdge(d.clk)
        d.nic_flush.value = 0
        seen = [False]

        async def watch():
            while True:
                await RisingEdge(d.clk)
                if int(d.flush_done.value):
                    seen[0] = True
                    return
        import cocotb
        task = cocotb.start_soon(watch())
        await self._until(lambda: seen[0], f"{what}: counter flush")
        task.cancel()

    def stats(self) -> dict:
        from cxlnic.hdl.smartnic import CacheStats
        d = self.dut
        return {"datapath": _unpack32(int(d.stats.value), STATS),
                "cxl_cache": _unpack32(int(d.cache_stats.value), [n for n, _f in CacheStats]),
                "home": dict(self.home.core.stats), "host_writes": self.host_writes, "host_reads": self.host_reads}


# ------------------------------------------------------------------------------------------- the run
def _fid(key) -> int:
    return FKEY.pack(key.flow)


class Scoreboard:
    """Expected vs device records of each stream, in order; mismatches logged and counted."""

    def __init__(self, log, max_log: int = 10):
        self.log, self.max_log = log, max_log
        self.mismatches = 0
        self.compared = {"out": 0, "upcall": 0, "drop": 0, "counter_lines": 0, "table_lines": 0}

    def _bad(self, what, msg):
        self.mismatches += 1
        if self.mismatches <= self.max_log:
            self.log.error("MISMATCH %s: %s", what, msg)

    def frames(self, what, exp: list[Expect], b: Burst) -> None:
        want = {"out": [(e.arg, e.frame) for e in exp if e.stream == "out"],
                "upcall": [(e.arg, e.frame) for e in exp if e.stream == "upcall"],
                "drop": [(e.arg,) for e in exp if e.stream == "drop"]}
        got = {"out": [(p, f) for _c, p, f in b.out], "upcall": [(r, f) for _c, r, f in b.upcall],
               "drop": [(r,) for _c, r, _p in b.drop]}
        for s in want:
            self.compared[s] += len(want[s])
            for n, (g, w) in enumerate(zip(got[s], want[s], strict=False)):
                if g != w:
                    self._bad(f"{what} {s} #{n}", f"rtl {_short(g)} model {_short(w)}")
            if len(got[s]) != len(want[s]):
                self._bad(f"{what} {s}", f"rtl produced {len(got[s])}, model {len(want[s])}")

    def lines(self, what, kind, lines, got, want) -> None:
        self.compared[kind] += len(lines)
        for line, g, w in zip(lines, got, want, strict=True):
            if g != w:
                self._bad(f"{what} line {line}", f"rtl {g.hex()[:64]}.. model {w.hex()[:64]}..")


def _short(x):
    return tuple(v.hex()[:40] + f"..({len(v)}B)" if isinstance(v, bytes) else v for v in x)


def _expect(sp: SlowPath, frame: bytes, in_port: int, cap: int):
    """The fast path's answer (counted on the model's counters) and the model's decision or upcall."""
    d = sp.fast_path(frame, in_port)
    if isinstance(d, Upcall):
        return Expect("upcall", int(UPCALL_REASONS[d.reason]), bytes(frame), "upcall"), d
    if d.path == DPath.EXCEPTION:
        return Expect("upcall", int(UpcallReason.EXCEPTION), bytes(frame[:cap]), "exception"), d
    return _dest(d, in_port), d


def percentiles(xs) -> dict:
    """min / p50 / p90 / p99 / max / mean of ``xs`` ({"n": 0} when empty)."""
    if not xs:
        return {"n": 0}
    xs = sorted(xs)

    def q(p):
        return xs[min(len(xs) - 1, int(p * len(xs)))]
    return {"n": len(xs), "min": xs[0], "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": xs[-1],
            "mean": round(statistics.fmean(xs), 1)}


def _epochs(trace, burst: int, span: float):
    """``(index of first packet, packets)`` of each epoch: at most ``burst`` packets and
    ``SRC_DEPTH // 2`` beats, all within ``span`` seconds of the epoch's first (the host's slow path
    answers every ``span`` at most)."""
    start = 0
    while start < len(trace):
        t_end = trace[start].time + span
        end = start + 1
        beats = -(-len(trace[start].frame) // BEAT_BYTES)
        while end < len(trace) and end - start < burst and trace[end].time < t_end:
            beats += max(1, -(-len(trace[end].frame) // BEAT_BYTES))
            if beats > SRC_DEPTH // 2:
                break
            end += 1
        yield start, trace[start:end]
        start = end


async def run_system(dut, *, scenario: str, packets: int, seed: int, burst: int = 1024, epoch_ms: float = 2.0,
                     out_stall: int = 0,
                     pcap: str | None = None, rules: str | None = None, out_dir: str | None = None,
                     progress: bool = False, age_interval: float = 5.0, tenants: int = 4, cxl_type: int = 2) -> dict:
    """One whole system run on a Type ``cxl_type`` device; returns the report (also written to
    ``out_dir``/report.json)."""
    from cxlnic.model.rulelang import load_rules, parse_rules
    from cxlnic.model.scenario import Packet, generate, read_pcap, write_pcap

    log = dut._log
    t_wall = time.perf_counter()
    cfg = system_config()
    cap = int(os.environ["CXLNIC_CAP_BYTES"])
    if pcap:
        rule_list = load_rules(Path(rules))
        trace = sorted(read_pcap(Path(pcap)), key=lambda p: p.time)     # as cxlnic sim checked it (stable)
        source = f"{pcap} + {rules}"
    else:
        base = {"storm": "reactive", "nearfull": "reactive"}.get(scenario, scenario)
        sc = generate(base, packets=packets, seed=seed, tenants=tenants)
        rule_list, trace = parse_rules(sc.rules_text, "scenario"), sc.packets
        source = f"scenario {scenario!r} ({packets} packets, seed {seed}, {tenants} tenants)"
    if cxl_type == 1 and scenario in TYPE2_ONLY:
        raise ValueError(f"scenario {scenario!r} needs Type 2 (its frames are gated on CXL.mem completions "
                         f"while writes stream); Type 1 runs {', '.join(TYPE1_SCENARIOS)}")
    rng = random.Random(seed)
    if cxl_type == 1:
        tb = SystemTB1(dut, cfg, cap_beats=cap // BEAT_BYTES, out_stall=out_stall, seed=seed)
    else:
        tb = SystemTB(dut, cfg, cap_beats=cap // BEAT_BYTES, out_stall=out_stall)
    await tb.reset()
    mem = QueuedMemory(cfg.image_lines)
    mem.apply(format_image(cfg))
    sp = SlowPath(mem, cfg)
    sp.install_rules(rule_list)
    sb = Scoreboard(log)
    rep = {"scenario": scenario, "cxl_type": cxl_type, "input": source, "seed": seed, "packets": len(trace),
           "burst": burst, "epoch_ms": epoch_ms,
           "config": {"n_buckets": cfg.n_buckets, "n_stash": cfg.n_stash, "cam_entries": cfg.cam_entries,
                      "n_rules": cfg.n_rules, "counters": sp.counters.n, **SYSTEM_BUILD,
                      **({"dram_latency": DRAM_LATENCY} if cxl_type == 2 else TYPE1_BUILD)}}
    paths = {"flow": 0, "cam": 0, "upcall": 0, "exception": 0}
    extra_paths = dict(paths)               # storm: frames of present flows and gated copies
    verdicts = {"out": 0, "upcall": 0, "drop": 0}
    slow = {"handled": 0, "reinjected": 0, "host_drops": 0, "rehit": 0, "installs": 0, "install_failures": 0,
            "storm_inserts": 0, "gated_copies": 0, "gated_fast": 0, "hot_frames": 0}
    writes_total = 0
    rx_cycles = rx_frames = rx_beats = epochs = 0
    outputs = []
    lat_install: list[int] = []
    pending_first: dict[int, int] = {}      # flow id -> cycle of the upcall that installed it

    # 1. the image: format, hash key, rules and actions, all by CXL writes
    w = mem.take()
    await tb.write_lines(w, what="image load")
    writes_total += len(w)
    log.info("image: %d lines written through %s", len(w), "CXL.mem" if cxl_type == 2 else "host memory")

    fill_failures = 0
    if scenario == "nearfull":          # fill the flow table with unrelated flows first
        n = 0
        while sp._install(_fresh_entry(sp, rng), "bulk") is not None:     # until the first insert fails
            n += 1
        fill_failures = sp.stats.install_failures
        w = mem.take()
        await tb.write_lines(w, what="near-full fill")
        writes_total += len(w)
        slow["storm_inserts"] += n
        log.info("near full: %d unrelated flows until an insert failed (load %.3f), %d line writes", n,
                 sp.flows.load, len(w))

    next_age = (trace[0].time if trace else 0.0) + age_interval
    n_done = 0
    last_print = 0.0
    prev_hot: list = []
    for start, chunk in _epochs(trace, burst, epoch_ms / 1000):
        # aging on the scenario clock (counters checked through CXL.mem first: the sweep reads them)
        if age_interval and chunk[0].time >= next_age:
            await _check_counters(tb, sp, sb, f"before aging at t={next_age:.1f}s", rng, sample=16, max_hot=128)
            while chunk[0].time >= next_age:
                sp.age(next_age)
                next_age += age_interval
            w = mem.take()
            if w:
                await tb.write_lines(w, what="aging deletes")
                writes_total += len(w)
        # 1. traffic
        exp, decs, words = [], [], []
        for p in chunk:
            e, d = _expect(sp, p.frame, p.in_port, cap)
            exp.append(e)
            decs.append(d)
            words += tb.rx_words(p.frame, p.in_port)
        b = await tb.play(rx=words, frames=len(chunk), what=f"frames {start}..{start + len(chunk) - 1}")
        sb.frames(f"frames from {start}", exp, b)
        rx_cycles += b.cycles
        rx_frames += len(chunk)
        rx_beats += len(words)
        epochs += 1
        _tally(exp, paths, verdicts)
        outputs += [Packet(p.time, port, f) for p, (_c, port, f) in zip(
            [p for p, e in zip(chunk, exp, strict=True) if e.stream == "out"], b.out, strict=False)]
        # first fast-path hits of freshly installed flows
        out_cycles = iter(b.out)
        hot = []
        for p, e, d in zip(chunk, exp, decs, strict=True):
            c = next(out_cycles, None) if e.stream == "out" else None
            if not isinstance(d, Upcall) and d.path == DPath.FLOW:
                fid = _fid(d.key)
                if fid in pending_first and c is not None:
                    lat_install.append(c[0] - pending_first.pop(fid))
                ent = sp.flows.read_entry(d.flow)
                if ent.conn_state == 0:
                    hot.append((p, fid))
        # 2. the slow path: upcalls (not exceptions, not to-host verdicts) in order
        up_cycles = iter(b.upcall)
        ri_words, ri_exp, gated = [], [], []
        handled_fids = set()
        for p, e, d in zip(chunk, exp, decs, strict=True):
            c = next(up_cycles, None) if e.stream == "upcall" else None
            if not isinstance(d, Upcall):
                continue
            now = p.time
            slow["handled"] += 1
            d2 = sp.fast_path(p.frame, p.in_port)              # again: an earlier upcall may have installed it
            if isinstance(d2, Upcall):
                d2 = sp._host(d2.key, p.frame, d2.hit, d2.reason, int(now))
                action = None if d2.rule is None else sp.rules.action_index_of(d2.rule)
            else:
                slow["rehit"] += 1
                action = (sp.flows.read_entry(d2.flow).action if d2.path == DPath.FLOW
                          else sp.rules.action_index_of(d2.rule))
            fid = _fid(d2.key)
            handled_fids.add(fid)
            if d2.installed:
                slow["installs"] += d2.installed
                if c is not None:
                    pending_first.setdefault(fid, c[0])
                if scenario == "storm" and sp.flows.lookup_entry(d2.key.flow) is not None:
                    gated.append(p)
            if action is None or d2.verdict == Verdict.DROP and d2.drop_reason == "no_match":
                slow["host_drops"] += 1
                continue
            ri_words += tb.reinject_words(p.frame, action, d2.counter)
            ri_exp.append(_dest(d2, 0))
        slow["install_failures"] = sp.stats.install_failures - fill_failures
        writes = mem.take()
        n_w = len(writes)
        extra_rx, extra_exp = [], []
        if scenario == "storm":
            # bulk inserts of unrelated flows behind the slow path's writes, frames of flows present
            # before this phase (none may miss) and gated copies of the newly installed flows
            k = 0
            while k < 64 and sp.flows.load < 0.85 and sp._install(_fresh_entry(sp, rng), "bulk") is not None:
                k += 1
            slow["storm_inserts"] += k
            more = mem.take()
            writes += more
            hot_now = [(p, f) for p, f in prev_hot if f not in handled_fids][:256]
            for p, _f in hot_now:
                extra_rx += tb.rx_words(p.frame, p.in_port)
            slow["hot_frames"] += len(hot_now)
            g = tb.tot.ndr + n_w            # the slow path's writes all complete before a copy enters
            for p in gated:
                extra_rx += tb.rx_words(p.frame, p.in_port, gate=g)
            slow["gated_copies"] += len(gated)
            for n, p in enumerate([q for q, _f in hot_now] + gated):   # every write of the phase applied
                e, _d = _expect(sp, p.frame, p.in_port, cap)
                extra_exp.append(e)
                if n >= len(hot_now):
                    slow["gated_fast"] += e.path == "flow"
        if writes or ri_words or extra_rx:
            b2 = await tb.install_and_play(writes, ri_words, extra_rx, len(ri_exp) + len(extra_exp),
                                           f"slow path after frame {start}")
            writes_total += len(writes)
            slow["reinjected"] += len(ri_exp)
            rx_exp = extra_exp
            # reinjected and received frames interleave on the outputs: split them by the model's order
            _compare_mixed(sb, f"slow path after {start}", ri_exp, rx_exp, b2)
            _tally(ri_exp, None, verdicts)
            _tally(rx_exp, extra_paths, verdicts)
        prev_hot = hot
        n_done += len(chunk)
        if progress and (time.perf_counter() - last_print > 2 or n_done == len(trace)):
            last_print = time.perf_counter()
            el = last_print - t_wall
            print(f"\rcxlnic sim: {n_done}/{len(trace)} packets ({100 * n_done / len(trace):.0f}%), "
                  f"{n_done / el:,.0f} packets/s, {sb.mismatches} mismatches", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)

    # 3. the end: every counter line and every table line through CXL.mem
    n_ctr = await _check_counters(tb, sp, sb, "end of run", rng, sample=(sp.counters.n + 3) // 4)
    # nothing more comes out once the run is over
    b = await tb.play(what="end of run (quiet)", drain=2000)
    tb.check_no_frames("end of run", b)
    for e in tb.errors:
        sb._bad("device protocol", e)
    end = sp.geom.counters_off
    lines = list(range(end))
    got = await tb.read_lines(lines, what="table read-back")
    sb.lines("table read-back", "table_lines", lines, got, [mem.read_line(x) for x in lines])
    st = tb.stats()
    if cxl_type == 1:
        for v in tb.home.core.violations:
            sb._bad("CXL.cache protocol (home agent)", v)
    for k in ("flow", "cam"):
        if st["datapath"][k] != paths[k] + extra_paths[k]:
            sb._bad("path counters", f"rtl {k} {st['datapath'][k]}, model {paths[k]} (trace) + "
                    f"{extra_paths[k]} (storm frames)")
    wall = time.perf_counter() - t_wall
    cyc = int(dut.cycle.value)
    rep.update({
        "mismatches": sb.mismatches, "compared": sb.compared, "counters_verified": n_ctr,
        "paths": paths, "storm_frame_paths": extra_paths, "verdicts": verdicts, "slow_path": slow,
        "flows": {"installed": dict(sp.stats.flows_installed), "deleted": dict(sp.stats.flows_deleted),
                  "live": len(list(sp.flows.entries())),
                  "load": round(sp.flows.load, 4)},
        "cxl_writes": writes_total, "bisnp": int(dut.bisnp.value) if cxl_type == 2 else None,
        "install_to_fast_path_cycles": percentiles(lat_install), "install_to_fast_path_samples": lat_install,
        "packets_per_cycle": round(rx_frames / rx_cycles, 4) if rx_cycles else None,
        "rx_beats_per_cycle": round(rx_beats / rx_cycles, 4) if rx_cycles else None, "epochs": epochs,
        "cycles": cyc, "wall_s": round(wall, 2), "packets_per_wall_s": round(len(trace) / wall, 1),
        "cycles_per_wall_s": round(cyc / wall, 1), "rtl_stats": st,
        "wall_split_s": {"simulation": round(tb.rtl_wall, 2), "python": round(wall - tb.rtl_wall, 2)},
    })
    if out_dir:
        od = Path(out_dir)
        od.mkdir(parents=True, exist_ok=True)
        (od / "report.json").write_text(json.dumps(rep, indent=1) + "\n")
        write_pcap(od / "out.pcap", outputs)
    tb.close()
    return rep


def _tally(exp, paths, verdicts) -> None:
    for e in exp:
        if paths is not None:
            paths[e.path] += 1
        verdicts[e.stream] += 1


def _compare_mixed(sb: Scoreboard, what, ri_exp, rx_exp, b: Burst) -> None:
    """Reinjected and received frames of one phase share the output streams and their relative order
    depends on timing: each stream's device records must be an interleaving of the two expected
    sequences (each in its own order).  Checked exactly (the same frame may be in both sequences, e.g. a
    reinjected frame and its gated copy): the set of positions reachable in the reinjected sequence is
    carried record by record."""
    for stream, recs in (("out", [(p, f) for _c, p, f in b.out]), ("upcall", [(r, f) for _c, r, f in b.upcall]),
                         ("drop", [(r,) for _c, r, _p in b.drop])):
        qa, qb = ([(e.arg, e.frame) if stream != "drop" else (e.arg,) for e in ex if e.stream == stream]
                  for ex in (ri_exp, rx_exp))
        sb.compared[stream] += len(qa) + len(qb)
        reach = {0}                                   # positions i in qa; the position in qb is k - i
        for k, g in enumerate(recs):
            nxt = {i + 1 for i in reach if i < len(qa) and qa[i] == g}
            nxt |= {i for i in reach if 0 <= k - i < len(qb) and qb[k - i] == g}
            if not nxt:
                heads = [f"next reinjected {_short(qa[i]) if i < len(qa) else None}, next received "
                         f"{_short(qb[k - i]) if k - i < len(qb) else None}" for i in sorted(reach)[:2]]
                sb._bad(f"{what} {stream} #{k}", f"rtl {_short(g)} fits no interleaving of the reinjected and "
                        f"received frames ({'; '.join(heads)})")
                break
            reach = nxt
        else:
            if len(recs) != len(qa) + len(qb):
                sb._bad(f"{what} {stream}", f"rtl produced {len(recs)}, model {len(qa)} reinjected + "
                        f"{len(qb)} received")


async def _check_counters(tb: SystemTB, sp: SlowPath, sb: Scoreboard, what: str, rng, sample: int = 64,
                          max_hot: int | None = None) -> int:
    """Read through CXL.mem the counter lines the model holds nonzero (all, or ``max_hot`` of them
    picked at random), plus ``sample`` lines picked at random (which must read zero unless the model
    says otherwise); returns the counters compared.  (A counter line is assembled from four exact
    counter reads, each a DRAM round trip: every line at every aging sweep would dominate the run.)"""
    g = sp.geom
    n_lines = (sp.counters.n + 3) // 4
    hot = sorted({i // 4 for i in range(sp.counters.n) if sp.counters.packets[i]})
    if max_hot is not None and len(hot) > max_hot:
        hot = rng.sample(hot, max_hot)
    ks = sorted(set(hot) | set(rng.sample(range(n_lines), min(sample, n_lines))))
    lines = [g.counters_off + k for k in ks]
    got = await tb.read_lines(lines, what=f"counter read ({what})")
    sb.lines(f"counters {what}", "counter_lines", lines, got, [counter_line(sp, k) for k in ks])
    return 4 * len(ks)


def _fresh_entry(sp: SlowPath, rng):
    """A UDP flow no frame of the trace belongs to, pointing at rule 0's action."""
    k = FKEY.new(tenant=rng.getrandbits(24), in_port=rng.getrandbits(8), eth_type=0x0800, ip_proto=17,
                 src_port=rng.getrandbits(16), dst_port=rng.getrandbits(16),
                 src_ip=0xFFFF << 32 | rng.getrandbits(32), dst_ip=0xFFFF << 32 | rng.getrandbits(32))
    return FENTRY.new(key=k, conn_state=0, action=sp.rules.action_index_of(0))
