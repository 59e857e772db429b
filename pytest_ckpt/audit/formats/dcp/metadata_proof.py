"""A fast proof that a DCP `.metadata` is clean: the general scan would find nothing in it.

`metadata_scan` runs `.metadata` through the auditor's symbolic machine, which builds a
`Node` for every object so that a finding can be reported by path. A clean `.metadata` has
no finding to report, and 4096 tensors are some 270k opcodes of the same few records: the
machine spends most of an audit building a tree nobody reads. This module proves the
"nothing found" answer without building it. It keeps, per stack and memo entry, only what
the machine's checks look at (is it a Node, of which type; which allowed global; a
string's text), runs the machine's checks on that, and takes the repeated records DCP
writes for each tensor (`metadata_records`) in one regex match each.

It only ever answers "clean" or "not proven": on the first thing the machine would flag,
any error the machine would raise, any opcode or shape it does not model, it gives up and
the caller runs the general scan, whose answer (findings by path, or the error) stands. So
it can never turn a refusal into an acceptance, only save the time of an acceptance.
"""

from __future__ import annotations

import pickle
import struct

from pytest_ckpt.audit.allowlist import (
    APPEND_TARGETS,
    ORDERED_DICT,
    PARAMETER,
    SETITEM_TARGETS,
    TENSOR,
    Allowlist,
)
from pytest_ckpt.audit.formats.dcp.metadata_entries import (
    PRIMITIVE,
    Unproven,
    global_entry,
    is_node,
    newobj_result,
    operand_text,
    reduce_result,
    type_of,
)
from pytest_ckpt.audit.formats.dcp.metadata_records import RecordTaker
from pytest_ckpt.audit.opcodes import (
    PREVIEW,
    Blob,
    MalformedPickle,
    Op,
    TruncatedPickle,
    decode_at,
)
from pytest_ckpt.audit.opcodes import new_blob as _new_blob

_MARK, _STOP, _BINGET, _LONG_BINGET = (
    pickle.MARK[0],
    pickle.STOP[0],
    pickle.BINGET[0],
    pickle.LONG_BINGET[0],
)
_MEMOIZE, _BINPUT, _LONG_BINPUT = pickle.MEMOIZE[0], pickle.BINPUT[0], pickle.LONG_BINPUT[0]
_SHORT_BINUNICODE, _STACK_GLOBAL = pickle.SHORT_BINUNICODE[0], pickle.STACK_GLOBAL[0]
_EMPTY_TUPLE, _TUPLE, _TUPLE1 = pickle.EMPTY_TUPLE[0], pickle.TUPLE[0], pickle.TUPLE1[0]
_TUPLE2, _TUPLE3 = pickle.TUPLE2[0], pickle.TUPLE3[0]
_NEWOBJ, _REDUCE, _BUILD = pickle.NEWOBJ[0], pickle.REDUCE[0], pickle.BUILD[0]
_EMPTY_DICT, _EMPTY_LIST = pickle.EMPTY_DICT[0], pickle.EMPTY_LIST[0]
_SETITEMS, _SETITEM, _APPEND, _APPENDS = (
    pickle.SETITEMS[0],
    pickle.SETITEM[0],
    pickle.APPEND[0],
    pickle.APPENDS[0],
)
_BININT1, _BININT2, _BININT, _LONG1 = (
    pickle.BININT1[0],
    pickle.BININT2[0],
    pickle.BININT[0],
    pickle.LONG1[0],
)
_NEWTRUE, _NEWFALSE, _NONE, _BINFLOAT = (
    pickle.NEWTRUE[0],
    pickle.NEWFALSE[0],
    pickle.NONE[0],
    pickle.BINFLOAT[0],
)
_FRAME, _PROTO = pickle.FRAME[0], pickle.PROTO[0]
_NEWOBJ_START = pickle.EMPTY_TUPLE + pickle.NEWOBJ  # every record: GET(class) () NEWOBJ

