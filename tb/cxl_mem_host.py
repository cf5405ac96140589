"""Python host side of CXL.mem for the testbenches: a host master, a backend model, a TableMemory adapter.

Everything here is clocked by :class:`CycleLoop`, which calls each agent's
``drive(io)`` before and ``sample(io)`` after the combinational settle of
every cycle.  ``io`` is a :class:`CocotbIO` (Verilator) or an
:class:`AmaranthIO` (Amaranth's simulator), so the same host and backend
run under both; the host's requests complete through callbacks, and the
``async`` methods (``read_line``, ``write_line``, ...) wrap them for cocotb.

* :class:`CxlMemHost` — the host master: drives M2S Req/RwD/BIRsp, collects
  S2M NDR/DRS/BISnp (tags allocated from a pool, or given; duplicates are
  matched oldest-first), a per-hop delay in cycles on every channel, random
  ``ready`` on S2M, a MESI-style host cache per line (I/S/E/M), and the
  HDM-DB host rules: a BISnp is answered with BIRsp-I after dirty data was
  written back (MemWr, Cmp awaited); a BISnp to a line with a request of the
  host still pending first sends BIConflict with that request's Tag and waits
  for BI-ConflictAck (early conflict: the ack overtakes the Cmp, the snoop is
  answered from the current state and a completion arriving later installs
  the line again; late: the Cmp came first, the snoop is answered once the
  request has completed — its data may still be on the way).
* :class:`BackendModel` — Python memory behind ``mw``/``mw_done`` and
  ``mr``/``mr_data`` with random latency and stalls, as adversarial as the
  backend contract allows (a write may land before an earlier read samples).
* :class:`CxlTableMemory` — a :class:`~cxlnic.model.memory.TableMemory` over the host.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from amaranth.lib import data

from cxlnic.hdl.cxl_mem import (
    S2MDRS,
    S2MNDR,
    BIRspOpcode,
    M2SBIRsp,
    M2SReq,
    M2SRwD,
    MetaField,
    MetaValue,
    NdrOpcode,
    ReqOpcode,
    RwdOpcode,
    S2MBISnp,
    SnpType,
)
from cxlnic.hdl.layouts import LINE_BYTES
from cxlnic.model.codec import codec
from cxlnic.model.memory import TableMemory

__all__ = ["CycleLoop", "CocotbIO", "AmaranthIO", "CxlMemHost", "Request", "BackendModel", "DeviceWriter",
           "CxlTableMemory", "ShadowChecker", "pack", "unpack", "merge_line", "ALL_ONES", "SPEED_WORKLOAD",
           "random_traffic", "host_agents"]

ALL_ONES = (1 << (8 * LINE_BYTES)) - 1
FULL_BE = (1 << LINE_BYTES) - 1


def pack(layout, **fields) -> int:
    """Pack a message; enum members are accepted for enum fields."""
    c = codec(layout)
    return c.pack(c.new(**{k: (v.value if hasattr(v, "value") else v) for k, v in fields.items()}))


def unpack(layout, value: int):
    return codec(layout).unpack(value)


def merge_line(old: int, new: int, be: int) -> int:
    """``old`` with the bytes of ``new`` whose byte-enable bit is set."""
    mask = 0
    for b in range(LINE_BYTES):
        if be >> b & 1:
            mask |= 0xFF << (8 * b)
    return (old & ~mask) | (new & mask)


# ------------------------------------------------------------------------------------------------ I/O

class CocotbIO:
    """Port access for a cocotb DUT (flattened Verilog names, e.g. ``m2s_req__valid``)."""

    def __init__(self, dut):
        self.dut = dut
        self._h = {}

    def _handle(self, name):
        h = self._h.get(name)
        if h is None:
            h = self._h[name] = getattr(self.dut, name)
        return h

    def set(self, name, value):
        self._handle(name).value = int(value)

    def get(self, name) -> int:
        v = self._handle(name).value
        return v.to_unsigned() if hasattr(v, "to_unsigned") else int(v)     # LogicArray / Logic


class AmaranthIO:
    """Port access for a component in Amaranth's simulator, by the same flattened names."""

    def __init__(self, dut, ctx=None):
        self.dut, self.ctx = dut, ctx
        self._h = {}

    def _handle(self, name):
        h = self._h.get(name)
        if h is None:
            parts = name.split("__")
            h = getattr(self.dut, parts[0])
            for p in parts[1:]:
                h = getattr(h, p)
            if not hasattr(h, "shape") or isinstance(h, data.View):
                h = h.as_value()
            self._h[name] = h
        return h

    def set(self, name, value):
        self.ctx.set(self._handle(name), int(value))

    def get(self, name) -> int:
        return int(self.ctx.get(self._handle(name)))


