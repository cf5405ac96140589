"""The cuckoo flow table of the golden model: the host slow path's exact-match table writer.

Layout (fixed by :mod:`cxlnic.hdl.layouts`)
-------------------------------------------
* **Flow-entry pool**: one :class:`~cxlnic.hdl.layouts.FlowEntry` line per
  flow, at line ``flows_off + idx``.  An entry never moves for its whole life.
* **Buckets**: ``n_buckets`` :class:`~cxlnic.hdl.layouts.Bucket` lines, each
  holding 8 :class:`~cxlnic.hdl.layouts.BucketSlot` ``{valid, sig16, entry31}``.
* **Stash**: ``n_stash`` more Bucket lines, searched after both buckets, for
  the rare key for which no cuckoo path is found.

Why signature + pointer slots instead of entries inline in the bucket: a
FlowKey is 45 bytes, so an entry with its action and conntrack state fills a
whole 64-byte line, and a bucket holding entries inline would be a one-slot
bucket.  Two-choice cuckoo hashing with one slot per bucket saturates near 50 %
load; with 8 slots per bucket it reaches 95-98 %.  Eight 48-bit
``{sig, pointer}`` slots fit in one line, so a hit costs one bucket line (two
when the key sits in its secondary bucket) plus one entry line, the 16-bit
signature makes a wasted entry read rare (~8 slots / 65536 per bucket), and a
cuckoo move rewrites only bucket lines: the entries stay where they are, so
moving a flow is one small line write and never copies its 64-byte entry.

Hashing (:class:`~cxlnic.model.toeplitz.FlowHash`): ``locate(packed key)``
gives ``(primary, secondary, sig)``; :func:`~cxlnic.model.toeplitz.alt_bucket`
gives a slot's other bucket from the slot alone, so the search for a cuckoo
path reads bucket lines only.

Writes and visibility
---------------------
Every operation returns the ordered list of :class:`~cxlnic.model.memory.LineWrite`
that performs it: that list is the device interface (later streamed as CXL.mem
writes).  Each line write is atomic; the orders are chosen so that a lookup
executed between any two writes never misses a key that is present both
before and after the operation, and never sees a half-built entry:

* insert: the entry line first (unreferenced, so invisible), then the slot
  that publishes it; a cuckoo path is executed copy-before-delete, from the
  free end backwards, so a moving key is briefly in two buckets, never in none;
* delete: the slot first (unpublish), then the zeroed entry line.

A lookup that itself spans writes (reads its primary bucket, then a move
lands there from the secondary, then it reads the secondary) can still miss;
closing that window is the device's job (move epoch or in-flight-move check
with replay), not the write order's.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, fields
from functools import lru_cache

from amaranth.lib import data

from cxlnic.hdl.layouts import LINE_BYTES, SLOTS_PER_BUCKET, Bucket, BucketSlot, FlowEntry, FlowKey
from cxlnic.model.codec import codec
from cxlnic.model.memory import Geometry, LineWrite, TableMemory
from cxlnic.model.toeplitz import FlowHash, alt_offset

__all__ = [
    "FlowTable", "Op", "FlowTableStats", "FlowTableError", "DuplicateKey", "KeyNotFound", "TableFull",
    "TableInconsistent", "FENTRY", "FKEY", "BUCKET",
]

FENTRY = codec(FlowEntry)
FKEY = codec(FlowKey)
BUCKET = codec(Bucket)
_SLOT = codec(BucketSlot)

# Bit positions derived from the layouts (never hand-written), so the model
# follows any layout edit.  Lines are handled as 512-bit little-endian ints.
_E_VALID = FENTRY.field("valid").offset
_E_VALID_BIT = 1 << _E_VALID
_E_COUNTER = FENTRY.field("counter")
_E_COUNTER_MASK = ((1 << _E_COUNTER.width) - 1) << _E_COUNTER.offset
_E_KEY = data.Layout.cast(FlowEntry)["key"].offset
_KEY_BYTES = FKEY.nbytes
_KEY_MASK = (1 << FKEY.size) - 1

_S_VALID = _SLOT.field("valid").offset
_S_SIG = _SLOT.field("sig").offset
_S_SIG_MASK = (1 << _SLOT.field("sig").width) - 1
_S_ENTRY = _SLOT.field("entry").offset
_S_ENTRY_MASK = (1 << _SLOT.field("entry").width) - 1
_SLOT_MASK = (1 << _SLOT.size) - 1
#: Bits of a slot word that must equal ``valid=1, sig=<sig>`` for a candidate.
_S_MATCH = (1 << _S_VALID) | (_S_SIG_MASK << _S_SIG)
_SLOT_BASES = tuple(BUCKET.field(f"slots[{i}].valid").offset - _S_VALID for i in range(SLOTS_PER_BUCKET))
_LINE_ALL = (1 << (8 * LINE_BYTES)) - 1
_SLOT_CLEAR = tuple(_LINE_ALL ^ (_SLOT_MASK << b) for b in _SLOT_BASES)
_SLOTS = tuple(enumerate(_SLOT_BASES))


class FlowTableError(Exception):
    """Base of the flow table's refusals; raising one means nothing was written or changed."""