_PUSH_PRIMITIVE_OPS = frozenset({"INT", "LONG", "LONG4", "FLOAT"})
_PUSH_ARG_OPS = frozenset(
    {"BINUNICODE", "BINUNICODE8", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8"}
)
_UNPACK_I = struct.Struct("<I").unpack_from


def proves_clean(data: bytes, allow: Allowlist) -> bool:
    """True when the general scan of `data` (`metadata_scan.DcpMetadataInterpreter`, on the
    same allowlist) would finish with no finding and no error; False when it might not."""
    return proof_memo(data, allow) is not None


def proof_memo(data: bytes, allow: Allowlist, *, records: bool = True) -> dict[int, object] | None:
    """The memo at STOP of a run that proved `data` clean, else None. `records=False` runs
    every opcode in the loop (the records must leave the very same memo: a test checks)."""
    memo: dict[int, object] = {}
    try:
        proven = _run(data, allow, memo, RecordTaker(data, allow, memo, enabled=records))
    except (Unproven, IndexError, KeyError, struct.error, UnicodeDecodeError):
        return None
    except (MalformedPickle, TruncatedPickle):
        return None
    return memo if proven else None


def _run(data: bytes, allow: Allowlist, memo: dict[int, object], take: RecordTaker) -> bool:
    """The machine's loop (`machine.PickleMachine.execute`) with the checks of
    `symbolic.AcceptedOpcodes`/`RefusedOpcodes` on the entries above; raises on the first
    thing it does not prove (IndexError for an empty stack or a read past the end, KeyError
    for a memo entry never set: the machine raises there too)."""
    buildable = frozenset({TENSOR, PARAMETER, ORDERED_DICT}) | allow.classes
    stack: list[object] = []
    metastack: list[list[object]] = []
    size = len(data)
    pos = 0
    while True:
        code = data[pos]
        if code == _MEMOIZE:
            memo[len(memo)] = stack[-1]
            pos += 1
        elif code in (_BINGET, _LONG_BINGET):
            width = 2 if code == _BINGET else 5
            if data[pos + width : pos + width + 2] == _NEWOBJ_START:  # a record, maybe
                after = take.at_get(pos, stack)
                if after:
                    pos = after
                    continue
            if code == _BINGET:
                stack.append(memo[data[pos + 1]])
                pos += 2
            else:
                stack.append(memo[_UNPACK_I(data, pos + 1)[0]])
                pos += 5
        elif code == _SHORT_BINUNICODE:
            length = data[pos + 1]
            start = pos + 2
            if start + length > size:
                return False
            text = data[start : start + length].decode("utf-8", "surrogatepass")
            preview = text[:PREVIEW] if length > PREVIEW else text
            stack.append(_new_blob(Blob, ("str", length, preview, start)))
            pos = start + length
        elif code == _TUPLE1:
            stack[-1] = "builtins.tuple"
            pos += 1
        elif code == _EMPTY_TUPLE:
            stack.append("builtins.tuple")
            pos += 1
        elif code == _MARK:
            metastack.append(stack)
            stack = []
            pos += 1
        elif code == _REDUCE:
            stack.pop()  # the arguments
            stack[-1] = reduce_result(allow, stack[-1])
            pos += 1
        elif code == _NEWOBJ:
            stack.pop()
            stack.append(newobj_result(allow, stack.pop()))
            pos += 1
        elif code == _BUILD:
            stack.pop()
            inst = stack[-1]
            if not is_node(inst) or type_of(inst) not in buildable:
                return False
            pos += 1
        elif code in (_SETITEMS, _APPENDS):
            stack = metastack.pop()
            if type(stack[-1]) is not str:
                return False
            if stack[-1] not in (SETITEM_TARGETS if code == _SETITEMS else APPEND_TARGETS):
                return False
            pos += 1
        elif code in (_SETITEM, _APPEND):
            stack.pop()
            if code == _SETITEM:
                stack.pop()
            if type(stack[-1]) is not str:
                return False
            if stack[-1] not in (SETITEM_TARGETS if code == _SETITEM else APPEND_TARGETS):
                return False
            pos += 1
        elif code == _EMPTY_DICT:
            stack.append("builtins.dict")
            pos += 1
        elif code == _EMPTY_LIST:
            stack.append("builtins.list")
            pos += 1
        elif code == _BININT1:
            stack.append(PRIMITIVE)
            pos += 2
        elif code == _BININT2:
            stack.append(PRIMITIVE)
            pos += 3
        elif code == _BININT:
            stack.append(PRIMITIVE)
            pos += 5
        elif code == _BINFLOAT:
            stack.append(PRIMITIVE)
            pos += 9
        elif code == _LONG1:
            pos += 2 + data[pos + 1]
            stack.append(PRIMITIVE)
        elif code in (_NONE, _NEWTRUE, _NEWFALSE):
            stack.append(PRIMITIVE)
            pos += 1
        elif code in (_TUPLE2, _TUPLE3):
            count = 2 if code == _TUPLE2 else 3
            if len(stack) < count:
                return False
            del stack[len(stack) - count :]
            stack.append("builtins.tuple")
            pos += 1
        elif code == _TUPLE:
            stack = metastack.pop()
            stack.append("builtins.tuple")
            pos += 1
        elif code in (_BINPUT, _LONG_BINPUT):
            index = data[pos + 1] if code == _BINPUT else _UNPACK_I(data, pos + 1)[0]
            memo[index] = stack[-1]
            take.memo_written(index)
            pos += 2 if code == _BINPUT else 5
        elif code == _STACK_GLOBAL:
            name, module = stack.pop(), stack.pop()
            stack.append(global_entry(allow, operand_text(module), operand_text(name)))
            pos += 1
        elif code in (_FRAME, _PROTO):
            pos += 9 if code == _FRAME else 2
        elif code == _STOP:
            stack.pop()  # the root; nothing was flagged on the way
            return True
        else:
            op, pos = decode_at(data, pos)
            stack = _rare(op, allow, stack, metastack, memo, take)
        if pos > size:  # a fixed-width argument ran past the end: the machine's Truncated
            return False


def _rare(
    op: Op,
    allow: Allowlist,
    stack: list[object],
    metastack: list[list[object]],
    memo: dict[int, object],
    take: RecordTaker,
) -> list[object]:
    """The opcodes DCP's pickler never writes, as the machine runs them; returns the stack
    (POP_MARK and the MARK-taking ones replace it)."""
    name = op.name
    if name in _PUSH_PRIMITIVE_OPS:
        stack.append(PRIMITIVE)
    elif name in _PUSH_ARG_OPS:
        stack.append(op.arg)
    elif name == "GLOBAL":
        module, global_name = op.arg
        stack.append(global_entry(allow, module, global_name))
    elif name == "EMPTY_SET":
        stack.append("builtins.set")
    elif name in ("LIST", "DICT", "FROZENSET"):
        stack = metastack.pop()
        stack.append(
            {"LIST": "builtins.list", "DICT": "builtins.dict"}.get(name, "builtins.frozenset")
        )
    elif name == "POP":
        stack.pop()
    elif name == "POP_MARK":
        stack = metastack.pop()
    elif name == "DUP":
        stack.append(stack[-1])
    elif name == "PUT":
        memo[int(op.arg)] = stack[-1]
        take.memo_written(int(op.arg))
    elif name == "GET":
        stack.append(memo[int(op.arg)])
    elif name == "NEWOBJ_EX":
        stack.pop()
        stack.pop()
        stack.append(newobj_result(allow, stack.pop()))
    else:  # persistent ids, extensions, INST/OBJ, buffers: flagged or rare; the machine's
        raise Unproven(f"opcode {name}")
    return stack