class CycleLoop:
    """Runs ``drive`` → settle → ``sample`` of every agent once per clock cycle."""

    def __init__(self, io, agents=()):
        self.io = io
        self.agents = list(agents)
        self.cycle = 0

    def add(self, agent):
        self.agents.append(agent)
        return agent

    def step_drive(self):
        for a in self.agents:
            a.drive(self.io, self.cycle)

    def step_sample(self):
        for a in self.agents:
            a.sample(self.io, self.cycle)
        self.cycle += 1

    async def run_cocotb(self, clk):
        """Forever, under cocotb (start with ``cocotb.start_soon``)."""
        from cocotb.triggers import ReadOnly, RisingEdge
        while True:
            self.step_drive()
            await ReadOnly()
            self.step_sample()
            await RisingEdge(clk)

    async def run_amaranth(self, ctx, until, max_cycles=200_000):
        """Under Amaranth's simulator, until ``until()`` is true; raises when stuck."""
        self.io.ctx = ctx
        for _ in range(max_cycles):
            if until():
                return
            self.step_drive()
            self.step_sample()
            await ctx.tick()
        raise AssertionError(f"not done after {max_cycles} cycles")


def _delay(rng, d):
    if isinstance(d, tuple):
        return rng.randint(*d)
    return d


class _Channel:
    """One valid/ready source: queued messages leave in order once their due cycle has come."""

    def __init__(self, name):
        self.name = name
        self.q = deque()           # (due cycle, packed payload, on_accept)
        self.presenting = False

    def drive(self, io, cyc):
        self.presenting = bool(self.q) and self.q[0][0] <= cyc
        io.set(f"{self.name}__valid", self.presenting)
        if self.presenting:
            io.set(f"{self.name}__payload", self.q[0][1])

    def sample(self, io, cyc):
        if self.presenting and io.get(f"{self.name}__ready"):
            _, _, cb = self.q.popleft()
            if cb:
                cb(cyc)
            return True
        return False


# ------------------------------------------------------------------------------------------------ host

@dataclass(eq=False)
class Request:
    """One host request and what came back for it."""
    kind: str                   # "req" or "rwd"
    opcode: int
    addr: int                   # HPA line
    tag: int
    meta_field: int = MetaField.NO_OP.value
    meta_value: int = 0
    snp: int = SnpType.NO_OP.value
    data: int = 0
    be: int = FULL_BE
    poison: int = 0
    ld_id: int = 0
    expect_ndr: bool = True
    expect_drs: bool = False
    sent_cycle: int = -1
    accept_cycle: int = -1
    done_cycle: int = -1
    ndr: object = None
    drs: object = None
    done: bool = False
    callbacks: list = field(default_factory=list)
    own_tag: bool = False       # the tag came from the pool
    what: str = ""

    @property
    def rdata(self) -> int | None:
        return None if self.drs is None else self.drs.data

    async def wait(self):
        """(cocotb) until complete; returns self."""
        if not self.done:
            from cocotb.triggers import Event
            ev = Event()
            self.callbacks.append(lambda r: ev.set())
            await ev.wait()
        return self


class _Line:
    __slots__ = ("state", "data")

    def __init__(self):
        self.state = "I"
        self.data = None