class DuplicateKey(FlowTableError):
    """Insert of a key that is already in the table."""


class KeyNotFound(FlowTableError, KeyError):
    """Delete or update of a key (or entry index) that is not in the table."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class TableFull(FlowTableError):
    """No free pool entry, or no cuckoo path within ``max_moves`` and no free stash slot."""


class TableInconsistent(AssertionError):
    """:meth:`FlowTable.check` found the image and the bookkeeping disagree."""


@dataclass(slots=True)
class Op:
    """One table operation: the entry index it concerns and its ordered line writes."""
    index: int
    writes: list[LineWrite]
    moves: int = 0      # cuckoo moves (bucket slot relocations, stash drains included)
    reads: int = 0      # lines read to plan the operation


@dataclass(slots=True)
class FlowTableStats:
    """Running counters of one :class:`FlowTable` (all lines counted are 64-byte lines)."""
    lookups: int = 0
    hits: int = 0
    lookup_reads: int = 0     # lines read by lookup()/lookup_entry()
    lines_read: int = 0       # every line this object read, lookups included
    inserts: int = 0
    deletes: int = 0
    updates: int = 0
    moves: int = 0
    writes: int = 0
    bfs_buckets: int = 0      # buckets read by cuckoo path searches
    stash_inserts: int = 0
    stash_drains: int = 0     # stash entries moved back into a bucket freed by a delete
    duplicates: int = 0
    full: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@lru_cache(maxsize=8)
def _alt_table(n_buckets: int) -> tuple[int, ...]:
    """``alt_offset`` of every signature: one tuple index per slot in the path search, not a call."""
    return tuple(alt_offset(sig, n_buckets) for sig in range(_S_SIG_MASK + 1))


def _key_of(key) -> tuple[int, bytes]:
    """``(packed int, packed bytes)`` of a FlowKey record or of 45 packed bytes."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        kb = bytes(key)
        if len(kb) != _KEY_BYTES:
            raise ValueError(f"packed flow key must be {_KEY_BYTES} bytes, got {len(kb)}")
        return int.from_bytes(kb, "little"), kb
    # Duck-typed: the ``key`` of a FlowEntry record is a FlowKey record of another generated class.
    try:
        ki = FKEY.pack(key)
    except AttributeError:
        raise TypeError(f"flow key must be a FlowKey record or {_KEY_BYTES} packed bytes, "
                        f"not {type(key).__name__}") from None
    return ki, ki.to_bytes(_KEY_BYTES, "little")


