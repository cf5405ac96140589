"""The model's derived pack/unpack agrees with Amaranth's own Layout.const / from_bits."""

import re

import pytest
from amaranth.hdl import Shape
from amaranth.lib import data, enum
from hypothesis import given
from hypothesis import strategies as st

from cxlnic.hdl import layouts as L
from cxlnic.model.codec import FieldRangeError, codec, flat_fields

ALL = dict(L.LINE_LAYOUTS, flowkey=L.FlowKey, packetkey=L.PacketKey)


def _enum_leaves(layout, prefix="", out=None):
    """Map leaf path -> enum class for enum-shaped leaves (only members are legal there)."""
    out = {} if out is None else out
    layout = data.Layout.cast(layout)
    if isinstance(layout, data.ArrayLayout):
        for i in range(layout.length):
            if not isinstance(layout.elem_shape, (int, Shape)):
                _enum_leaves(layout.elem_shape, f"{prefix}[{i}]", out)
        return out
    for name, f in layout:
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(f.shape, enum.EnumType):
            out[path] = f.shape
        elif not isinstance(f.shape, (int, Shape)):
            _enum_leaves(f.shape, path, out)
    return out


def _resolve(view, path):
    for part in re.findall(r"[A-Za-z_]\w*|\[\d+\]", path):
        if part.startswith("["):
            view = view[int(part[1:-1])]
        elif part.startswith("_") and isinstance(view, data.Const):
            view = view[part]  # Amaranth reserves underscore names for indexing
        else:
            view = getattr(view, part)
    return int(view)


def _random_value(layout, draw):
    enums = _enum_leaves(layout)
    v = 0
    for f in flat_fields(layout):
        if f.path in enums:
            x = draw(st.sampled_from([int(m.value) for m in enums[f.path]]))
        else:
            x = draw(st.integers(0, (1 << f.width) - 1))
        v |= x << f.offset
    return v


def _as_dict(record):
    """Record -> nested dict/list in the form Layout.const accepts."""
    if isinstance(record, list):
        return [_as_dict(x) for x in record]
    if hasattr(record, "__slots__"):
        return {k: _as_dict(getattr(record, k)) for k in record.__slots__}
    return record


def _const_init(layout, d):
    """Layout.const wants enum members for enum fields."""
    enums = _enum_leaves(layout)

    def walk(x, path):
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else k) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(x)]
        return enums[path](x) if path in enums else x
    return walk(d, "")


@pytest.mark.parametrize("name", sorted(ALL))
@given(dd=st.data())
def test_unpack_matches_from_bits(name, dd):
    layout = ALL[name]
    v = _random_value(layout, dd.draw)
    c = codec(layout)
    rec = c.unpack(v)
    view = data.Layout.cast(layout).from_bits(v)
    for f in c.fields:
        assert _resolve(view, f.path) == c.get(v, f.path), f.path
        assert _resolve(rec, f.path) == (v >> f.offset) & ((1 << f.width) - 1), f.path


@pytest.mark.parametrize("name", sorted(ALL))
@given(dd=st.data())
def test_pack_matches_layout_const(name, dd):
    layout = ALL[name]
    v = _random_value(layout, dd.draw)
    c = codec(layout)
    rec = c.unpack(v)
    const = data.Layout.cast(layout).const(_const_init(layout, _as_dict(rec)))
    assert c.pack(rec) == const.as_value().value == v
    assert c.from_bytes(c.to_bytes(rec)) == rec


def test_field_offsets_come_from_layout():
    # Independent check of two offsets against the Struct's own field table.
    fields = dict(data.Layout.cast(L.FlowEntry))
    assert codec(L.FlowEntry).field("key.tenant").offset == fields["key"].offset
    slot = dict(data.Layout.cast(L.BucketSlot))
    assert codec(L.Bucket).field("slots[1].sig").offset == 48 + slot["sig"].offset


def test_pack_rejects_out_of_range_and_names_field():
    c = codec(L.Bucket)
    rec = c.new()
    rec.slots[5].sig = 1 << 16
    with pytest.raises(FieldRangeError, match=r"Bucket\.slots\[5\]\.sig = 65536 does not fit 16 bits"):
        c.pack(rec)
    rec.slots[5].sig = -1
    with pytest.raises(FieldRangeError, match="sig"):
        c.pack(rec)


def test_every_line_layout_is_one_line():
    for name, layout in L.LINE_LAYOUTS.items():
        assert data.Layout.cast(layout).size == L.LINE_BITS, name
        assert codec(layout).nbytes == L.LINE_BYTES


def test_nested_records_share_the_struct_class():
    entry = codec(L.FlowEntry).unpack(0)
    assert type(entry.key) is codec(L.FlowKey).record
    assert entry.key == codec(L.FlowKey).new()


def test_new_rejects_unknown_field():
    with pytest.raises(AttributeError, match="no field 'bogus'"):
        codec(L.FlowEntry).new(bogus=1)