class CxlMemHost:
    """The CXL.mem host master (see the module docstring).

    ``delay`` is the per-hop delay in cycles (an int or an inclusive range
    drawn per message), applied to every message in both directions;
    ``s2m_ready`` the probability that an S2M channel is ready in a cycle.
    ``on_accept(req, cycle)`` is called when the DUT accepts a request (the
    point in device order a checker uses); ``on_complete(req)`` when it
    completes.  ``hdm`` = (base, size) in lines tells the host which replies
    to expect (a read outside HDM gets only MemData-NXM).
    """

    def __init__(self, *, rng=None, delay=0, s2m_ready=1.0, hdm=(0, 1 << 46), tag_bits=16):
        self.rng = rng or random.Random(0)
        self.delay, self.s2m_ready = delay, s2m_ready
        self.hdm = hdm
        self.req_ch, self.rwd_ch, self.birsp_ch = _Channel("m2s_req"), _Channel("m2s_rwd"), _Channel("m2s_birsp")
        self.free_tags = deque(range(1 << tag_bits))
        self.pending: dict[int, list[Request]] = {}      # tag -> outstanding requests, oldest first
        self.by_line: dict[int, list[Request]] = {}      # HPA line -> outstanding requests
        self.lines: dict[int, _Line] = {}
        self.inbox = deque()                              # (deliver cycle, channel, record)
        self.conflicts: dict[int, list] = {}              # tag -> [snoop context] waiting for BI-ConflictAck
        self.cycle = 0
        self.on_accept = None
        self.on_complete = None
        self.stats = {"bisnp": 0, "conflicts": 0, "early": 0, "late": 0, "writebacks": 0, "birsp": 0}
        self.errors: list[str] = []
        self.received = {"ndr": [], "drs": [], "bisnp": []}   # (cycle, record), for directed tests
        self._ready = {}
        self._last_due = {}
        self.hold: set[str] = set()      # S2M channels held not ready (directed race tests)

    # ------------------------------------------------------------------ local cache
    def line(self, addr) -> _Line:
        ln = self.lines.get(addr)
        if ln is None:
            ln = self.lines[addr] = _Line()
        return ln

    def state(self, addr) -> str:
        ln = self.lines.get(addr)
        return "I" if ln is None else ln.state

    def may_hold(self, addr) -> bool:
        """The host holds ``addr`` or a grant of it is on its way (Cmp-S/E in transit)."""
        if self.state(addr) != "I":
            # a copy the host took with a MemWr A the device has not accepted yet is ordered after
            # any device write granted now: that write is overwritten by the host's line
            return not any(r.accept_cycle < 0 and r.kind == "rwd" and r.opcode == RwdOpcode.MEM_WR.value
                           and r.meta_value == MetaValue.A.value for r in self.by_line.get(addr, ()))
        for _, ch, rec in self.inbox:
            if ch == "ndr" and rec.opcode in (NdrOpcode.CMP_S.value, NdrOpcode.CMP_E.value):
                for r in self.pending.get(rec.tag, ()):
                    if r.addr == addr:
                        return True
        return False

    def busy(self, addr) -> bool:
        return bool(self.by_line.get(addr))

    def mapped(self, addr) -> bool:
        return self.hdm[0] <= addr < self.hdm[0] + self.hdm[1]

    # ------------------------------------------------------------------ sending
    def _tag(self, tag):
        if tag is not None:
            return tag, False
        if not self.free_tags:
            raise RuntimeError("no free tag")
        return self.free_tags.popleft(), True

    def submit(self, kind, opcode, addr, *, tag=None, meta_field=MetaField.NO_OP, meta_value=0, snp=SnpType.NO_OP,
               data=0, be=FULL_BE, poison=0, ld_id=0, callback=None, what="") -> Request:
        """Queue one M2S message (raw: any opcode/meta/snp combination, legal or not)."""
        v = lambda x: x.value if hasattr(x, "value") else x  # noqa: E731
        opcode, meta_field, meta_value, snp = v(opcode), v(meta_field), v(meta_value), v(snp)
        tag, own = self._tag(tag)
        r = Request(kind, opcode, addr, tag, meta_field, meta_value, snp, data, be, poison, ld_id,
                    own_tag=own, what=what)
        is_read = kind == "req" and opcode in (ReqOpcode.MEM_RD.value, ReqOpcode.MEM_RD_DATA.value)
        no_reply = kind == "req" and opcode in (ReqOpcode.MEM_SPEC_RD.value, ReqOpcode.MEM_RD_FWD.value,
                                                 ReqOpcode.MEM_WR_FWD.value)
        r.expect_drs = is_read
        r.expect_ndr = not no_reply and not (is_read and not self.mapped(addr))
        if callback:
            r.callbacks.append(callback)
        r.sent_cycle = self.cycle
        due = self.cycle + _delay(self.rng, self.delay)
        if kind == "req":
            payload = pack(M2SReq, opcode=opcode, snp_type=snp, meta_field=meta_field, meta_value=meta_value,
                           tag=tag, addr=addr, ld_id=ld_id)
            ch = self.req_ch
        else:
            payload = pack(M2SRwD, opcode=opcode, snp_type=snp, meta_field=meta_field, meta_value=meta_value,
                           tag=tag, addr=addr, ld_id=ld_id, poison=poison, byte_enable=be, data=data)
            ch = self.rwd_ch
        if no_reply:
            ch.q.append((due, payload, lambda c, r=r: self._accepted(r, c, complete=True)))
        else:
            self.pending.setdefault(tag, []).append(r)
            if opcode != RwdOpcode.BI_CONFLICT.value or kind != "rwd":
                self.by_line.setdefault(addr, []).append(r)
            ch.q.append((due, payload, lambda c, r=r: self._accepted(r, c)))
        return r

    def _accepted(self, r, cyc, complete=False):
        r.accept_cycle = cyc
        if self.on_accept:
            self.on_accept(r, cyc)
        if complete:
            self._complete(r)

    # high-level operations (update the host cache as a host would)
    def read(self, addr, meta="none", *, opcode=ReqOpcode.MEM_RD, **kw) -> Request:
        """MemRd: ``meta`` "A" (own, SnpInv), "S" (share, SnpData) or "none" (No-Op, SnpCur: not cached)."""
        if meta == "A":
            return self.submit("req", opcode, addr, meta_field=MetaField.META0_STATE, meta_value=MetaValue.A,
                               snp=SnpType.SNP_INV, **kw)
        if meta == "S":
            return self.submit("req", opcode, addr, meta_field=MetaField.META0_STATE, meta_value=MetaValue.S,
                               snp=SnpType.SNP_DATA, **kw)
        return self.submit("req", opcode, addr, meta_field=MetaField.NO_OP, snp=SnpType.SNP_CUR, **kw)

    def read_data(self, addr, **kw) -> Request:
        """MemRdData (No-Op, SnpData): the host may cache the line (Cmp-S/E)."""
        return self.submit("req", ReqOpcode.MEM_RD_DATA, addr, meta_field=MetaField.NO_OP, snp=SnpType.SNP_DATA,
                           **kw)

    def write(self, addr, data, *, keep=False, snp_inv=False, poison=0, **kw) -> Request:
        """MemWr of a whole line; ``keep``: MetaValue A (the host keeps a clean copy), else I."""
        ln = self.line(addr)
        if keep:
            ln.state, ln.data = "E", data
        else:
            ln.state, ln.data = "I", None
        return self.submit("rwd", RwdOpcode.MEM_WR, addr, meta_field=MetaField.META0_STATE,
                           meta_value=MetaValue.A if keep else MetaValue.I,
                           snp=SnpType.SNP_INV if snp_inv else SnpType.NO_OP, data=data, poison=poison, **kw)

    def write_partial(self, addr, data, byte_enable, *, poison=0, **kw) -> Request:
        """MemWrPtl (I, SnpInv): the host keeps no copy."""
        ln = self.line(addr)
        ln.state, ln.data = "I", None
        return self.submit("rwd", RwdOpcode.MEM_WR_PTL, addr, meta_field=MetaField.META0_STATE,
                           meta_value=MetaValue.I, snp=SnpType.SNP_INV, data=data, be=byte_enable, poison=poison,
                           **kw)

    def invalidate(self, addr, meta="I", *, opcode=ReqOpcode.MEM_INV, **kw) -> Request:
        """MemInv: "A" gains ownership without data (state E, data unknown), "I" gives the line up."""
        if meta == "I":
            ln = self.line(addr)
            ln.state, ln.data = "I", None
        return self.submit("req", opcode, addr, meta_field=MetaField.META0_STATE,
                           meta_value=MetaValue.A if meta == "A" else MetaValue.I, snp=SnpType.SNP_INV, **kw)

    def evict(self, addr, **kw) -> Request | None:
        """Give a held line up: MemWr I of dirty data, MemClnEvct of a clean copy; None when not held."""
        ln = self.line(addr)
        if ln.state == "M":
            d = ln.data
            ln.state, ln.data = "I", None
            return self.submit("rwd", RwdOpcode.MEM_WR, addr, meta_field=MetaField.META0_STATE,
                               meta_value=MetaValue.I, data=d, **kw)
        if ln.state in ("S", "E"):
            ln.state, ln.data = "I", None
            return self.submit("req", ReqOpcode.MEM_CLN_EVCT, addr, meta_field=MetaField.META0_STATE,
                               meta_value=MetaValue.I, **kw)
        return None

    def store_local(self, addr, data) -> None:
        """Write a line held E or M in the host cache only (it becomes M, written back on eviction/BISnp)."""
        ln = self.line(addr)
        assert ln.state in ("E", "M"), f"store to line {addr:#x} held {ln.state}"
        ln.state, ln.data = "M", data

    # cocotb wrappers
    async def read_line(self, addr, meta="none", **kw) -> Request:
        return await self.read(addr, meta, **kw).wait()

    async def write_line(self, addr, data, **kw) -> Request:
        return await self.write(addr, data, **kw).wait()

    async def write_partial_line(self, addr, data, byte_enable, **kw) -> Request:
        return await self.write_partial(addr, data, byte_enable, **kw).wait()

    async def invalidate_line(self, addr, meta="I", **kw) -> Request:
        return await self.invalidate(addr, meta, **kw).wait()

    # ------------------------------------------------------------------ receiving
    def _complete(self, r):
        r.done = True
        r.done_cycle = self.cycle
        if r in self.by_line.get(r.addr, ()):
            self.by_line[r.addr].remove(r)
            if not self.by_line[r.addr]:
                del self.by_line[r.addr]
        if r.own_tag:
            self.free_tags.append(r.tag)
        for cb in r.callbacks:
            cb(r)
        if self.on_complete:
            self.on_complete(r)

    def _check_done(self, r):
        if (r.ndr is not None or not r.expect_ndr) and (r.drs is not None or not r.expect_drs):
            lst = self.pending[r.tag]
            lst.remove(r)
            if not lst:
                del self.pending[r.tag]
            self._install(r)
            self._complete(r)

    def _install(self, r):
        """A completed read that grants a copy installs the line."""
        if r.ndr is None or r.ndr.opcode not in (NdrOpcode.CMP_S.value, NdrOpcode.CMP_E.value):
            return
        ln = self.line(r.addr)
        st = "S" if r.ndr.opcode == NdrOpcode.CMP_S.value else "E"
        if r.kind == "req" and r.opcode in (ReqOpcode.MEM_INV.value, ReqOpcode.MEM_INV_NT.value):
            ln.state, ln.data = "E", None          # ownership without data
        elif r.drs is not None:
            # a poisoned line is held (the device tracks it) but its data is not good data
            ln.state, ln.data = st, None if r.drs.poison else r.drs.data

    def _deliver(self, ch, rec):
        if ch == "bisnp":
            self._bisnp(rec)
            return
        if ch == "ndr" and rec.opcode == NdrOpcode.BI_CONFLICT_ACK.value:
            waiting = self.conflicts.get(rec.tag)
            if not waiting:
                self.errors.append(f"BI-ConflictAck for tag {rec.tag} with no BIConflict pending")
                return
            ctx = waiting.pop(0)
            if not waiting:
                del self.conflicts[rec.tag]
            req = ctx["req"]
            late = req.done or req.ndr is not None      # its Cmp came before the ack: served before the BISnp
            self.stats["late" if late else "early"] += 1
            ctx["req_conflict"].ndr = rec
            self._check_done(ctx["req_conflict"])
            if late and not req.done:
                # the Cmp arrived, its data not yet: answer from the state the completion gives
                req.callbacks.append(lambda r, ctx=ctx: self._snoop(ctx["addr"], ctx["bisnp"]))
            else:
                self._snoop(ctx["addr"], ctx["bisnp"])
            return
        for r in self.pending.get(rec.tag, ()):
            if r.kind == "rwd" and r.opcode == RwdOpcode.BI_CONFLICT.value:
                continue
            if getattr(r, ch) is None and (r.expect_ndr if ch == "ndr" else r.expect_drs):
                setattr(r, ch, rec)
                self._check_done(r)
                return
        self.errors.append(f"{ch.upper()} {rec} matches no pending request")

    def _bisnp(self, rec):
        self.stats["bisnp"] += 1
        addr = rec.addr
        live = [r for r in self.by_line.get(addr, ()) if not r.done]
        if live:
            # a request of ours to this line is pending: BIConflict with its Tag, answer after the ack
            pend = live[0]
            self.stats["conflicts"] += 1
            c = self.submit("rwd", RwdOpcode.BI_CONFLICT, addr, tag=pend.tag, what="BIConflict")
            self.conflicts.setdefault(pend.tag, []).append({"addr": addr, "bisnp": rec, "req": pend,
                                                             "req_conflict": c})
            return
        self._snoop(addr, rec)

    def _snoop(self, addr, rec):
        ln = self.line(addr)

        def answer(_=None):
            self.stats["birsp"] += 1
            self.birsp_ch.q.append((self.cycle + _delay(self.rng, self.delay),
                                    pack(M2SBIRsp, opcode=BIRspOpcode.I, bi_id=rec.bi_id, bi_tag=rec.bi_tag), None))
        if ln.state == "M":
            self.stats["writebacks"] += 1
            d = ln.data
            ln.state, ln.data = "I", None
            self.submit("rwd", RwdOpcode.MEM_WR, addr, meta_field=MetaField.META0_STATE, meta_value=MetaValue.I,
                        data=d, callback=answer, what="writeback")
        else:
            ln.state, ln.data = "I", None
            answer()

    # ------------------------------------------------------------------ clocking
    def drive(self, io, cyc):
        self.cycle = cyc
        while self.inbox and self.inbox[0][0] <= cyc:
            _, ch, rec = self.inbox.popleft()
            self._deliver(ch, rec)
        for ch in (self.req_ch, self.rwd_ch, self.birsp_ch):
            ch.drive(io, cyc)
        for name in ("s2m_ndr", "s2m_drs", "s2m_bisnp"):
            rdy = (self.s2m_ready >= 1.0 or self.rng.random() < self.s2m_ready) and name not in self.hold
            self._ready[name] = rdy
            io.set(f"{name}__ready", rdy)

    def sample(self, io, cyc):
        for ch in (self.req_ch, self.rwd_ch, self.birsp_ch):
            ch.sample(io, cyc)
        for name, key, layout in (("s2m_ndr", "ndr", S2MNDR), ("s2m_drs", "drs", S2MDRS),
                                  ("s2m_bisnp", "bisnp", S2MBISnp)):
            if self._ready[name] and io.get(f"{name}__valid"):
                rec = unpack(layout, io.get(f"{name}__payload"))
                self.received[key].append((cyc, rec))
                # deliveries stay in order per channel: never before the previous message of the channel
                due = max(cyc + 1 + _delay(self.rng, self.delay), self._last_due.get(key, 0))
                self._last_due[key] = due
                self.inbox.append((due, key, rec))
                if isinstance(self.delay, tuple):
                    self.inbox = deque(sorted(self.inbox, key=lambda e: e[0]))     # stable: channel order kept

    def describe(self) -> str:
        """The host's outstanding state, for stuck reports."""
        reqs = [f"{r.kind}:{r.opcode}@{r.addr:#x}/tag{r.tag}(acc {r.accept_cycle}, ndr {r.ndr is not None}, "
                f"drs {r.drs is not None})" for lst in self.pending.values() for r in lst]
        return (f"cycle {self.cycle}; {len(reqs)} pending: {', '.join(reqs[:12])}; conflicts waiting "
                f"{ {t: [c['addr'] for c in w] for t, w in self.conflicts.items()} }; queued M2S "
                f"{len(self.req_ch.q)}/{len(self.rwd_ch.q)}/{len(self.birsp_ch.q)}; inbox {len(self.inbox)}")

    def idle(self) -> bool:
        return not (self.pending or self.inbox or self.req_ch.q or self.rwd_ch.q or self.birsp_ch.q
                    or self.conflicts)

    def progress(self) -> tuple:
        """Changes whenever a message moves (for a testbench's stuck detection)."""
        return (sum(len(v) for v in self.received.values()), len(self.req_ch.q), len(self.rwd_ch.q),
                len(self.birsp_ch.q), len(self.inbox))


