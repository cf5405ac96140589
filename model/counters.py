"""Packet/byte counters as the device keeps them (the counter region).

In the hardware the counter block owns the counter lines; in pure-model runs
this object plays that part.  ``add`` is the per-packet update; ``writes``
renders the dirty lines in the table format so a model-only image holds the
same counter bytes the device would write back.
"""

from __future__ import annotations

from cxlnic.hdl.layouts import CounterLine
from cxlnic.model.codec import codec
from cxlnic.model.memory import Geometry, LineWrite, TableMemory

__all__ = ["CounterBank", "CLINE"]

CLINE = codec(CounterLine)


class CounterBank:
    """Exact packet and byte counts per counter index.

    Starts from the counter lines in ``mem`` (so reopening an image continues
    the counts); ``get`` is the exact live value.
    """

    def __init__(self, mem: TableMemory | None = None, geom: Geometry | None = None, *,
                 n_counters: int | None = None, counters_off: int = 0):
        if geom is not None:
            n_counters, counters_off = geom.n_counters, geom.counters_off
        if n_counters is None:
            raise ValueError("CounterBank needs a geometry or n_counters")
        self.n = n_counters
        self.off = counters_off
        self.packets = [0] * n_counters
        self.bytes = [0] * n_counters
        self._dirty: set[int] = set()
        if mem is not None:
            for line in range((n_counters + 3) // 4):
                raw = mem.read_line(counters_off + line)
                if any(raw):
                    rec = CLINE.from_bytes(raw)
                    for j, c in enumerate(rec.counters):
                        i = line * 4 + j
                        if i < n_counters:
                            self.packets[i], self.bytes[i] = c.packets, c.bytes

    def add(self, index: int, nbytes: int, packets: int = 1) -> None:
        if not 0 <= index < self.n:
            raise IndexError(f"counter {index} outside the counter region of {self.n}")
        self.packets[index] += packets
        self.bytes[index] += nbytes
        self._dirty.add(index // 4)

    def get(self, index: int) -> tuple[int, int]:
        return self.packets[index], self.bytes[index]

    def writes(self) -> list[LineWrite]:
        """The counter lines changed since the last call, in the table format."""
        out = []
        for line in sorted(self._dirty):
            rec = CLINE.new()
            for j in range(4):
                i = line * 4 + j
                if i < self.n:
                    rec.counters[j].packets = self.packets[i] & (2**64 - 1)
                    rec.counters[j].bytes = self.bytes[i] & (2**64 - 1)
            out.append(LineWrite(self.off + line, CLINE.to_bytes(rec), f"counter line {line}"))
        self._dirty.clear()
        return out