class FlowTable:
    """Cuckoo exact-match flow table over a :class:`~cxlnic.model.memory.TableMemory` image.

    Contract:

    * **Single writer.**  This object is the only writer of the flow, bucket
      and stash regions of ``mem``.  At construction it reads the valid bit of
      every flow entry line once (and the stash lines) to build its free list
      and occupancy counts; afterwards it trusts that bookkeeping.  An entry
      left valid but unreferenced (an operation interrupted between its
      writes) stays allocated until the image is rebuilt.
    * **Reads** go only through ``mem.read_line``; no table content is cached
      between operations, so the model reads exactly the bytes the device reads.
    * **Writes**: every mutating operation returns an :class:`Op` whose
      ``writes`` is the ordered list of line writes (see the module docstring
      for why each order keeps every present key findable after every single
      write).  With ``apply=True`` they are written to ``mem`` in order before
      returning; with ``apply=False`` the caller must write them, in order,
      before the next mutating operation (the free list and counts are updated
      as if they had been applied).
    * **Refusals** (:class:`DuplicateKey`, :class:`KeyNotFound`,
      :class:`TableFull`) are raised after planning and before anything is
      written: memory, free list and counts are unchanged.
    * A lookup reads the primary bucket, the secondary, then every stash line
      (so a miss costs ``2 + n_stash`` lines plus any signature false hits).
      A delete that frees a bucket slot also pulls back into it the first
      stash entry that belongs to that bucket, so the stash only holds keys
      that still have no room.
    * Free entries are allocated lowest index first, and the cuckoo path
      search explores primary before secondary and slots 0..7, so the same
      operation sequence always produces the same image.
    """

    def __init__(self, mem: TableMemory, geom: Geometry | None = None, *, max_moves: int = 8,
                 use_stash: bool = True):
        if max_moves < 0:
            raise ValueError(f"max_moves = {max_moves}: must be >= 0")
        self.stats = FlowTableStats()
        self._mem = mem
        self._read = mem.read_line
        if geom is None:
            geom = Geometry.read(mem)
            self.stats.lines_read += 2
        self.geom = geom
        self.max_moves = max_moves
        self.use_stash = use_stash
        self._hash = FlowHash(geom.hash_key, geom.n_buckets)
        self._alt = _alt_table(geom.n_buckets)
        self._bo = geom.buckets_off
        self._so = geom.stash_off
        self._fo = geom.flows_off
        self._stash_lines = tuple(range(geom.stash_off, geom.stash_off + geom.n_stash))
        self._counter_base = geom.n_counters - geom.n_flows
        if geom.n_flows > _S_ENTRY_MASK + 1:
            raise ValueError(f"n_flows = {geom.n_flows} does not fit the {_S_ENTRY_MASK.bit_length()}-bit "
                             "entry pointer of a bucket slot")

        live = []
        read = self._read
        for idx in range(geom.n_flows):
            if int.from_bytes(read(self._fo + idx), "little") & _E_VALID_BIT:
                live.append(idx)
        self._live = set(live)
        self._free = [i for i in range(geom.n_flows) if i not in self._live]  # sorted: already a heap
        n_stashed = 0
        for line in self._stash_lines:
            v = int.from_bytes(read(line), "little")
            n_stashed += sum((v >> b) >> _S_VALID & 1 for b in _SLOT_BASES)
        self.stats.lines_read += geom.n_flows + geom.n_stash
        self._n_stashed = n_stashed
        self._n_bucketed = len(self._live) - n_stashed

    # -- sizes ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._live)

    @property
    def load(self) -> float:
        """Occupied bucket slots / all bucket slots (the stash is not counted)."""
        return self._n_bucketed / (self.geom.n_buckets * SLOTS_PER_BUCKET)

    @property
    def capacity(self) -> int:
        """Most entries the table could ever hold (pool size or slots, stash included if used)."""
        slots = self.geom.n_buckets + (self.geom.n_stash if self.use_stash else 0)
        return min(self.geom.n_flows, slots * SLOTS_PER_BUCKET)

    @property
    def n_stashed(self) -> int:
        return self._n_stashed

    @property
    def free_entries(self) -> list[int]:
        """The free entry indices, ascending (a copy; for tests and diagnostics)."""
        return sorted(self._free)

    def _describe_load(self) -> str:
        g = self.geom
        return (f"{self._n_bucketed}/{g.n_buckets * SLOTS_PER_BUCKET} bucket slots used "
                f"(load {self.load:.2%}), stash {self._n_stashed}/{g.n_stash * SLOTS_PER_BUCKET}, "
                f"{len(self._live)}/{g.n_flows} entries")

    # -- lookup ---------------------------------------------------------------
    def _find(self, ki: int, kb: bytes):
        """Search like the device: primary, secondary, then stash lines.

        Returns ``(hit, reads)`` with ``hit = (idx, line, slot, line_value, entry_value)``
        or ``None``.
        """
        read = self._read
        p, s, sig = self._hash.locate(kb)
        want = (1 << _S_VALID) | (sig << _S_SIG)
        fo = self._fo
        reads = 0
        for line in (self._bo + p, self._bo + s) + self._stash_lines:
            v = int.from_bytes(read(line), "little")
            reads += 1
            for i, base in _SLOTS:
                w = v >> base
                if w & _S_MATCH == want:
                    idx = (w >> _S_ENTRY) & _S_ENTRY_MASK
                    e = int.from_bytes(read(fo + idx), "little")
                    reads += 1
                    if e & _E_VALID_BIT and (e >> _E_KEY) & _KEY_MASK == ki:
                        return (idx, line, i, v, e), reads
        return None, reads

    def lookup(self, key) -> int | None:
        """Entry index of ``key`` (FlowKey record or packed bytes), or None.

        Reads the primary bucket line, each entry line whose slot signature
        matches, then the secondary bucket and the stash lines likewise,
        stopping at the first entry that is valid and whose full key matches.
        """
        hit = self._counted_find(key)
        return None if hit is None else hit[0]

    def lookup_entry(self, key):
        """``(idx, FlowEntry record)`` of ``key``, or None (same reads as :meth:`lookup`)."""
        hit = self._counted_find(key)
        return None if hit is None else (hit[0], FENTRY.unpack(hit[4]))

    def _counted_find(self, key):
        hit, reads = self._find(*_key_of(key))
        st = self.stats
        st.lookups += 1
        st.lookup_reads += reads
        st.lines_read += reads
        if hit is not None:
            st.hits += 1
        return hit

    def __contains__(self, key) -> bool:
        return self.lookup(key) is not None

    def read_entry(self, idx: int):
        """The FlowEntry record at pool index ``idx`` (one line read, no validity check)."""
        self.stats.lines_read += 1
        return FENTRY.unpack(int.from_bytes(self._read(self._fo + idx), "little"))

    def entries(self) -> Iterator[tuple[int, object]]:
        """``(idx, FlowEntry record)`` of every live entry, ascending index (one line read each)."""
        for idx in sorted(self._live):
            yield idx, self.read_entry(idx)

    # -- writes ---------------------------------------------------------------
    def _commit(self, writes: list[LineWrite], apply: bool) -> None:
        self.stats.writes += len(writes)
        if apply:
            write = self._mem.write_line
            for w in writes:
                write(w.index, w.data)

    def _bucket_write(self, b: int, v: int) -> LineWrite:
        return LineWrite(self._bo + b, v.to_bytes(LINE_BYTES, "little"), f"bucket {b}")

    def _free_slot(self, v: int) -> int:
        for i, base in _SLOTS:
            if not (v >> base) >> _S_VALID & 1:
                return i
        return -1

    def _find_path(self, p: int, s: int, vp: int, vs: int):
        """Shortest cuckoo path (breadth-first over buckets) from a full primary/secondary.

        Returns ``(path, free_bucket, free_slot, values, reads)`` where ``path`` is
        ``[(b0, s0), ..., (b_{k-1}, s_{k-1})]``, the slot displaced at each step
        (``b0`` is p or s), or ``(None, ..., reads)`` when no bucket with a free slot is
        reachable within ``max_moves`` moves.  Visited buckets are never
        re-entered, so a bucket occurs at most once on the path and each of its
        writes can be built from the one value read here.
        """
        read = self._read
        bo = self._bo
        alt = self._alt
        values = {p: vp, s: vs}
        parent: dict[int, tuple[int, int]] = {}
        frontier = [p, s]
        reads = 0
        for _depth in range(self.max_moves):
            nxt = []
            for b in frontier:
                v = values[b]
                for i, base in _SLOTS:
                    nb = b ^ alt[(v >> (base + _S_SIG)) & _S_SIG_MASK]
                    if nb in values:
                        continue
                    nv = int.from_bytes(read(bo + nb), "little")
                    reads += 1
                    values[nb] = nv
                    parent[nb] = (b, i)
                    free = self._free_slot(nv)
                    if free >= 0:
                        path = []
                        at = nb
                        while at in parent:
                            at, j = parent[at]
                            path.append((at, j))
                        path.reverse()
                        return path, nb, free, values, reads
                    nxt.append(nb)
            frontier = nxt
        return None, -1, -1, values, reads

    def insert(self, entry, apply: bool = True, *, keep_counter: bool = False) -> Op:
        """Install FlowEntry record ``entry``; returns the :class:`Op` with its entry index.

        The table sets ``valid = 1`` and, unless ``keep_counter``, ``counter =
        n_counters - n_flows + idx`` (flow counters follow the rule counters);
        ``entry`` itself is not modified.  Writes, in order: the entry line
        (not yet referenced, hence invisible); then either one bucket line
        (first free slot of the primary, else of the secondary), or the
        ``k + 1`` bucket lines of the shortest ``k``-move cuckoo path, free end
        first (each move's destination before its source, the primary or
        secondary slot that receives the new key last), or one stash line.
        Raises :class:`DuplicateKey` or :class:`TableFull` with nothing written.
        """
        v = FENTRY.pack(entry)
        ki = (v >> _E_KEY) & _KEY_MASK
        kb = ki.to_bytes(_KEY_BYTES, "little")
        st = self.stats
        read = self._read
        bo = self._bo
        p, s, sig = self._hash.locate(kb)

        # Duplicate check and the bucket values the plan needs, in one pass (the same reads as a miss).
        want = (1 << _S_VALID) | (sig << _S_SIG)
        fo = self._fo
        reads = 0
        lines = (bo + p, bo + s) + self._stash_lines
        vals = []
        for line in lines:
            lv = int.from_bytes(read(line), "little")
            reads += 1
            vals.append(lv)
            for _i, base in _SLOTS:
                w = lv >> base
                if w & _S_MATCH == want:
                    e = int.from_bytes(read(fo + ((w >> _S_ENTRY) & _S_ENTRY_MASK)), "little")
                    reads += 1
                    if e & _E_VALID_BIT and (e >> _E_KEY) & _KEY_MASK == ki:
                        st.lines_read += reads
                        st.duplicates += 1
                        raise DuplicateKey(f"flow key already installed at entry "
                                           f"{(w >> _S_ENTRY) & _S_ENTRY_MASK}: {FKEY.unpack(ki)}")
        if not self._free:
            st.lines_read += reads
            st.full += 1
            raise TableFull(f"flow table full: entry pool exhausted; {self._describe_load()}")
        idx = self._free[0]
        if keep_counter:
            counter = (v & _E_COUNTER_MASK) >> _E_COUNTER.offset
        else:
            counter = self._counter_base + idx
            if not 0 <= counter <= _E_COUNTER_MASK >> _E_COUNTER.offset:
                st.lines_read += reads
                raise ValueError(f"flow entry {idx}: counter index {counter} (n_counters "
                                 f"{self.geom.n_counters} - n_flows {self.geom.n_flows} + {idx}) "
                                 f"does not fit the {_E_COUNTER.width}-bit counter field")
        v = (v & ~_E_COUNTER_MASK) | (counter << _E_COUNTER.offset) | _E_VALID_BIT
        word = (1 << _S_VALID) | (sig << _S_SIG) | (idx << _S_ENTRY)

        # Plan completely before writing anything, so a refusal leaves everything unchanged.
        vp, vs = vals[0], vals[1]
        moves = 0
        stash = -1
        bucket_writes: list[tuple[int, int]] = []   # (bucket, new value), in write order
        slot = self._free_slot(vp)
        if slot >= 0:
            bucket_writes.append((p, (vp & _SLOT_CLEAR[slot]) | (word << _SLOT_BASES[slot])))
        elif (slot := self._free_slot(vs)) >= 0:
            bucket_writes.append((s, (vs & _SLOT_CLEAR[slot]) | (word << _SLOT_BASES[slot])))
        else:
            path, fb, fs, values, bfs_reads = self._find_path(p, s, vp, vs)
            reads += bfs_reads
            st.bfs_buckets += bfs_reads
            if path is not None:
                # Backward: the free end receives the last displaced slot first, so every
                # displaced key is copied to its other bucket before its old slot is overwritten.
                dst_b, dst_s = fb, fs
                for b, i in reversed(path):
                    moved = (values[b] >> _SLOT_BASES[i]) & _SLOT_MASK
                    nv = (values[dst_b] & _SLOT_CLEAR[dst_s]) | (moved << _SLOT_BASES[dst_s])
                    values[dst_b] = nv
                    bucket_writes.append((dst_b, nv))
                    dst_b, dst_s = b, i
                bucket_writes.append((dst_b, (values[dst_b] & _SLOT_CLEAR[dst_s])
                                      | (word << _SLOT_BASES[dst_s])))
                moves = len(path)
            elif self.use_stash:
                for j, sv in enumerate(vals[2:]):
                    slot = self._free_slot(sv)
                    if slot >= 0:
                        stash = j
                        stash_value = (sv & _SLOT_CLEAR[slot]) | (word << _SLOT_BASES[slot])
                        break
            if path is None and stash < 0:
                st.lines_read += reads
                st.full += 1
                raise TableFull(f"flow table full: no cuckoo path within {self.max_moves} moves "
                                f"from buckets {p}/{s} and no free stash slot; {self._describe_load()}")

        writes = [LineWrite(fo + idx, v.to_bytes(LINE_BYTES, "little"), f"flow {idx}")]
        if stash >= 0:
            writes.append(LineWrite(self._so + stash, stash_value.to_bytes(LINE_BYTES, "little"),
                                    f"stash {stash}"))
            self._n_stashed += 1
            st.stash_inserts += 1
        else:
            bw = self._bucket_write
            writes += [bw(b, nv) for b, nv in bucket_writes]
            self._n_bucketed += 1
        heapq.heappop(self._free)
        self._live.add(idx)
        st.inserts += 1
        st.moves += moves
        st.lines_read += reads
        self._commit(writes, apply)
        return Op(idx, writes, moves, reads)

    def delete(self, key, apply: bool = True) -> Op:
        """Remove ``key``; returns the :class:`Op` with the freed entry index.

        Writes, in order: the bucket or stash line with the key's slot cleared
        (unpublish), then the zeroed entry line.  When the freed slot is in a
        bucket and a stash entry belongs to that bucket, the stash entry takes
        the slot in the same bucket write (so it is copied before its stash
        slot is cleared, which is the next write): the stash only holds keys
        that still have no room.  Raises :class:`KeyNotFound` with nothing written.
        """
        ki, kb = _key_of(key)
        hit, reads = self._find(ki, kb)
        st = self.stats
        if hit is None:
            st.lines_read += reads
            raise KeyNotFound(f"flow key not installed: {FKEY.unpack(ki)}")
        idx, line, slot, lv, _e = hit
        lv &= _SLOT_CLEAR[slot]
        in_stash = line >= self._so and line - self._so < self.geom.n_stash
        moves = 0
        drain = None
        if not in_stash and self._n_stashed:
            drain, drain_reads = self._stash_candidate(line - self._bo)
            reads += drain_reads
        writes = []
        if drain is not None:
            sline, sslot, sv, sword = drain
            lv |= sword << _SLOT_BASES[slot]
            writes.append(self._bucket_write(line - self._bo, lv))
            writes.append(LineWrite(sline, (sv & _SLOT_CLEAR[sslot]).to_bytes(LINE_BYTES, "little"),
                                    f"stash {sline - self._so}"))
            self._n_stashed -= 1
            st.stash_drains += 1
            moves = 1
        elif in_stash:
            writes.append(LineWrite(line, lv.to_bytes(LINE_BYTES, "little"), f"stash {line - self._so}"))
            self._n_stashed -= 1
        else:
            writes.append(self._bucket_write(line - self._bo, lv))
            self._n_bucketed -= 1
        writes.append(LineWrite(self._fo + idx, bytes(LINE_BYTES), f"flow {idx}"))
        self._live.discard(idx)
        heapq.heappush(self._free, idx)
        st.deletes += 1
        st.moves += moves
        st.lines_read += reads
        self._commit(writes, apply)
        return Op(idx, writes, moves, reads)

    def _stash_candidate(self, bucket: int):
        """First stash slot (line order, slot order) whose entry may live in ``bucket``.

        Reads the stash lines and the entry line of each occupied stash slot (the
        slot alone does not name its buckets).  Returns ``((line, slot, line value,
        slot word) | None, reads)``.
        """
        read = self._read
        reads = 0
        for line in self._stash_lines:
            sv = int.from_bytes(read(line), "little")
            reads += 1
            for i, base in _SLOTS:
                w = (sv >> base) & _SLOT_MASK
                if not w >> _S_VALID & 1:
                    continue
                e = int.from_bytes(read(self._fo + ((w >> _S_ENTRY) & _S_ENTRY_MASK)), "little")
                reads += 1
                p, s, _sig = self._hash.locate(((e >> _E_KEY) & _KEY_MASK).to_bytes(_KEY_BYTES, "little"))
                if bucket == p or bucket == s:
                    return (line, i, sv, w), reads
        return None, reads

    def _resolve(self, key_or_index) -> tuple[int, int, int]:
        """``(idx, entry value, reads)`` of a live entry named by key or by index."""
        if isinstance(key_or_index, int):
            idx = key_or_index
            if idx not in self._live:
                raise KeyNotFound(f"flow entry {idx} is not live")
            return idx, int.from_bytes(self._read(self._fo + idx), "little"), 1
        ki, kb = _key_of(key_or_index)
        hit, reads = self._find(ki, kb)
        if hit is None:
            self.stats.lines_read += reads
            raise KeyNotFound(f"flow key not installed: {FKEY.unpack(ki)}")
        return hit[0], hit[4], reads

    def _rewrite(self, idx: int, old: int, rec, reads: int, apply: bool) -> Op:
        new = FENTRY.pack(rec)
        if (new >> _E_KEY) & _KEY_MASK != (old >> _E_KEY) & _KEY_MASK:
            self.stats.lines_read += reads
            raise ValueError(f"flow entry {idx}: the key of an installed entry cannot change "
                             "(delete and insert instead)")
        if not new & _E_VALID_BIT:
            self.stats.lines_read += reads
            raise ValueError(f"flow entry {idx}: update cannot clear valid (use delete)")
        writes = [LineWrite(self._fo + idx, new.to_bytes(LINE_BYTES, "little"), f"flow {idx}")]
        self.stats.updates += 1
        self.stats.lines_read += reads
        self._commit(writes, apply)
        return Op(idx, writes, 0, reads)

    def update(self, key_or_index, apply: bool = True, **fields) -> Op:
        """Rewrite fields of a live entry in place: one entry line write.

        ``key_or_index`` is a FlowKey record, packed key bytes or an entry
        index; ``fields`` are top-level FlowEntry fields (``conn_state``,
        ``action``, ``last_seen``, ``peer``...).  The key and ``valid`` cannot
        change (ValueError); nothing is written on any error.
        """
        idx, old, reads = self._resolve(key_or_index)
        rec = FENTRY.unpack(old)
        for name, value in fields.items():
            if not hasattr(rec, name):
                self.stats.lines_read += reads
                raise AttributeError(f"FlowEntry has no field {name!r}")
            setattr(rec, name, value)
        return self._rewrite(idx, old, rec, reads, apply)

    def update_entry(self, idx: int, entry, apply: bool = True) -> Op:
        """Replace live entry ``idx`` by FlowEntry record ``entry`` (same key, valid): one line write."""
        idx, old, reads = self._resolve(idx)
        return self._rewrite(idx, old, entry, reads, apply)

    # -- consistency ----------------------------------------------------------
    def check(self) -> None:
        """Read the whole table and raise :class:`TableInconsistent` listing every violation.

        Checked: each valid slot points inside the pool to a valid entry whose
        key hashes to that bucket (primary or secondary, or any stash line)
        with the slot's signature; no entry is referenced twice; the live set
        is exactly the referenced entries and the valid entries of the pool;
        the free list is exactly the other entries; the occupancy counts agree.
        """
        g = self.geom
        read = self._read
        problems: list[str] = []
        referenced: dict[int, str] = {}
        valid_cache: dict[int, int] = {}
        n_bucketed = n_stashed = 0
        places = [(f"bucket {b}", self._bo + b, b) for b in range(g.n_buckets)]
        places += [(f"stash {j}", self._so + j, None) for j in range(g.n_stash)]
        for name, line, b in places:
            v = int.from_bytes(read(line), "little")
            for i, base in _SLOTS:
                w = (v >> base) & _SLOT_MASK
                if not w >> _S_VALID & 1:
                    continue
                where = f"{name} slot {i}"
                if b is None:
                    n_stashed += 1
                else:
                    n_bucketed += 1
                idx = (w >> _S_ENTRY) & _S_ENTRY_MASK
                if idx >= g.n_flows:
                    problems.append(f"{where}: entry {idx} outside the pool of {g.n_flows}")
                    continue
                if idx in referenced:
                    problems.append(f"{where}: entry {idx} also referenced by {referenced[idx]}")
                referenced[idx] = where
                e = valid_cache[idx] = int.from_bytes(read(self._fo + idx), "little")
                if not e & _E_VALID_BIT:
                    problems.append(f"{where}: entry {idx} is not valid")
                    continue
                p, s, sig = self._hash.locate(((e >> _E_KEY) & _KEY_MASK).to_bytes(_KEY_BYTES, "little"))
                if sig != (w >> _S_SIG) & _S_SIG_MASK:
                    problems.append(f"{where}: signature {(w >> _S_SIG) & _S_SIG_MASK:#06x} != {sig:#06x} "
                                    f"of entry {idx}")
                if b is not None and b not in (p, s):
                    problems.append(f"{where}: entry {idx} hashes to buckets {p}/{s}")
        pool_valid = set()
        for idx in range(g.n_flows):
            e = valid_cache.get(idx)
            if e is None:
                e = int.from_bytes(read(self._fo + idx), "little")
            if e & _E_VALID_BIT:
                pool_valid.add(idx)
        self.stats.lines_read += g.n_buckets + g.n_stash + g.n_flows + len(referenced)
        refs = set(referenced)
        if refs != self._live:
            problems.append(f"live set != referenced entries: only live {sorted(self._live - refs)[:8]}, "
                            f"only referenced {sorted(refs - self._live)[:8]}")
        if pool_valid != self._live:
            problems.append(f"live set != valid pool entries: only live "
                            f"{sorted(self._live - pool_valid)[:8]}, "
                            f"only valid {sorted(pool_valid - self._live)[:8]}")
        free = set(self._free)
        if len(free) != len(self._free) or free != set(range(g.n_flows)) - self._live:
            problems.append("free list != pool entries that are not live")
        if (n_bucketed, n_stashed) != (self._n_bucketed, self._n_stashed):
            problems.append(f"occupancy bucketed/stashed {n_bucketed}/{n_stashed} != bookkeeping "
                            f"{self._n_bucketed}/{self._n_stashed}")
        if problems:
            raise TableInconsistent(f"{len(problems)} flow table problem(s):\n  "
                                    + "\n  ".join(problems[:50]))