# ------------------------------------------------------------------------------------------------ backend

class BackendModel:
    """Line memory behind ``mw``/``mw_done`` and ``mr``/``mr_data`` (device line numbers).

    Writes: accepted with probability ``ready``; each lands in memory (in
    acceptance order) either when accepted or when its ``mw_done`` pulses (at random), ``latency``
    cycles later, in order, one pulse per cycle.  Reads: answered in order
    after ``latency`` cycles; each samples memory at a random moment after
    every write accepted before it has landed (the contract), so a write
    accepted after a read may land before the read samples.
    """

    def __init__(self, *, rng=None, latency=(0, 0), ready=1.0, mem=None):
        self.rng = rng or random.Random(1)
        self.latency, self.ready = latency, ready
        self.mem: dict[int, int] = dict(mem or {})
        self.wq = deque()        # [seq, addr, data, due, landed]
        self.rq = deque()        # [addr, wseq, due, data or None]
        self.wseq = 0
        self.unlanded: set[int] = set()
        self.done_log = []       # (cycle, addr) of every mw_done
        self.accepted_w = []     # (cycle, addr, data)
        self.accepted_r = []     # (cycle, addr)
        self.returned = []       # (cycle, addr, data) of every mr_data
        self._mw_rdy = self._mr_rdy = False
        self._presenting = False

    def _lat(self):
        return _delay(self.rng, self.latency)

    def _land(self, w):
        # writes land in acceptance order: an earlier one still in flight lands first
        for x in list(self.wq) + [w]:
            if not x[4]:
                self.mem[x[1]] = x[2]
                x[4] = True
                self.unlanded.discard(x[0])
            if x is w:
                break

    def device_write(self, addr, data):
        self.mem[addr] = data

    def drive(self, io, cyc):
        pulse = False
        if self.wq and self.wq[0][3] <= cyc:
            w = self.wq[0]
            self._land(w)
            self.wq.popleft()
            pulse = True
            self.done_log.append((cyc, w[1]))
            io.set("mw_done_addr", w[1])
        io.set("mw_done", pulse)
        first_unlanded = min(self.unlanded, default=1 << 62)
        for r in self.rq:
            if r[3] is None and r[1] <= first_unlanded and (r[2] <= cyc or self.rng.random() < 0.5):
                r[3] = self.mem.get(r[0], 0)
        self._presenting = bool(self.rq) and self.rq[0][2] <= cyc and self.rq[0][3] is not None
        io.set("mr_data__valid", self._presenting)
        if self._presenting:
            io.set("mr_data__payload", self.rq[0][3])
        self._mw_rdy = self.ready >= 1.0 or self.rng.random() < self.ready
        self._mr_rdy = self.ready >= 1.0 or self.rng.random() < self.ready
        io.set("mw__ready", self._mw_rdy)
        io.set("mr__ready", self._mr_rdy)

    def sample(self, io, cyc):
        if self._presenting and io.get("mr_data__ready"):
            r = self.rq.popleft()
            self.returned.append((cyc, r[0], r[3]))
        if self._mw_rdy and io.get("mw__valid"):
            p = io.get("mw__payload")
            addr, d = p & 0xFFFFFFFF, p >> 32
            w = [self.wseq, addr, d, cyc + 1 + self._lat(), False]
            self.unlanded.add(self.wseq)
            self.wseq += 1
            if self.rng.random() < 0.5:
                self._land(w)
            self.wq.append(w)
            self.accepted_w.append((cyc, addr, d))
        if self._mr_rdy and io.get("mr__valid"):
            addr = io.get("mr__payload") & 0xFFFFFFFF
            # ordered after every write accepted before it (not one accepted in this same cycle: the
            # subordinate never offers both for one line at once)
            wseq = self.wseq - (1 if self.accepted_w and self.accepted_w[-1][0] == cyc else 0)
            self.rq.append([addr, wseq, cyc + 1 + self._lat(), None])
            self.accepted_r.append((cyc, addr))

    def idle(self) -> bool:
        return not (self.wq or self.rq)


