"""Cuckoo flow-table lookup engine: exact-match lookups in device DRAM over an AXI4 read master.

Bit-exact with :meth:`cxlnic.model.flowtable.FlowTable.lookup_entry` (tested
against it in Amaranth's simulator and under Verilator with cocotbext-axi's
AxiRam).
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from cxlnic.hdl.hash import FlowHasher
from cxlnic.hdl.layouts import LINE_BITS, LINE_BYTES, SLOTS_PER_BUCKET, Bucket, FlowEntry, FlowKey
from cxlnic.hdl.util import checked_init

__all__ = ["CuckooEngine", "LookupRequest", "LookupResult"]

_LINE_SHIFT = (LINE_BYTES - 1).bit_length()     # byte address = line << 6
_LINE_INDEX_BITS = 32
_ADDR_BITS = _LINE_INDEX_BITS + _LINE_SHIFT
_PTR_BITS = 31                                   # BucketSlot.entry


def LookupRequest(tag_bits: int) -> data.StructLayout:
    """Input payload: the key to look up and an opaque tag returned with its result."""
    return data.StructLayout({"key": FlowKey, "tag": tag_bits})


def LookupResult(tag_bits: int) -> data.StructLayout:
    """Output payload: ``entry`` is the FlowEntry line on a hit, all zero on a miss (``index`` 0 too)."""
    return data.StructLayout({"tag": tag_bits, "hit": 1, "index": _PTR_BITS, "entry": FlowEntry})


# Context states.  A context is one lookup in flight; its number is its ARID.
_IDLE, _ISSUE, _WAIT, _DONE = range(4)
# What the context's next (or outstanding) read returns.
_BUCKET, _ENTRY = range(2)
# Which bucket line the context is searching.
_PRIMARY, _SECONDARY, _STASH = range(3)


class CuckooEngine(wiring.Component):
    """Exact-match flow lookups in a DRAM-resident cuckoo table (``docs/flow-table.md``).

    Algorithm (the same reads, in the same order, as ``FlowTable.lookup``):
    hash the key (:class:`~cxlnic.hdl.hash.FlowHasher`), read the primary
    bucket line; for each valid slot whose signature matches, lowest slot
    first, read the entry line and compare ``valid`` and the full key; then
    the secondary bucket likewise, then each stash line.  The first matching
    entry is the hit.

    Ports
    -----
    * ``hash_key`` (512): the hash-key line, sampled every cycle.
    * ``i``: stream of :func:`LookupRequest` (key + ``tag``).  Accepted one
      per cycle while fewer than ``max_outstanding`` lookups are in flight
      (``i.ready`` depends only on that count).
    * ``o``: stream of :func:`LookupResult`, **in input order**, one per
      cycle at most; ``valid`` never depends on ``ready``.
    * ``m_axi_*``: AXI4 master, read channels only used: ``arlen`` 0,
      ``arsize`` 6 (one 64-byte line per read), ``arburst`` INCR,
      ``araddr`` = line × 64, ``arid`` = context number.  ``rready`` is
      constant 1 (responses are never stalled) and R beats may return in any
      order across IDs.  ``rresp`` is ignored.  The write channels exist only
      so that a full AXI4 slave model attaches; they are tied idle.
    * ``wr``: stream of line indices of host writes to bucket and stash
      lines, always ready (the CXL agent reports each such write as it
      becomes visible).
    * ``lookups``, ``hits``, ``lines_read``, ``replays``, ``giveups``: 32-bit
      running counters (results emitted, hits emitted, AR handshakes,
      lookups restarted, lookups that reached ``max_replays`` and reported
      a miss while writes were still hitting their lines).

    Outstanding lookups and ordering
    --------------------------------
    ``max_outstanding`` contexts form a ring: a lookup takes the context at
    the tail when it is accepted and frees it when its result leaves from the
    head, so the context number is the sequence number and the context table
    is the reorder buffer.  Every context has at most one read outstanding
    (ARID = context), so R beats may return in any order.  The R path never
    stalls: each beat is decided in the cycle after it arrives.

    Replay guarantee (no false miss while the host moves entries)
    -------------------------------------------------------------
    Contract with the reporter of ``wr``: a write to a bucket or stash line
    is reported no later than the cycle in which the first R beat whose data
    reflects it arrives.  Each context has a ``dirty`` bit, cleared when the
    lookup (re)starts (before its primary read is issued) and set by any
    ``wr`` beat naming its primary bucket, its secondary bucket or a stash
    line.  A lookup that would miss with ``dirty`` set restarts from the
    primary read instead (a replay), at most ``max_replays`` times.

    Why a key K present throughout a lookup is found: if no reported write
    touched K's bucket or stash lines between the start and the miss
    decision, then every such line the lookup read reflects exactly the
    writes reported before the start (later ones are, by the contract, not
    yet in any beat it received), i.e. one single state of the table between
    two line writes.  The host's copy-before-delete order keeps K in a slot
    of that state, and K's entry line is not rewritten while K is present
    (updates keep key and valid), so the search finds it.  Otherwise the
    lookup replays, so a miss is only reported after a write-free pass over
    K's lines, or after ``max_replays`` replays (counted in ``giveups``: the
    host would have to rewrite one of the key's three lines more than
    ``max_replays`` times during one lookup, which a single writer whose
    inserts move at most ``max_moves`` slots does not do to one key).

    Latency and throughput
    ----------------------
    With DRAM read latency L cycles (AR handshake to R beat) and no
    backpressure, a lookup that reads n lines takes about
    ``3 (hash) + 1 + n·(L + 3) + 2`` cycles from ``i`` to ``o``.  Throughput
    is bounded by one R beat per cycle, i.e. 1/n lookups per cycle (about
    1/2.1 at 90 % load for hits, 1/3 for misses with one stash line), once
    the contexts cover the latency.  Because results retire in order, a
    context stays busy until every older lookup is done, so reaching the
    bound takes about 3·(L + 3) contexts rather than n·(L + 3); reads are
    issued oldest lookup first to keep that margin small.  Measured in
    Amaranth's simulator (hits at 90 % load, 2.16 lines per lookup, bound
    0.463): L = 10: 0.47 lookups/cycle with 32 contexts; L = 40: 0.24 / 0.38
    / 0.47 with 32 / 64 / 128 contexts; L = 100: 0.33 with 128.
    """

    @checked_init
    def __init__(self, *, n_buckets: int, buckets_off: int, stash_off: int, n_stash: int, flows_off: int,
                 max_outstanding: int = 32, axi_id_bits: int = 8, tag_bits: int = 16, max_replays: int = 15):
        if not isinstance(n_buckets, int) or n_buckets < 2 or n_buckets & (n_buckets - 1):
            raise ValueError(f"n_buckets = {n_buckets!r}: must be a power of two >= 2")
        for name, v in (("buckets_off", buckets_off), ("stash_off", stash_off), ("flows_off", flows_off)):
            if not isinstance(v, int) or not 0 <= v < 1 << _LINE_INDEX_BITS:
                raise ValueError(f"{name} = {v!r}: must be a line index in [0, 2**32)")
        if not isinstance(n_stash, int) or not 0 <= n_stash <= 16:
            raise ValueError(f"n_stash = {n_stash!r}: must be in [0, 16]")
        if (not isinstance(max_outstanding, int) or max_outstanding < 2
                or max_outstanding & (max_outstanding - 1)):
            raise ValueError(f"max_outstanding = {max_outstanding!r}: must be a power of two >= 2")
        ctx_bits = (max_outstanding - 1).bit_length()
        if not isinstance(axi_id_bits, int) or axi_id_bits < ctx_bits:
            raise ValueError(f"axi_id_bits = {axi_id_bits!r}: must be >= {ctx_bits} to name "
                             f"{max_outstanding} outstanding reads")
        if not isinstance(tag_bits, int) or tag_bits < 1:
            raise ValueError(f"tag_bits = {tag_bits!r}: must be >= 1")
        if not isinstance(max_replays, int) or not 0 <= max_replays <= 255:
            raise ValueError(f"max_replays = {max_replays!r}: must be in [0, 255]")
        self._n_buckets = n_buckets
        self._buckets_off = buckets_off
        self._stash_off = stash_off
        self._n_stash = n_stash
        self._flows_off = flows_off
        self._max_outstanding = max_outstanding
        self._axi_id_bits = axi_id_bits
        self._tag_bits = tag_bits
        self._max_replays = max_replays
        super().__init__({
            "hash_key": In(LINE_BITS),
            "i": In(stream.Signature(LookupRequest(tag_bits))),
            "o": Out(stream.Signature(LookupResult(tag_bits))),
            "wr": In(stream.Signature(data.StructLayout({"line": _LINE_INDEX_BITS}))),
            # AXI4 read address channel
            "m_axi_arvalid": Out(1), "m_axi_arready": In(1), "m_axi_araddr": Out(_ADDR_BITS),
            "m_axi_arid": Out(axi_id_bits), "m_axi_arlen": Out(8), "m_axi_arsize": Out(3),
            "m_axi_arburst": Out(2),
            # AXI4 read data channel
            "m_axi_rvalid": In(1), "m_axi_rready": Out(1), "m_axi_rdata": In(LINE_BITS),
            "m_axi_rid": In(axi_id_bits), "m_axi_rlast": In(1), "m_axi_rresp": In(2),
            # AXI4 write channels, tied idle
            "m_axi_awvalid": Out(1), "m_axi_awready": In(1), "m_axi_awaddr": Out(_ADDR_BITS),
            "m_axi_awid": Out(axi_id_bits), "m_axi_awlen": Out(8), "m_axi_awsize": Out(3),
            "m_axi_awburst": Out(2),
            "m_axi_wvalid": Out(1), "m_axi_wready": In(1), "m_axi_wdata": Out(LINE_BITS),
            "m_axi_wstrb": Out(LINE_BYTES), "m_axi_wlast": Out(1),
            "m_axi_bvalid": In(1), "m_axi_bready": Out(1), "m_axi_bid": In(axi_id_bits),
            "m_axi_bresp": In(2),
            # statistics
            "lookups": Out(32), "hits": Out(32), "lines_read": Out(32), "replays": Out(32),
            "giveups": Out(32),
        })

    @property
    def n_buckets(self) -> int:
        return self._n_buckets

    @property
    def buckets_off(self) -> int:
        return self._buckets_off

    @property
    def stash_off(self) -> int:
        return self._stash_off

    @property
    def n_stash(self) -> int:
        return self._n_stash

    @property
    def flows_off(self) -> int:
        return self._flows_off

    @property
    def max_outstanding(self) -> int:
        return self._max_outstanding

    @property
    def axi_id_bits(self) -> int:
        return self._axi_id_bits

    @property
    def tag_bits(self) -> int:
        return self._tag_bits

    @property
    def max_replays(self) -> int:
        return self._max_replays

    def elaborate(self, platform):
        m = Module()
        n = self._max_outstanding
        cb = (n - 1).bit_length()
        bb = (self._n_buckets - 1).bit_length()
        bo, so, fo, ns = self._buckets_off, self._stash_off, self._flows_off, self._n_stash
        sb = max(1, (ns - 1).bit_length()) if ns else 1
        rb = max(1, self._max_replays.bit_length())

        # -- AXI constants and tie-offs ------------------------------------------------
        m.d.comb += [
            self.m_axi_arlen.eq(0), self.m_axi_arsize.eq(_LINE_SHIFT), self.m_axi_arburst.eq(1),
            self.m_axi_rready.eq(1), self.m_axi_bready.eq(1),
            self.m_axi_awvalid.eq(0), self.m_axi_wvalid.eq(0),
            self.m_axi_awsize.eq(_LINE_SHIFT), self.m_axi_awburst.eq(1), self.m_axi_wlast.eq(1),
            self.wr.ready.eq(1),
        ]

        # -- context table (small per-lookup state in registers) -------------------------
        state = [Signal(2, name=f"c{c}_state") for c in range(n)]
        kind = [Signal(1, name=f"c{c}_kind") for c in range(n)]
        phase = [Signal(2, name=f"c{c}_phase") for c in range(n)]
        sidx = [Signal(sb, name=f"c{c}_sidx") for c in range(n)]
        line = [Signal(_LINE_INDEX_BITS, name=f"c{c}_line") for c in range(n)]
        mask = [Signal(SLOTS_PER_BUCKET, name=f"c{c}_mask") for c in range(n)]
        cur = [Signal(3, name=f"c{c}_cur") for c in range(n)]
        sig = [Signal(16, name=f"c{c}_sig") for c in range(n)]
        prim = [Signal(bb, name=f"c{c}_prim") for c in range(n)]
        sec = [Signal(bb, name=f"c{c}_sec") for c in range(n)]
        dirty = [Signal(name=f"c{c}_dirty") for c in range(n)]
        nrep = [Signal(rb, name=f"c{c}_nrep") for c in range(n)]
        hit = [Signal(name=f"c{c}_hit") for c in range(n)]
        index = [Signal(_PTR_BITS, name=f"c{c}_index") for c in range(n)]
        a_state, a_line, a_hit, a_index = Array(state), Array(line), Array(hit), Array(index)

        # Wide per-lookup state in memories: key and tag (written on acceptance), the
        # entry pointers of the last bucket read, the hit entry line.
        m.submodules.key_mem = key_mem = Memory(shape=FlowKey, depth=n, init=[])
        m.submodules.tag_mem = tag_mem = Memory(shape=self._tag_bits, depth=n, init=[])
        m.submodules.ptr_mem = ptr_mem = Memory(shape=data.ArrayLayout(_PTR_BITS, SLOTS_PER_BUCKET),
                                                depth=n, init=[])
        m.submodules.res_mem = res_mem = Memory(shape=LINE_BITS, depth=n, init=[])
        key_w, tag_w, ptr_w, res_w = (key_mem.write_port(), tag_mem.write_port(), ptr_mem.write_port(),
                                      res_mem.write_port())
        key_r, ptr_r = key_mem.read_port(), ptr_mem.read_port()
        tag_r, res_r = tag_mem.read_port(), res_mem.read_port()

        head = Signal(cb)
        tail = Signal(cb)
        hptr = Signal(cb)
        count = Signal(cb + 1)

        # -- input: reserve the tail context, store key and tag, hash -------------------
        m.submodules.hasher = hasher = FlowHasher(n_buckets=self._n_buckets)
        i_fire = Signal()
        m.d.comb += [
            self.i.ready.eq(count != n),
            i_fire.eq(self.i.valid & self.i.ready),
            hasher.key.eq(self.hash_key),
            hasher.i.valid.eq(i_fire),
            hasher.i.payload.eq(self.i.payload.key),
            hasher.o.ready.eq(1),           # the context was reserved on acceptance
            key_w.addr.eq(tail), key_w.data.eq(self.i.payload.key), key_w.en.eq(i_fire),
            tag_w.addr.eq(tail), tag_w.data.eq(self.i.payload.tag), tag_w.en.eq(i_fire),
        ]
        with m.If(i_fire):
            m.d.sync += tail.eq(tail + 1)
        h_fire = hasher.o.valid
        hk = hasher.o.payload
        with m.If(h_fire):
            m.d.sync += hptr.eq(hptr + 1)

        # -- write reports: mark contexts whose lines were written ----------------------
        in_stash = Signal()
        if ns:
            m.d.comb += in_stash.eq((self.wr.payload.line >= so) & (self.wr.payload.line < so + ns))
        touched = [Signal(name=f"c{c}_touched") for c in range(n)]
        for c in range(n):
            m.d.comb += touched[c].eq(self.wr.valid & (
                in_stash | (self.wr.payload.line == bo + prim[c]) | (self.wr.payload.line == bo + sec[c])))
        a_dirty_now = Array([dirty[c] | touched[c] for c in range(n)])

        # -- AR: the oldest context with a read to issue ----------------------------------
        # Oldest first (rotated at the head), because results retire in order: a young
        # lookup served early only waits in its context for the older ones anyway.
        issue = Cat(*[s == _ISSUE for s in state])
        rot = Signal(n)
        m.d.comb += rot.eq(Cat(issue, issue) >> head)
        age = Signal(cb)
        for c in reversed(range(n)):
            with m.If(rot[c]):
                m.d.comb += age.eq(c)
        grant = Signal(cb)
        m.d.comb += grant.eq(head + age)
        ar_load = Signal()
        m.d.comb += ar_load.eq(issue.any() & (~self.m_axi_arvalid | self.m_axi_arready))
        with m.If(ar_load):
            m.d.sync += [
                self.m_axi_arvalid.eq(1),
                self.m_axi_araddr.eq(a_line[grant] << _LINE_SHIFT),
                self.m_axi_arid.eq(grant),
            ]
        with m.Elif(self.m_axi_arready):
            m.d.sync += self.m_axi_arvalid.eq(0)

        # -- R: register the beat (memories read by RID meanwhile), decide next cycle ----
        s1_valid = Signal()
        s1_ctx = Signal(cb)
        s1_data = Signal(LINE_BITS)
        m.d.sync += s1_valid.eq(self.m_axi_rvalid)
        with m.If(self.m_axi_rvalid):
            m.d.sync += [s1_ctx.eq(self.m_axi_rid[:cb]), s1_data.eq(self.m_axi_rdata)]
        m.d.comb += [key_r.addr.eq(self.m_axi_rid[:cb]), ptr_r.addr.eq(self.m_axi_rid[:cb])]

        c_kind, c_phase, c_sidx = Array(kind)[s1_ctx], Array(phase)[s1_ctx], Array(sidx)[s1_ctx]
        c_mask, c_cur, c_sig = Array(mask)[s1_ctx], Array(cur)[s1_ctx], Array(sig)[s1_ctx]
        c_prim, c_sec, c_nrep = Array(prim)[s1_ctx], Array(sec)[s1_ctx], Array(nrep)[s1_ctx]

        bucket = Bucket(s1_data)
        entry = FlowEntry(s1_data)
        is_bucket = Signal()
        m.d.comb += is_bucket.eq(c_kind == _BUCKET)
        bmatch = Cat(*[s.valid & (s.sig == c_sig) for s in bucket.slots])
        cand = Signal(SLOTS_PER_BUCKET)
        m.d.comb += cand.eq(Mux(is_bucket, bmatch, c_mask))
        first = Signal(3)
        for j in reversed(range(SLOTS_PER_BUCKET)):
            with m.If(cand[j]):
                m.d.comb += first.eq(j)
        bptrs = Array([s.entry for s in bucket.slots])
        first_ptr = Signal(_PTR_BITS)
        m.d.comb += first_ptr.eq(Mux(is_bucket, bptrs[first], ptr_r.data[first]))
        ehit = Signal()
        m.d.comb += ehit.eq(~is_bucket & entry.valid & (entry.key.as_value() == key_r.data.as_value()))
        m.d.comb += [
            ptr_w.addr.eq(s1_ctx), ptr_w.en.eq(s1_valid & is_bucket),
            res_w.addr.eq(s1_ctx), res_w.data.eq(s1_data), res_w.en.eq(s1_valid & ehit),
        ]
        for j in range(SLOTS_PER_BUCKET):
            m.d.comb += ptr_w.data[j].eq(bucket.slots[j].entry)

        # The decision for the context of the beat: next read, hit, replay or miss.
        n_state, n_kind, n_phase = Signal(2), Signal(1), Signal(2)
        n_sidx, n_line, n_mask = Signal(sb), Signal(_LINE_INDEX_BITS), Signal(SLOTS_PER_BUCKET)
        n_cur, n_hit, n_index = Signal(3), Signal(), Signal(_PTR_BITS)
        n_restart, n_nrep = Signal(), Signal(rb)
        do_replay, do_giveup = Signal(), Signal()
        m.d.comb += [
            n_state.eq(_ISSUE), n_kind.eq(_BUCKET), n_phase.eq(c_phase), n_sidx.eq(c_sidx),
            n_mask.eq(c_mask), n_cur.eq(c_cur), n_nrep.eq(c_nrep), n_line.eq(0),
        ]
        with m.If(ehit):
            m.d.comb += [n_state.eq(_DONE), n_hit.eq(1), n_index.eq(ptr_r.data[c_cur])]
        with m.Elif(cand.any()):
            m.d.comb += [
                n_kind.eq(_ENTRY), n_line.eq(fo + first_ptr),
                n_mask.eq(cand & ~(Const(1, SLOTS_PER_BUCKET) << first)), n_cur.eq(first),
            ]
        with m.Elif(c_phase == _PRIMARY):
            m.d.comb += [n_phase.eq(_SECONDARY), n_line.eq(bo + c_sec)]
        if ns:
            with m.Elif(c_phase == _SECONDARY):
                m.d.comb += [n_phase.eq(_STASH), n_sidx.eq(0), n_line.eq(so)]
            if ns > 1:
                with m.Elif(c_sidx != ns - 1):
                    m.d.comb += [n_sidx.eq(c_sidx + 1), n_line.eq(so + c_sidx + 1)]
        with m.Elif(a_dirty_now[s1_ctx] & (c_nrep != self._max_replays)):
            m.d.comb += [
                do_replay.eq(1), n_restart.eq(1), n_phase.eq(_PRIMARY), n_line.eq(bo + c_prim),
                n_nrep.eq(c_nrep + 1),
            ]
        with m.Else():
            m.d.comb += [n_state.eq(_DONE), do_giveup.eq(a_dirty_now[s1_ctx])]

        # -- output: retire the head context when done -----------------------------------
        fire_a = Signal()
        o_hit = Signal()
        o_index = Signal(_PTR_BITS)
        m.d.comb += [
            fire_a.eq((a_state[head] == _DONE) & (~self.o.valid | self.o.ready)),
            tag_r.addr.eq(head), tag_r.en.eq(fire_a),
            res_r.addr.eq(head), res_r.en.eq(fire_a),
            self.o.payload.tag.eq(tag_r.data),
            self.o.payload.hit.eq(o_hit),
            self.o.payload.index.eq(o_index),
            self.o.payload.entry.eq(Mux(o_hit, res_r.data, 0)),
        ]
        with m.If(fire_a):
            m.d.sync += [
                self.o.valid.eq(1), o_hit.eq(a_hit[head]), o_index.eq(Mux(a_hit[head], a_index[head], 0)),
                head.eq(head + 1),
            ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += count.eq(count + i_fire - fire_a)

        # -- per-context register updates (the sources touch contexts in distinct states) -
        for c in range(n):
            with m.If(h_fire & (hptr == c)):
                m.d.sync += [
                    state[c].eq(_ISSUE), kind[c].eq(_BUCKET), phase[c].eq(_PRIMARY),
                    line[c].eq(bo + hk.primary), sig[c].eq(hk.sig), prim[c].eq(hk.primary),
                    sec[c].eq(hk.secondary), nrep[c].eq(0), hit[c].eq(0),
                ]
            with m.Elif(ar_load & (grant == c)):
                m.d.sync += state[c].eq(_WAIT)
            with m.Elif(s1_valid & (s1_ctx == c)):
                m.d.sync += [
                    state[c].eq(n_state), kind[c].eq(n_kind), phase[c].eq(n_phase), sidx[c].eq(n_sidx),
                    line[c].eq(n_line), mask[c].eq(n_mask), cur[c].eq(n_cur), hit[c].eq(n_hit),
                    index[c].eq(n_index), nrep[c].eq(n_nrep),
                ]
            with m.Elif(fire_a & (head == c)):
                m.d.sync += state[c].eq(_IDLE)
            # A write report wins over a (re)start's clear: at worst one extra replay.
            restart = (h_fire & (hptr == c)) | (s1_valid & (s1_ctx == c) & n_restart)
            with m.If(touched[c]):
                m.d.sync += dirty[c].eq(1)
            with m.Elif(restart):
                m.d.sync += dirty[c].eq(0)

        # -- statistics -------------------------------------------------------------------
        o_fire = self.o.valid & self.o.ready
        m.d.sync += [
            self.lookups.eq(self.lookups + o_fire),
            self.hits.eq(self.hits + (o_fire & o_hit)),
            self.lines_read.eq(self.lines_read + (self.m_axi_arvalid & self.m_axi_arready)),
            self.replays.eq(self.replays + (s1_valid & do_replay)),
            self.giveups.eq(self.giveups + (s1_valid & do_giveup)),
        ]
        return m
