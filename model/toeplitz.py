"""Keyed Toeplitz hash (RSS-compatible) and the cuckoo bucket/signature derivation.

Toeplitz: walk the input bits MSB-first (byte 0 bit 7 first); for every set
input bit ``i`` XOR in the ``width``-bit window of the key that starts at key
bit ``i`` (key bits also MSB-first).  With ``width=32`` and the standard
40-byte key this is the Microsoft RSS hash (verified against its suite in
``tests/test_toeplitz.py``).  A wider window extends the same hash: the top
32 bits of the 48-bit hash are the 32-bit hash.

Flow table hash (``flow_hash``): the 48-bit Toeplitz hash of the packed
:class:`~cxlnic.hdl.layouts.FlowKey` bytes (45 bytes, byte 0 = key bits 0..7)
under the 64-byte table key.  From it:

* ``rss``       = hash48 >> 16            (the 32-bit Toeplitz hash)
* ``sig``       = hash48 & 0xFFFF          (16-bit signature, stored in the slot)
* ``primary``   = rss & (n_buckets - 1)
* ``secondary`` = primary XOR alt_offset(sig), where
  alt_offset(sig) = (sig * 0x10001) & (n_buckets - 1), replaced by 1 when 0.

The secondary bucket depends only on the primary bucket and the signature,
and the map is an involution (bucket(b, sig) of the secondary gives the
primary back), so a slot can be moved to its other bucket without reading
its flow entry; the signature's bits are independent of the bucket-index
bits, unlike a 32-bit hash split in two.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["toeplitz", "Toeplitz", "FlowHash", "alt_bucket", "alt_offset"]


def toeplitz(key: bytes, data: bytes, width: int = 32) -> int:
    """Reference bit-serial Toeplitz hash (slow, obviously correct)."""
    kbits = len(key) * 8
    nbits = len(data) * 8
    if nbits + width - 1 > kbits:
        raise ValueError(f"Toeplitz key of {len(key)} bytes is too short for {len(data)} input "
                         f"bytes and a {width}-bit hash (needs {(nbits + width - 1 + 7) // 8})")
    k = int.from_bytes(key, "big")
    result = 0
    for i in range(nbits):
        if data[i // 8] >> (7 - i % 8) & 1:
            result ^= (k >> (kbits - i - width)) & ((1 << width) - 1)
    return result


class Toeplitz:
    """Table-driven Toeplitz hash for a fixed key, input length and width.

    One 256-entry table per input byte position; hashing is one lookup and
    one XOR per byte.  Equal to :func:`toeplitz` by construction (tested).
    """

    def __init__(self, key: bytes, nbytes: int, width: int = 32):
        kbits = len(key) * 8
        if nbytes * 8 + width - 1 > kbits:
            raise ValueError(f"Toeplitz key of {len(key)} bytes is too short for {nbytes} input "
                             f"bytes and a {width}-bit hash")
        self.key, self.nbytes, self.width = bytes(key), nbytes, width
        k = int.from_bytes(key, "big")
        mask = (1 << width) - 1
        self.tables = []
        for pos in range(nbytes):
            bitwin = [(k >> (kbits - (pos * 8 + b) - width)) & mask for b in range(8)]
            t = [0] * 256
            for v in range(1, 256):
                h = 0
                for b in range(8):
                    if v >> (7 - b) & 1:
                        h ^= bitwin[b]
                t[v] = h
            self.tables.append(t)

    def __call__(self, data: bytes) -> int:
        if len(data) != self.nbytes:
            raise ValueError(f"expected {self.nbytes} input bytes, got {len(data)}")
        h = 0
        for t, byte in zip(self.tables, data, strict=True):
            h ^= t[byte]
        return h


def alt_offset(sig: int, n_buckets: int) -> int:
    off = (sig * 0x10001) & (n_buckets - 1)
    return off or 1


def alt_bucket(bucket: int, sig: int, n_buckets: int) -> int:
    """The other candidate bucket of a slot in ``bucket`` with signature ``sig``."""
    return bucket ^ alt_offset(sig, n_buckets)


class FlowHash:
    """Bucket and signature derivation for a table geometry and hash key."""

    KEY_BYTES = 45  # packed FlowKey (360 bits)

    def __init__(self, hash_key: bytes, n_buckets: int):
        if n_buckets < 2 or n_buckets & (n_buckets - 1):
            raise ValueError(f"n_buckets = {n_buckets}: must be a power of two >= 2")
        self.n_buckets = n_buckets
        self._mask = n_buckets - 1
        self._t = _cached_toeplitz(bytes(hash_key), self.KEY_BYTES, 48)

    def hash48(self, key_bytes: bytes) -> int:
        return self._t(key_bytes)

    def locate(self, key_bytes: bytes) -> tuple[int, int, int]:
        """``(primary, secondary, sig)`` of a packed flow key."""
        h = self._t(key_bytes)
        sig = h & 0xFFFF
        prim = (h >> 16) & self._mask
        return prim, prim ^ alt_offset(sig, self.n_buckets), sig


@lru_cache(maxsize=16)
def _cached_toeplitz(key: bytes, nbytes: int, width: int) -> Toeplitz:
    return Toeplitz(key, nbytes, width)