class DeviceWriter:
    """The device side of ``dev_wr``/``dev_wr_ok``: requests line writes, applies each at its grant.

    ``on_grant(addr, cycle)`` returns the data to write (or None for random); the write lands
    in the backend memory in the grant cycle.
    """

    def __init__(self, backend: BackendModel, *, rng=None, ok_ready=1.0):
        self.backend = backend
        self.rng = rng or random.Random(2)
        self.ok_ready = ok_ready
        self.q = deque()
        self.on_grant = None
        self.grants = []          # (cycle, addr, data)
        self._presenting = self._rdy = False

    def request(self, addr):
        self.q.append(addr)

    def drive(self, io, cyc):
        self._presenting = bool(self.q)
        io.set("dev_wr__valid", self._presenting)
        if self._presenting:
            io.set("dev_wr__payload", self.q[0])
        self._rdy = self.ok_ready >= 1.0 or self.rng.random() < self.ok_ready
        io.set("dev_wr_ok__ready", self._rdy)

    def sample(self, io, cyc):
        if self._presenting and io.get("dev_wr__ready"):
            self.q.popleft()
        if self._rdy and io.get("dev_wr_ok__valid"):
            addr = io.get("dev_wr_ok__payload")
            d = self.on_grant(addr, cyc) if self.on_grant else None
            if d is None:
                d = self.rng.getrandbits(8 * LINE_BYTES)
            self.backend.device_write(addr, d)
            self.grants.append((cyc, addr, d))


