"""Fast pack/unpack of table lines, derived from the Amaranth layouts.

For each layout a record class and its ``pack``/``unpack`` functions are
generated from the layout's field offsets and widths (walking
``amaranth.lib.data`` layouts recursively), so the model can never disagree
with the HDL about where a field sits.  ``tests/test_codec.py`` proves the
generated code equals ``Layout.const(...)`` and ``Layout.from_bits`` on random
values.

Records are plain mutable objects with one attribute per field; nested
structs are nested records and arrays are Python lists.  Unsigned fields
(enums included) are plain ints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["Codec", "FieldRangeError", "codec", "flat_fields"]


class FieldRangeError(ValueError):
    """A value does not fit the field it is packed into."""


@dataclass(frozen=True)
class FlatField:
    path: str      # dotted path, array elements as "slots[3].sig"
    offset: int    # bit offset from bit 0 of the layout
    width: int


def _is_aggregate(shape) -> bool:
    return isinstance(shape, (data.StructLayout, data.ArrayLayout)) or (
        isinstance(shape, type) and issubclass(shape, data.Struct))


def flat_fields(layout, prefix: str = "", base: int = 0) -> list[FlatField]:
    """Every leaf field of ``layout`` with its absolute bit offset and width."""
    layout = data.Layout.cast(layout)
    out: list[FlatField] = []
    if isinstance(layout, data.ArrayLayout):
        elem = layout.elem_shape
        size = data.Layout.cast(elem).size if _is_aggregate(elem) else Shape.cast(elem).width
        for i in range(layout.length):
            path = f"{prefix}[{i}]"
            if _is_aggregate(elem):
                out += flat_fields(elem, path, base + i * size)
            else:
                out.append(FlatField(path, base + i * size, size))
        return out
    for name, field in layout:
        path = f"{prefix}.{name}" if prefix else name
        if _is_aggregate(field.shape):
            out += flat_fields(field.shape, path, base + field.offset)
        else:
            out.append(FlatField(path, base + field.offset, Shape.cast(field.shape).width))
    return out


def _layout_name(layout) -> str:
    if isinstance(layout, type):
        return layout.__name__
    return getattr(layout, "__name__", None) or type(layout).__name__


class Codec:
    """Pack/unpack for one layout.

    ``unpack(int) -> record``; ``pack(record) -> int`` (raises
    :class:`FieldRangeError` naming the field when a value does not fit);
    ``from_bytes``/``to_bytes`` for line images (little-endian, bit 0 = bit 0
    of byte 0).
    """

    def __init__(self, layout, name: str | None = None):
        self.layout = data.Layout.cast(layout)
        self.name = name or _layout_name(layout)
        self.size = self.layout.size
        self.nbytes = (self.size + 7) // 8
        self.fields = flat_fields(self.layout)
        self._classes: dict[str, type] = {}
        self.record = self._make_class(layout, self.name)
        ns = self._classes | {"FieldRangeError": FieldRangeError}
        exec(self._gen_unpack(), ns)  # noqa: S102 - code generated from the layout
        exec(self._gen_pack(), ns)    # noqa: S102
        self.unpack = ns["unpack"]
        self.pack = ns["pack"]

    # -- record classes -------------------------------------------------
    def _make_class(self, layout, cname: str) -> type:
        # One record class per Struct class across all codecs, so a FlowKey
        # nested in a FlowEntry compares equal to a codec(FlowKey) record.
        shared_key = layout if isinstance(layout, type) else None
        if shared_key is not None and shared_key in _RECORD_CLASSES:
            cls = _RECORD_CLASSES[shared_key]
            self._register(cls)
            return cls
        layout = data.Layout.cast(layout)
        fields = []
        for name, field in layout:
            shape = field.shape
            if _is_aggregate(shape):
                sub = data.Layout.cast(shape)
                if isinstance(sub, data.ArrayLayout):
                    fields.append((name, list, dataclasses.field(
                        default_factory=self._array_factory(sub, f"{cname}_{name}"))))
                else:
                    is_class = isinstance(shape, type)
                    cls = self._make_class(shape if is_class else sub,
                                           _layout_name(shape) if is_class else f"{cname}_{name}")
                    fields.append((name, cls, dataclasses.field(default_factory=cls)))
            else:
                fields.append((name, int, dataclasses.field(default=0)))
        cls = dataclasses.make_dataclass(cname, fields, slots=True)
        self._classes[cls.__name__] = cls
        if shared_key is not None:
            _RECORD_CLASSES[shared_key] = cls
            cls._nested = dict(self._classes)  # classes its unpack code refers to
        return cls

    def _register(self, cls) -> None:
        self._classes.update(getattr(cls, "_nested", {}))
        self._classes[cls.__name__] = cls

    def _array_factory(self, layout: data.ArrayLayout, cname: str):
        elem = layout.elem_shape
        n = layout.length
        if _is_aggregate(elem):
            cls = self._make_class(elem, _layout_name(elem) if isinstance(elem, type) else cname)
            return lambda: [cls() for _ in range(n)]
        return lambda: [0] * n

    # -- code generation --------------------------------------------------
    def _unpack_expr(self, layout, base: int, cname: str) -> str:
        layout = data.Layout.cast(layout)
        if isinstance(layout, data.ArrayLayout):
            elem = layout.elem_shape
            if _is_aggregate(elem):
                size = data.Layout.cast(elem).size
                ename = _layout_name(elem) if isinstance(elem, type) else cname
                items = [self._unpack_expr(elem, base + i * size, ename) for i in range(layout.length)]
            else:
                w = Shape.cast(elem).width
                items = [f"(v >> {base + i * w}) & {(1 << w) - 1:#x}" for i in range(layout.length)]
            return "[" + ", ".join(items) + "]"
        args = []
        for name, field in layout:
            shape = field.shape
            if _is_aggregate(shape):
                sub = data.Layout.cast(shape)
                is_struct_class = isinstance(shape, type) and not isinstance(sub, data.ArrayLayout)
                sname = _layout_name(shape) if is_struct_class else f"{cname}_{name}"
                args.append(f"{name}={self._unpack_expr(shape, base + field.offset, sname)}")
            else:
                w = Shape.cast(shape).width
                args.append(f"{name}=(v >> {base + field.offset}) & {(1 << w) - 1:#x}")
        return f"{cname}(" + ", ".join(args) + ")"

    def _gen_unpack(self) -> str:
        return f"def unpack(v):\n    return {self._unpack_expr(self.layout, 0, self.name)}\n"

    def _leaf_accessors(self, layout, access: str, base: int, out: list):
        layout = data.Layout.cast(layout)
        if isinstance(layout, data.ArrayLayout):
            elem = layout.elem_shape
            size = data.Layout.cast(elem).size if _is_aggregate(elem) else Shape.cast(elem).width
            for i in range(layout.length):
                if _is_aggregate(elem):
                    self._leaf_accessors(elem, f"{access}[{i}]", base + i * size, out)
                else:
                    out.append((f"{access}[{i}]", base + i * size, size))
            return
        for name, field in layout:
            if _is_aggregate(field.shape):
                self._leaf_accessors(field.shape, f"{access}.{name}", base + field.offset, out)
            else:
                out.append((f"{access}.{name}", base + field.offset, Shape.cast(field.shape).width))

    def _gen_pack(self) -> str:
        leaves: list = []
        self._leaf_accessors(self.layout, "r", 0, leaves)
        lines = ["def pack(r):", "    v = 0"]
        for access, offset, width in leaves:
            mask = (1 << width) - 1
            path = f"{self.name}{access[1:]}"
            lines.append(f"    x = {access}")
            lines.append(f"    if not isinstance(x, int) or x < 0 or x > {mask:#x}:")
            lines.append(f"        raise FieldRangeError(f'{path} = {{x!r}} does not fit {width} bits')")
            lines.append(f"    v |= x << {offset}" if offset else "    v |= x")
        lines.append("    return v")
        return "\n".join(lines) + "\n"

    # -- bytes ------------------------------------------------------------
    def from_bytes(self, b: bytes | bytearray | memoryview):
        if len(b) != self.nbytes:
            raise ValueError(f"{self.name}: expected {self.nbytes} bytes, got {len(b)}")
        return self.unpack(int.from_bytes(b, "little"))

    def to_bytes(self, record) -> bytes:
        return self.pack(record).to_bytes(self.nbytes, "little")

    def new(self, **kw):
        """A zeroed record with the given top-level fields set."""
        r = self.record()
        for k, v in kw.items():
            if not hasattr(r, k):
                raise AttributeError(f"{self.name} has no field {k!r}")
            setattr(r, k, v)
        return r

    def field(self, path: str) -> FlatField:
        for f in self.fields:
            if f.path == path:
                return f
        raise KeyError(f"{self.name} has no field {path!r}")

    def get(self, value: int, path: str) -> int:
        """One leaf field out of a packed value, without unpacking the rest."""
        f = self.field(path)
        return (value >> f.offset) & ((1 << f.width) - 1)


_CACHE: dict[int, Codec] = {}
_RECORD_CLASSES: dict[type, type] = {}


def codec(layout) -> Codec:
    """The (cached) codec of ``layout``."""
    key = id(layout)
    c = _CACHE.get(key)
    if c is None:
        c = _CACHE[key] = Codec(layout)
    return c
