"""Table memory: the one interface through which the model reads and writes tables.

Addresses are *line indices* (64-byte lines) from the image base; a CXL
adapter turns them into host physical addresses (base + 64 * index).  Every
table operation of the model produces an ordered list of :class:`LineWrite`
— that list is the device interface: applied to a bytearray here, streamed
as CXL.mem MemWr later.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from cxlnic.config import NicConfig
from cxlnic.hdl.layouts import FORMAT_VERSION, LINE_BYTES, MAGIC, SLOTS_PER_BUCKET, HashKeyLine, Header
from cxlnic.model.codec import codec

__all__ = [
    "LineWrite", "TableMemory", "BytearrayMemory", "FormatError", "Geometry",
    "format_image", "apply_writes",
]

ZERO_LINE = bytes(LINE_BYTES)


class FormatError(ValueError):
    """The memory image is not a cxlnic table image this model can read."""


@dataclass(frozen=True, slots=True)
class LineWrite:
    """One 64-byte line write: the unit of atomicity of the device interface."""
    index: int
    data: bytes
    what: str = ""    # e.g. "bucket 17", for traces and error messages

    def __post_init__(self):
        if len(self.data) != LINE_BYTES:
            raise ValueError(f"LineWrite {self.what or self.index}: {len(self.data)} bytes, not {LINE_BYTES}")


class TableMemory(abc.ABC):
    """What the model needs of a memory: read and write whole lines."""

    @abc.abstractmethod
    def read_line(self, index: int) -> bytes: ...

    @abc.abstractmethod
    def write_line(self, index: int, data: bytes) -> None: ...

    @property
    @abc.abstractmethod
    def n_lines(self) -> int: ...

    def apply(self, writes) -> None:
        for w in writes:
            self.write_line(w.index, w.data)


class BytearrayMemory(TableMemory):
    """A flat bytearray of lines (pure-Python runs, the golden reference)."""

    def __init__(self, n_lines: int):
        self.buf = bytearray(n_lines * LINE_BYTES)
        self.reads = 0
        self.writes = 0

    @property
    def n_lines(self) -> int:
        return len(self.buf) // LINE_BYTES

    def _check(self, index: int) -> int:
        if not 0 <= index < self.n_lines:
            raise IndexError(f"line {index} outside memory of {self.n_lines} lines")
        return index * LINE_BYTES

    def read_line(self, index: int) -> bytes:
        a = self._check(index)
        self.reads += 1
        return bytes(self.buf[a:a + LINE_BYTES])

    def write_line(self, index: int, data: bytes) -> None:
        if len(data) != LINE_BYTES:
            raise ValueError(f"write to line {index}: {len(data)} bytes, not {LINE_BYTES}")
        a = self._check(index)
        self.writes += 1
        self.buf[a:a + LINE_BYTES] = data


def apply_writes(mem: TableMemory, writes) -> None:
    mem.apply(writes)


@dataclass(frozen=True)
class Geometry:
    """The image geometry as read back from a header line (offsets in lines)."""
    rules_off: int
    n_rules: int
    cam_entries: int
    actions_off: int
    n_actions: int
    buckets_off: int
    n_buckets: int
    stash_off: int
    n_stash: int
    flows_off: int
    n_flows: int
    counters_off: int
    n_counters: int
    tenants_off: int
    n_tenants: int
    hashkey_off: int
    hash_key: bytes

    @classmethod
    def read(cls, mem: TableMemory) -> Geometry:
        """Read and validate the header (and hash key line) of an image."""
        if mem.n_lines < 2:
            raise FormatError(f"memory of {mem.n_lines} lines cannot hold a header")
        h = codec(Header).from_bytes(mem.read_line(0))
        if h.magic != MAGIC:
            raise FormatError(f"line 0: bad magic {h.magic:#010x} (expected {MAGIC:#010x}, 'CXLN'): "
                              "not a cxlnic table image")
        if h.version != FORMAT_VERSION:
            raise FormatError(f"line 0: table format version {h.version} is not supported "
                              f"(this model reads version {FORMAT_VERSION})")
        if h.slots_per_bucket != SLOTS_PER_BUCKET:
            raise FormatError(f"line 0: slots_per_bucket {h.slots_per_bucket}, expected {SLOTS_PER_BUCKET}")
        if h.n_buckets < 2 or h.n_buckets & (h.n_buckets - 1):
            raise FormatError(f"line 0: n_buckets {h.n_buckets} is not a power of two >= 2")
        if h.cam_entries > h.n_rules:
            raise FormatError(f"line 0: cam_entries {h.cam_entries} > n_rules {h.n_rules}")
        regions = {
            "hash key": (h.hashkey_off, 1), "tenants": (h.tenants_off, h.n_tenants),
            "rules": (h.rules_off, h.n_rules), "actions": (h.actions_off, h.n_actions),
            "buckets": (h.buckets_off, h.n_buckets), "stash": (h.stash_off, h.n_stash),
            "flows": (h.flows_off, h.n_flows), "counters": (h.counters_off, (h.n_counters + 3) // 4),
        }
        spans = []
        for name, (off, n) in regions.items():
            if off < 1 or off + n > mem.n_lines:
                raise FormatError(f"line 0: {name} region [{off}, {off + n}) lies outside the header-free "
                                  f"part of a memory of {mem.n_lines} lines")
            if n:
                spans.append((off, off + n, name))
        spans.sort()
        for (a0, a1, an), (b0, b1, bn) in zip(spans, spans[1:], strict=False):
            if b0 < a1:
                raise FormatError(f"line 0: regions {an} [{a0}, {a1}) and {bn} [{b0}, {b1}) overlap")
        key = bytes(codec(HashKeyLine).from_bytes(mem.read_line(h.hashkey_off)).key)
        return cls(
            rules_off=h.rules_off, n_rules=h.n_rules, cam_entries=h.cam_entries,
            actions_off=h.actions_off, n_actions=h.n_actions,
            buckets_off=h.buckets_off, n_buckets=h.n_buckets,
            stash_off=h.stash_off, n_stash=h.n_stash,
            flows_off=h.flows_off, n_flows=h.n_flows,
            counters_off=h.counters_off, n_counters=h.n_counters,
            tenants_off=h.tenants_off, n_tenants=h.n_tenants,
            hashkey_off=h.hashkey_off, hash_key=key,
        )


def format_image(cfg: NicConfig) -> list[LineWrite]:
    """The line writes that turn zeroed memory into an empty table image."""
    r = cfg.regions()
    h = codec(Header).new(
        magic=MAGIC, version=FORMAT_VERSION, slots_per_bucket=SLOTS_PER_BUCKET,
        rules_off=r["rules"][0], n_rules=cfg.n_rules, cam_entries=cfg.cam_entries,
        actions_off=r["actions"][0], n_actions=cfg.n_actions,
        buckets_off=r["buckets"][0], n_buckets=cfg.n_buckets,
        stash_off=r["stash"][0], n_stash=cfg.n_stash,
        flows_off=r["flows"][0], n_flows=cfg.flows,
        counters_off=r["counters"][0], n_counters=cfg.counters,
        tenants_off=r["tenants"][0], n_tenants=cfg.n_tenants,
        hashkey_off=r["hashkey"][0],
    )
    hk = codec(HashKeyLine).new(key=list(cfg.hash_key))
    return [
        LineWrite(r["hashkey"][0], codec(HashKeyLine).to_bytes(hk), "hash key"),
        LineWrite(0, codec(Header).to_bytes(h), "header"),
    ]