# ------------------------------------------------------------------------------------------------ TableMemory

class CxlTableMemory(TableMemory):
    """The golden model's :class:`TableMemory` over the CXL.mem host.

    Semantics: ``read_line`` is synchronous and served from the host-side
    copy of the image (``image``), which is exactly what the host has written
    (its own writes are applied to the copy when queued) on top of what it
    loaded; lines the device writes itself (counters) are not refreshed —
    ``await refresh(i)`` re-reads one through CXL.  ``write_line`` updates the
    copy and queues a CXL MemWr (MetaValue I: the host keeps no cache
    state); ``await drain()`` returns once every queued write got its Cmp,
    i.e. is visible to the datapath.  Index ``i`` is HPA line ``base + i``.
    """

    def __init__(self, host: CxlMemHost, n_lines: int, *, base: int = 0, image: bytes | None = None):
        self.host, self.base, self._n = host, base, n_lines
        self.image = bytearray(image if image is not None else bytes(n_lines * LINE_BYTES))
        self.queued: list[Request] = []

    @property
    def n_lines(self) -> int:
        return self._n

    def _chk(self, index):
        if not 0 <= index < self._n:
            raise IndexError(f"line {index} outside memory of {self._n} lines")
        return index * LINE_BYTES

    def read_line(self, index: int) -> bytes:
        a = self._chk(index)
        return bytes(self.image[a:a + LINE_BYTES])

    def write_line(self, index: int, data: bytes) -> None:
        if len(data) != LINE_BYTES:
            raise ValueError(f"write to line {index}: {len(data)} bytes, not {LINE_BYTES}")
        a = self._chk(index)
        self.image[a:a + LINE_BYTES] = data
        self.queued.append(self.host.write(self.base + index, int.from_bytes(data, "little")))

    async def refresh(self, index: int) -> bytes:
        a = self._chk(index)
        r = await self.host.read_line(self.base + index)
        self.image[a:a + LINE_BYTES] = r.rdata.to_bytes(LINE_BYTES, "little")
        return self.read_line(index)

    async def drain(self) -> None:
        while self.queued:
            await self.queued.pop(0).wait()


