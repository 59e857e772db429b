"""Seeded generators of hostile-but-small data.pkl payloads for the differential test against
torch: a grammar of pickle programs, and 1-2 byte mutations of a real `torch.save` data.pkl.

The grammar writes opcodes (protocol 2-5 headers) over allow-listed and refused globals,
REDUCE/NEWOBJ/BUILD/SETITEM(S)/APPEND(S)/MARK/memo operations and tensor records, mostly
well-formed and sometimes not (odd SETITEMS, unhashable keys, wrong arity or argument types,
BUILD states of the wrong type or the instance itself, out-of-bounds tensor views, storages
on devices this host lacks), and quantized and nested tensors followed by more objects
(torch's unpickler over meta storages has no kernels for them: the pass must go on past
them, issue 20). The calls
ordinary files hold (Size, device, complex, bytes, bytearray, set, Counter, Parameters) come
with ordinary and odd arguments: the static run judges those alone (`plain_calls`). Sizes
stay small: the point is the verdict, not the allocator.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections import OrderedDict

import torch

ALLOWED = [
    "torch.Size", "torch.device", "builtins.set", "builtins.complex", "_codecs.encode",
    "collections.OrderedDict", "collections.Counter", "torch._utils._rebuild_tensor_v2",
    "torch._tensor._rebuild_from_type_v2", "torch.nn.parameter.Parameter", "torch.Tensor",
    "torch.float32", "torch.int64", "builtins.bytearray", "torch._utils._rebuild_parameter",
    "torch.serialization._get_layout", "torch.FloatStorage", "torch.LongStorage",
    "torch._utils._rebuild_qtensor", "torch._utils._rebuild_nested_tensor",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor", "torch.per_tensor_affine",
]  # fmt: skip
REFUSED = [
    "datetime.date", "collections.deque", "__builtin__.intern", "builtins.getattr",
    "os.getcwd", "argparse.Namespace", "builtins.print",
]  # fmt: skip
ODD_TEXTS = [
    "cpu", "cuda", "cuda:1", "cuda:-1", "meta", "bogus", "zz", "1+2j", "\u0100", "a\xff", "",
    "latin1", "inf", "(1+2j)", "cpu:0",
]  # fmt: skip
STORAGE_KEY_BYTES = 32  # data/0 of the template archive: 8 float32 / 4 int64


def _uni(text: str | bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return b"X" + struct.pack("<I", len(raw)) + raw


def _global(name: str) -> bytes:
    module, _, attr = name.rpartition(".")
    return b"c" + module.encode() + b"\n" + attr.encode() + b"\n"


LONG_KEY = "k" * 100  # a storage key past the 80 characters the auditor keeps of a string
# Storage keys torch.save never writes, which torch.load reads from member f"data/{key}" and
# caches under the key itself (`data_members` holds a member for some of them).
ODD_KEYS = [
    _uni("7"),  # no such member
    b"K\x00",  # 0: member data/0
    b"K\x07",  # 7: no member
    b"\x88",  # True: member data/True
    b"\x89",  # False: no member
    b"U\x010",  # SHORT_BINSTRING "0": text, member data/0
    _global("_codecs.encode") + _uni("0") + _uni("latin1") + b"\x86R",  # b"0": data/b'0'
    _global("_codecs.encode") + _uni("7") + _uni("latin1") + b"\x86R",  # b"7": no member
    _uni(LONG_KEY),  # a member of that name
    _uni(LONG_KEY + "k"),  # no member
    b"K\x00\x85",  # (0,): no member (data/(0,))
    b"]",  # a list: unhashable
]


def data_members(members: dict[str, bytes]) -> dict[str, bytes]:
    """`members` (an archive holding data/0) with copies of data/0 for the odd keys that
    name one (`ODD_KEYS`)."""
    storage = members["data/0"]
    return {**members, **{f"data/{key}": storage for key in ("True", "b'0'", LONG_KEY)}}


class Grammar:
    """`program()` is one data.pkl. Every choice comes from the seeded `random.Random`."""

    def __init__(self, rng: random.Random, *, ordinary: bool = False) -> None:
        """`ordinary`: each program is a dict of 1-4 ordinary calls (`_ordinary_call`), the
        shapes the static run judges alone."""
        self.rng = rng
        self.memo: list[int] = []
        self.ordinary = ordinary

    def program(self) -> bytes:
        rng = self.rng
        self.memo = []
        proto = rng.choice([2, 2, 2, 2, 3, 4, 5])
        if self.ordinary:
            proto = 2
            entries = [_uni(f"k{i}") + self._ordinary_call(1) for i in range(rng.randint(1, 4))]
            return b"\x80\x02}(" + b"".join(entries) + b"u."
        body = self.value(0)
        if rng.random() < 0.1:
            body += rng.choice([b"0", b"2", b"a", b"s", b"b", b"e", b"u", b"R", b"t", b"("])
            body += self.value(2)
        return b"\x80" + bytes([proto]) + body + b"."

    def value(self, depth: int) -> bytes:
        rng = self.rng
        if depth > 3:
            return self.primitive()
        kind = rng.choices(
            ["primitive", "tuple", "list", "dict", "call", "newobj", "build", "tensor",
             "memo", "persid", "setitem_target", "no_kernel_then", "ordinary_call"],
            weights=[6, 3, 3, 4, 6, 1, 2, 3, 2, 1, 1, 2, 5],
        )[0]  # fmt: skip
        out = getattr(self, "_" + kind)(depth + 1)
        if rng.random() < 0.2 and len(self.memo) < 250:
            index = len(self.memo)
            self.memo.append(index)
            out += b"q" + bytes([index])
        return out

    def primitive(self) -> bytes:
        rng = self.rng
        choice = rng.randrange(12)
        if choice == 0:
            return b"K" + bytes([rng.randrange(256)])
        if choice == 1:
            return b"M" + struct.pack("<H", rng.randrange(300))
        if choice == 2:
            return b"J" + struct.pack("<i", rng.randrange(-(1 << 8), 1 << 10))
        if choice == 3:
            return b"G" + struct.pack(">d", rng.uniform(-4, 4))
        if choice == 4:
            return _uni(rng.choice(["cpu", "cuda:0", "meta", "abc", "zz", "1+2j", "latin1", "x"]))
        if choice == 5:
            return _uni(rng.choice(["nope", "torch.strided", "torch.sparse_coo", "ab\udc80"]))
        if choice == 6:
            raw = rng.choice([b"ab", b"\xff\xfe", b""])
            return b"U" + bytes([len(raw)]) + raw
        if choice == 7:
            return rng.choice([b"N", b"\x88", b"\x89"])
        if choice == 8:
            return rng.choice([b")", b"]", b"}", b"\x8f"])
        if choice == 9:
            return b"\x8a\x01" + bytes([rng.randrange(256)])  # LONG1
        if choice == 10 and self.memo:
            return b"h" + bytes([rng.choice(self.memo)])
        return b"K" + bytes([rng.randrange(4)])

    def _primitive(self, depth: int) -> bytes:
        return self.primitive()

    def _items(self, depth: int, low: int = 0, high: int = 3) -> list[bytes]:
        return [self.value(depth) for _ in range(self.rng.randint(low, high))]

    def _tuple(self, depth: int) -> bytes:
        items = self._items(depth, 0, 4)
        if 1 <= len(items) <= 3 and self.rng.random() < 0.5:
            return b"".join(items) + bytes([0x84 + len(items)])
        return b"(" + b"".join(items) + b"t"

    def _list(self, depth: int) -> bytes:
        out = b"]"
        if self.rng.random() < 0.5:
            return out + b"(" + b"".join(self._items(depth)) + b"e"
        return out + b"".join(item + b"a" for item in self._items(depth, 0, 2))

    def _dict(self, depth: int) -> bytes:
        rng = self.rng
        flat = []
        for _ in range(rng.randint(0, 3)):
            key = self.primitive() if rng.random() < 0.8 else self._list(depth)
            flat += [key, self.value(depth)]
        if rng.random() < 0.1:
            flat.append(self.primitive())  # an odd count
        if rng.random() < 0.5 or len(flat) % 2:
            return b"}(" + b"".join(flat) + b"u"
        return b"}" + b"".join(flat[i] + flat[i + 1] + b"s" for i in range(0, len(flat), 2))

    def _args(self, depth: int) -> bytes:
        return self._tuple(depth) if self.rng.random() < 0.8 else self.value(depth)

    def _name(self) -> str:
        return self.rng.choice(ALLOWED if self.rng.random() < 0.9 else REFUSED)

    def _call(self, depth: int) -> bytes:
        name = self._name()
        if name == "_codecs.encode" and self.rng.random() < 0.6:
            return _global(name) + _uni("ab") + _uni(self.rng.choice(["latin1", "nope"])) + b"\x86R"
        if name == "collections.OrderedDict" and self.rng.random() < 0.5:
            return _global(name) + b")R"
        return _global(name) + self._args(depth) + b"R"

    def _newobj(self, depth: int) -> bytes:
        return _global(self._name()) + self._args(depth) + b"\x81"

    def _build(self, depth: int) -> bytes:
        rng = self.rng
        if rng.random() < 0.1:  # the state is the instance itself (DUP): a tuple BUILT with
            return rng.choice([self._tuple, self._list])(depth) + b"2b"  # itself never ends
        target = rng.choice([self._call, self._dict, self._list])(depth)
        state = rng.choice([self._dict, self._tuple, self.value])(depth)
        return target + state + b"b"

    def _setitem_target(self, depth: int) -> bytes:
        """SETITEM(S)/APPEND(S) on whatever the grammar built: torch checks the target."""
        target = self.value(depth)
        op = self.rng.choice([b"s", b"a"])
        pair = self.primitive() + self.primitive() if op == b"s" else self.primitive()
        return target + pair + op

    def _persid(self, depth: int, numel: int | None = None, kind: str | None = None) -> bytes:
        rng = self.rng
        kind = kind or rng.choice(["torch.FloatStorage", "torch.FloatStorage", "torch.LongStorage"])
        if numel is None:
            element = {"torch.FloatStorage": 4, "torch.QInt8Storage": 1}.get(kind, 8)
            numel = STORAGE_KEY_BYTES // element
            if rng.random() < 0.15:
                numel += rng.choice([-1, 1, 5])
        location = rng.choices(["cpu", "cuda:0", "meta", "mps", "bogus"], [20, 2, 1, 1, 1])[0]
        key = _uni("0") if rng.random() < 0.85 else rng.choice(ODD_KEYS)
        return (
            b"(" + _uni("storage") + _global(kind) + key + _uni(location)
            + b"K" + bytes([max(numel, 0)]) + b"tQ"
        )  # fmt: skip

    def _view(self, kind: str | None = None) -> bytes:
        """A persistent storage id, then a view's offset, size and stride."""
        rng = self.rng
        ndim = rng.randint(0, 2)
        size = [rng.randint(0, 9) for _ in range(ndim)]
        stride = [rng.randint(0, 4) for _ in range(ndim)]
        if rng.random() < 0.1:
            stride.append(1)  # a rank mismatch
        offset = rng.choice([0, 0, 0, 1, 3, 8])

        def shape(values: list[int]) -> bytes:
            return b"(" + b"".join(b"K" + bytes([v]) for v in values) + b"t"

        return self._persid(0, kind=kind) + b"K" + bytes([offset]) + shape(size) + shape(stride)

    def _quantized(self, depth: int) -> bytes:
        """`_rebuild_qtensor` as torch.save writes it (per tensor or per channel), at times
        with a view past its storage, requires_grad, or parameters torch refuses."""
        rng = self.rng
        if rng.random() < 0.7:
            params = _global("torch.per_tensor_affine") + b"G" + struct.pack(">d", 0.1)
            params += b"K" + bytes([rng.choice([0, 3])]) + b"\x87"
        else:
            count = rng.choice([1, 2, 3])
            scales = b"](" + b"".join(b"G" + struct.pack(">d", 0.5) for _ in range(count))
            scales += b"e"
            points = b"](" + b"K\x00" * count + b"e"
            params = b"(" + _global("torch.per_channel_affine") + scales + points
            params += b"K" + bytes([rng.choice([0, 0, 1])]) + b"t"
        hooks = _global("collections.OrderedDict") + b")R"
        grad = b"\x88" if rng.random() < 0.1 else b"\x89"
        args = self._view("torch.QInt8Storage") + params + grad + hooks
        return _global("torch._utils._rebuild_qtensor") + b"(" + args + b"tR"

    def _nested(self, depth: int) -> bytes:
        """`_rebuild_nested_tensor(buffer, sizes, strides, offsets)` over tensor records."""
        parts = [self._tensor(depth) for _ in range(4)]
        return _global("torch._utils._rebuild_nested_tensor") + b"(" + b"".join(parts) + b"tR"

    def _no_kernel_then(self, depth: int) -> bytes:
        """A quantized or nested tensor, then more objects torch checks (a tuple), at times
        handed on to another call (`.to()` of it: an operator on what stage 2 stood in)."""
        rng = self.rng
        first = self._quantized(depth) if rng.random() < 0.7 else self._nested(depth)
        if rng.random() < 0.15:
            first = (
                _global("torch._utils._rebuild_device_tensor_from_cpu_tensor") + b"(" + first
                + _global("torch.float32") + _uni("cpu") + b"\x89tR"
            )  # fmt: skip
        return b"(" + first + b"".join(self._items(depth, 1, 3)) + b"t"

    def _tensor(self, depth: int) -> bytes:
        rng = self.rng
        hooks = _global("collections.OrderedDict") + b")R"
        args = self._view() + rng.choice([b"\x89", b"\x88"]) + hooks
        if rng.random() < 0.1:
            args += self.primitive()  # a wrong arity
        record = _global("torch._utils._rebuild_tensor_v2") + b"(" + args + b"tR"
        if rng.random() < 0.15:  # a Parameter around it
            record = _global("torch._utils._rebuild_parameter") + b"(" + record
            record += rng.choice([b"\x89", b"\x88"]) + hooks + b"tR"
        return record

    def _odd(self, depth: int) -> bytes:
        """An argument of an ordinary call: mostly what torch.save writes, at times not."""
        rng = self.rng
        choice = rng.randrange(8)
        if choice == 0:
            return _uni(rng.choice(ODD_TEXTS))
        if choice == 1:
            return b"G" + struct.pack(">d", rng.choice([0.5, -1.0, 2.0, float("nan")]))
        if choice == 2:
            value = rng.choice([2**40, 2**70, -(2**63), 10**400])
            raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
            return b"\x8a" + bytes([len(raw)]) + raw
        if choice == 3:
            return self._tuple(depth + 2)
        if choice == 4:
            return rng.choice([b"N", b"\x88", b"\x89", b")", b"]", b"}", b"\x8f"])
        if choice == 5 and depth < 3:
            return self.value(depth + 1)
        return b"K" + bytes([rng.choice([0, 1, 2, 3, 255])])

    def _ordinary_call(self, depth: int) -> bytes:
        """Size, device, complex, bytes, bytearray, set, Counter, a Parameter or an empty set,
        as torch.save writes them or with odd arguments (issue 20)."""
        rng = self.rng
        odd = [self._odd(depth) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))]
        choice = rng.randrange(9)
        if choice == 0:
            ints = b"".join(b"K" + bytes([rng.randrange(5)]) for _ in range(rng.randrange(4)))
            args = [b"(" + ints + b"t"] if rng.random() < 0.6 else odd
            return _global("torch.Size") + b"(" + b"".join(args) + b"tR"
        if choice == 1:
            args = [_uni(rng.choice(ODD_TEXTS)), *odd[:1]] if rng.random() < 0.6 else odd
            return _global("torch.device") + b"(" + b"".join(args) + b"tR"
        if choice == 2:
            args = odd if rng.random() < 0.5 else [self._odd(depth), self._odd(depth)]
            return (
                _global("builtins.complex") + b"(" + b"".join(args) + rng.choice([b"tR", b"t\x81"])
            )
        if choice == 3:
            return self._bytes(depth, odd)
        if choice == 4:
            arg = self._bytes(depth, odd) if rng.random() < 0.5 else b"".join(odd[:2])
            return _global("builtins.bytearray") + b"(" + arg + b"tR"
        if choice in (5, 6):
            items = b"".join(rng.choice([self.primitive(), self._odd(depth)]) for _ in odd)
            arg = rng.choice([b"](" + items + b"e", b"}", b"".join(odd)])
            name = "builtins.set" if choice == 5 else "collections.Counter"
            return _global(name) + b"(" + arg + b"tR"
        if choice == 7:
            return self._parameter(depth)
        return b"\x8f"

    def _bytes(self, depth: int, odd: list[bytes]) -> bytes:
        """`_codecs.encode(text, "latin1")`, how protocol 2 writes bytes, or odder."""
        rng = self.rng
        text = _uni(rng.choice(["ab", "\x00\xff", "\u0100", "", "x" * 90]))
        encoding = _uni(rng.choice(["latin1", "latin1", "latin-1", "utf-8", "rot13", "nope"]))
        args = [text, encoding] if rng.random() < 0.7 else odd
        return _global("_codecs.encode") + b"(" + b"".join(args) + b"tR"

    def _parameter(self, depth: int) -> bytes:
        """`_rebuild_parameter(tensor, requires_grad, hooks)` (or `_with_state`) on float or
        int storages, with a bool, an int, or another object as requires_grad."""
        rng = self.rng
        kind = rng.choice(["torch.FloatStorage", "torch.LongStorage"])
        hooks = _global("collections.OrderedDict") + b")R"
        data = (
            _global("torch._utils._rebuild_tensor_v2") + b"(" + self._view(kind)
            + rng.choice([b"\x89", b"\x89", b"\x88"]) + hooks + b"tR"
        )  # fmt: skip
        if rng.random() < 0.1:
            data = self._odd(depth)
        args = data + rng.choice([b"\x88", b"\x89", b"K\x01", b"N"])
        args += hooks if rng.random() < 0.85 else self._odd(depth)
        name = "torch._utils._rebuild_parameter"
        if rng.random() < 0.3:
            name += "_with_state"
            args += rng.choice([b"N", b"}", b"}" + _uni("foo") + b"K\x01s", b")", self._odd(depth)])
        return _global(name) + b"(" + args + b"tR"

    def _memo(self, depth: int) -> bytes:
        if self.memo:
            return b"h" + bytes([self.rng.choice(self.memo)])
        return self.primitive()


def archive_members(state: object) -> dict[str, bytes]:
    """The members of `torch.save(state)`'s archive, by name inside the archive folder."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        return {info.filename.split("/", 1)[1]: archive.read(info) for info in archive.infolist()}


def real_checkpoint() -> dict[str, bytes]:
    """The archive members of a save that exercises most of the allowlist."""
    state = {
        "w": torch.arange(4.0),
        "view": torch.arange(8.0)[2:6],
        "p": torch.nn.Parameter(torch.ones(2)),
        "meta": OrderedDict(a=1, b=[1, 2.5, None, True]),
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
        "set": {1, 2},
        "complex": complex(1, 2),
        "bytes": b"\x00ab",
        "dtype": torch.float16,
    }
    return archive_members(state)


def mutations(data: bytes, rng: random.Random, count: int) -> list[bytes]:
    """`count` copies of `data`, each with 1 or 2 bytes set to a random value."""
    cases = []
    for _ in range(count):
        mutated = bytearray(data)
        for _ in range(rng.choice([1, 2])):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cases.append(bytes(mutated))
    return cases
