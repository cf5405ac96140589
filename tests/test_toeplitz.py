"""Toeplitz hash against the Microsoft RSS verification suite, and the bucket derivation."""

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxlnic.config import DEFAULT_HASH_KEY, MS_RSS_KEY
from cxlnic.model.toeplitz import FlowHash, Toeplitz, alt_bucket, toeplitz

VECTORS = json.loads((Path(__file__).parent / "data" / "rss_toeplitz_vectors.json").read_text())
KEY = bytes.fromhex(VECTORS["key_hex"])
CASES = [(fam, v) for fam in ("ipv4", "ipv6") for v in VECTORS[fam]]


def _inputs(v):
    l3 = ipaddress.ip_address(v["src"]).packed + ipaddress.ip_address(v["dst"]).packed
    return l3, l3 + v["sport"].to_bytes(2, "big") + v["dport"].to_bytes(2, "big")


def test_vector_key_is_our_default():
    assert KEY == MS_RSS_KEY and DEFAULT_HASH_KEY[:40] == MS_RSS_KEY


@pytest.mark.parametrize("fam,v", CASES, ids=[f"{f}-{v['src']}" for f, v in CASES])
def test_microsoft_rss_vectors(fam, v):
    l3, l4 = _inputs(v)
    assert toeplitz(KEY, l3) == int(v["l3"], 16)
    assert toeplitz(KEY, l4) == int(v["l3l4"], 16)
    assert Toeplitz(KEY, len(l4))(l4) == int(v["l3l4"], 16)
    # the 64-byte table key extends the MS key: same 32-bit hash, and hash48's top bits are it
    assert Toeplitz(DEFAULT_HASH_KEY, len(l4), 48)(l4) >> 16 == int(v["l3l4"], 16)


@given(st.binary(min_size=45, max_size=45))
def test_table_driven_equals_bit_serial(data):
    assert Toeplitz(DEFAULT_HASH_KEY, 45, 48)(data) == toeplitz(DEFAULT_HASH_KEY, data, 48)


def test_toeplitz_is_linear():
    # Toeplitz is GF(2)-linear in its input: h(a ^ b) == h(a) ^ h(b)
    a, b = bytes(range(45)), bytes(range(100, 145))
    t = Toeplitz(DEFAULT_HASH_KEY, 45, 48)
    assert t(bytes(x ^ y for x, y in zip(a, b, strict=True))) == t(a) ^ t(b)


def test_key_too_short_is_a_clear_error():
    with pytest.raises(ValueError, match="too short"):
        Toeplitz(MS_RSS_KEY, 45, 48)


@given(st.binary(min_size=45, max_size=45), st.sampled_from([2, 4, 64, 1 << 16, 1 << 20]))
def test_bucket_derivation(data, n):
    fh = FlowHash(DEFAULT_HASH_KEY, n)
    p, s, sig = fh.locate(data)
    h = toeplitz(DEFAULT_HASH_KEY, data, 48)
    assert sig == h & 0xFFFF and p == (h >> 16) % n
    assert s != p and 0 <= s < n
    assert alt_bucket(s, sig, n) == p and alt_bucket(p, sig, n) == s


def test_flowhash_rejects_bad_geometry():
    with pytest.raises(ValueError, match="power of two"):
        FlowHash(DEFAULT_HASH_KEY, 12)