# ------------------------------------------------------------------------------------------------ checker

class ShadowChecker:
    """Data-value invariant against a shadow of device memory, in the order the device accepted requests.

    Hooked to :attr:`CxlMemHost.on_accept`/``on_complete`` and :attr:`DeviceWriter.on_grant`:
    a write changes the shadow when the DUT accepts it (a poisoned one, or a partial write to
    a poisoned line, only marks the line poisoned); a read must return the shadow at its
    acceptance (Poison set for a poisoned line; all ones and Poison outside HDM); a device
    write is applied at its grant, which must never come while the host may hold the line.
    Mismatches are counted and the first ones kept in ``errors``.
    """

    def __init__(self, host: CxlMemHost, dev: DeviceWriter | None = None, *, mem=None, rng=None):
        self.host, self.dev = host, dev
        self.rng = rng or random.Random(3)
        self.shadow: dict[int, int] = dict(mem or {})     # HPA line -> data
        self.poisoned: set[int] = set()
        self.mismatches = 0
        self.violations = 0
        self.checked = 0
        self.errors: list[str] = []
        host.on_accept = self.accept
        host.on_complete = self.complete
        if dev is not None:
            dev.on_grant = self.grant

    def _err(self, msg):
        if len(self.errors) < 20:
            self.errors.append(msg)

    def accept(self, r: Request, cyc):
        a = r.addr
        if r.kind == "rwd" and self.host.mapped(a):
            if r.opcode == RwdOpcode.MEM_WR.value:
                if r.poison:
                    self.poisoned.add(a)
                else:
                    self.shadow[a] = r.data
                    self.poisoned.discard(a)
            elif r.opcode == RwdOpcode.MEM_WR_PTL.value:
                if r.poison or a in self.poisoned:
                    self.poisoned.add(a)
                else:
                    self.shadow[a] = merge_line(self.shadow.get(a, 0), r.data, r.be)
        elif r.kind == "req" and r.opcode in (ReqOpcode.MEM_RD.value, ReqOpcode.MEM_RD_DATA.value):
            if self.host.mapped(a):
                r.expect = (self.shadow.get(a, 0), int(a in self.poisoned))
            else:
                r.expect = (ALL_ONES, 1)

    def complete(self, r: Request):
        exp = getattr(r, "expect", None)
        if exp is None or r.drs is None:
            return
        self.checked += 1
        data, poison = exp
        if r.drs.poison != poison or (not poison and r.drs.data != data):
            self.mismatches += 1
            self._err(f"read of line {r.addr:#x} (tag {r.tag}, accepted cycle {r.accept_cycle}): got "
                      f"poison={r.drs.poison} data={r.drs.data:#x}, expected poison={poison} data={data:#x}")

    def grant(self, dev_line, cyc):
        a = dev_line + self.host.hdm[0]
        if self.host.may_hold(a):
            self.violations += 1
            self._err(f"cycle {cyc}: device write of line {a:#x} granted while the host may hold it "
                      f"({self.host.state(a)})")
        d = self.rng.getrandbits(8 * LINE_BYTES)
        self.shadow[a] = d
        self.poisoned.discard(a)
        return d


# ------------------------------------------------------------------------------------------------ random traffic

_CACHING = ("read_A", "read_S", "read_data", "inv_A", "write_keep")


#: The fixed workload of the simulator-speed comparison (``scripts/bench_system.py``): agent settings,
#: seed and the number of lines the traffic covers.
SPEED_WORKLOAD = {"seed": 5, "lines": 24,
                  "agents": {"delay": (0, 3), "s2m_ready": 0.8, "latency": (0, 8), "be_ready": 0.8, "ok_ready": 0.8}}


def host_agents(seed: int, hdm: tuple[int, int], *, delay=(0, 4), s2m_ready=0.8, latency=(0, 10), be_ready=0.8,
                ok_ready=0.8):
    """``(host, backend, device writer, checker)`` for a CxlMemSubordinate test, their random streams
    drawn from ``seed`` in a fixed order: the same seed gives the same traffic under either simulator."""
    rng = random.Random(seed)
    host = CxlMemHost(rng=random.Random(rng.getrandbits(32)), delay=delay, s2m_ready=s2m_ready, hdm=hdm)
    backend = BackendModel(rng=random.Random(rng.getrandbits(32)), latency=latency, ready=be_ready)
    dev = DeviceWriter(backend, rng=random.Random(rng.getrandbits(32)), ok_ready=ok_ready)
    return host, backend, dev, ShadowChecker(host, dev)


async def random_traffic(b, rng, *, n_ops, lines, max_outstanding=24, p_dev=0.05, p_poison=0.01, p_gap=0.15):
    """Random host traffic plus device writes over ``lines`` (HPA), as a host would issue it.

    ``b`` has ``host``, ``dev``, ``checker`` and async ``cycles(n)``/``until(cond)``.  The host
    keeps one request per line while the line's cache state may change (a host home agent
    serialises those); requests that do not cache (No-Op reads, writes and partial writes of
    a line the host does not hold) overlap freely.  A line the host holds clean is checked
    against the shadow whenever nothing is pending on it.  At the end every held line is
    given up and every line read back.
    """
    host, chk = b.host, b.checker
    base = host.hdm[0]
    done = 0
    poison_lines = lines[:4]
    waited = 0
    while done < n_ops:
        if len(host.pending) >= max_outstanding or len(host.free_tags) < 4:
            waited += 1
            if waited > 20_000:
                raise AssertionError(f"no request completed in 20000 cycles: {host.describe()}")
            await b.cycles(1)
            continue
        waited = 0
        if rng.random() < p_gap:
            await b.cycles(rng.randint(1, 3))
        a = rng.choice(lines)
        done += 1
        if rng.random() < p_dev:
            b.dev.request(a - base)
            continue
        live = host.by_line.get(a, [])
        busy_caching = any(getattr(r, "caching", True) for r in live)
        st = host.state(a)
        ln = host.line(a)
        if st == "I":
            if busy_caching:
                continue
            k = rng.random()
            if k < 0.35 or live:       # overlapping traffic only with non-caching requests
                k2 = rng.random()
                if k2 < 0.4:
                    r = host.read(a)
                elif k2 < 0.75:
                    poison = int(a in poison_lines and rng.random() < p_poison * 10)
                    r = host.write(a, rng.getrandbits(512), poison=poison)
                elif k2 < 0.95:
                    r = host.write_partial(a, rng.getrandbits(512), rng.getrandbits(64) or 1)
                else:
                    r = host.invalidate(a, "I")
                r.caching = False
                continue
            if live:
                continue
            k = rng.randrange(5)
            if k == 0:
                r = host.read(a, "A")
            elif k == 1:
                r = host.read(a, "S")
            elif k == 2:
                r = host.read_data(a)
            elif k == 3:
                r = host.invalidate(a, "A")
            else:
                r = host.write(a, rng.getrandbits(512), keep=True)
            r.caching = True
            continue
        if live or any(ctx["addr"] == a for w in host.conflicts.values() for ctx in w):
            continue
        # the host holds the line: a clean copy equals memory
        if st in ("S", "E") and ln.data is not None:
            chk.checked += 1
            if a in chk.poisoned or ln.data != chk.shadow.get(a, 0):
                chk.mismatches += 1
                chk._err(f"host copy of line {a:#x} ({st}) differs from memory")
        k = rng.random()
        if st == "S":
            r = host.evict(a) if k < 0.6 else host.write(a, rng.getrandbits(512))
        elif k < 0.45 or ln.data is None:
            host.store_local(a, rng.getrandbits(512))
            continue
        elif k < 0.65:
            r = host.write(a, rng.getrandbits(512), keep=True)
        else:
            r = host.evict(a)
        r.caching = True
    await b.until(lambda: host.idle() and not b.dev.q)
    for a in lines:
        await b.until(lambda a=a: not host.by_line.get(a))
        r = host.evict(a)
        if r is not None:
            r.caching = True
    await b.until(host.idle)
    for a in lines:
        host.read(a).caching = False
    await b.until(host.idle)
