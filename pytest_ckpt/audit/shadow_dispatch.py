"""The dispatch mode stage 2 runs torch's unpickler under: it makes meta storages answer as
real ones would, so the pass runs to the end (issue 20: it used to stop at the first
operator with no meta kernel, unchecked past it, and the verdict said ok).

Three things torch does with real storages that meta ones skip or cannot do:
- `set_` is bounds-checked on CPU and not on meta: every `set_` is replayed on a CPU
  storage of the same size that points at no memory (never read), so torch's own C++
  check decides.
- quantized tensors (`_rebuild_qtensor`) have no meta kernels: the constructor's checks
  run on CPU with no element allocated, its `set_` on a quantized CPU tensor over such a
  storage, and a meta tensor of the quantized dtype stands in for the result.
- nested tensors (`_rebuild_nested_tensor`) are built from sizes held in tensor bytes the
  auditor does not read: a stand-in takes their place and the file is `unverified`.

A stand-in is sealed: any later operator on it raises `Unverifiable`, since what torch
would do with the real tensor there is not known. Nothing the file chooses is allocated.
"""

from __future__ import annotations

from typing import Any

_SMALL_ALLOCATION = 1 << 24  # elements a quantized constructor may allocate beyond its storage
_STRIDED: list[Any] = []  # torch.strided, once torch is imported


class Unverifiable(Exception):
    """Stage 2 cannot tell what torch does here: the verdict may not be ok."""


class ResourceLimit(Exception):
    """torch would allocate memory the file chooses: the auditor does not vouch for it."""


def _tensors(args: Any, kwargs: dict) -> list[Any]:
    """The tensors among an operator's arguments (one level of lists: TensorList)."""
    import torch

    found = []
    for value in (*args, *kwargs.values()):
        items = value if isinstance(value, (list, tuple)) else (value,)
        found += [item for item in items if isinstance(item, torch.Tensor)]
    return found


def _identity(tensor: Any) -> int | None:
    """What survives of a tensor a dispatch mode returns: torch re-wraps it (a new Python
    object, a new TensorImpl) but keeps its storage, so a stand-in (a strided meta tensor
    with a storage of its own) is known by its storage."""
    if tensor.is_meta and not tensor.is_nested and tensor.layout is _STRIDED[0]:
        return _stand_in_identity(tensor)
    return None


def _stand_in_identity(stand_in: Any) -> int:
    """`_identity` of a tensor known to be a stand-in (made here, or found in `fresh`)."""
    return int(stand_in.untyped_storage()._cdata)


def _shadow(nbytes: int) -> Any:
    """A CPU storage of `nbytes` that points at no memory: `set_` only checks sizes, and it
    is dropped at once."""
    import torch

    return torch._C._construct_storage_from_data_pointer(8, torch.device("cpu"), nbytes)


class _StandIns:
    """Fresh quantized tensors, with the CPU tensor that checks their `set_`, and sealed
    stand-ins, by `_identity` (kept alive, so identities are not reused): the dispatch
    mode's state and the ops it answers itself."""

    def __init__(self, really_meta: set[int]) -> None:
        self.really_meta = really_meta
        self.fresh: dict[int, tuple[Any, Any, int]] = {}
        self.sealed: dict[int, Any] = {}
        self.unverified: list[str] = []

    def quantized_empty(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """torch's checks of the quantized constructor, on CPU, with no element: the
        sizes (negative ones kept, for torch's own error), the dtype, the parameters."""
        import torch

        size, *rest = args
        allowed = _SMALL_ALLOCATION  # scales and zero points: as tensors on CPU

        def on_cpu(value: Any) -> Any:
            nonlocal allowed
            if not isinstance(value, torch.Tensor):
                return value
            allowed -= value.numel()
            if allowed < 0:
                raise ResourceLimit("quantization parameters of over 2**24 elements")
            return torch.zeros(value.shape, dtype=value.dtype)

        cpu_kwargs = {key: on_cpu(value) for key, value in kwargs.items()}
        cpu_kwargs["device"] = torch.device("cpu")
        cpu_args = [on_cpu(value) for value in rest]
        empty = func([min(extent, 0) for extent in size], *cpu_args, **cpu_kwargs)
        numel = 1
        for extent in size:
            numel *= extent
        # the real tensor's shape (meta: nothing allocated): torch checks some uses on the
        # shape before any operator (a 0-dim tensor taken as a number)
        try:
            stand_in = torch.empty(size, dtype=empty.dtype, device="meta")
        except RuntimeError:  # sizes past int64: torch.load would allocate them
            raise ResourceLimit(f"a quantized tensor of sizes {list(size)}") from None
        self.fresh[_stand_in_identity(stand_in)] = (stand_in, empty, numel)
        return stand_in

    def quantized_set(self, target: Any, storage: Any, rest: list) -> Any:
        """`_rebuild_qtensor`'s set_: torch's quantized CPU set_ over a shadow storage,
        then the stand-in is sealed."""
        _stand_in, empty, numel = self.fresh.pop(_stand_in_identity(target))
        if storage._cdata in self.really_meta:  # torch too builds it on meta, and fails
            raise RuntimeError(
                "a quantized tensor on a meta storage: torch has no QuantizedMeta kernel "
                "for _empty_affine_quantized"
            )
        element = empty.element_size()
        if numel > max(_SMALL_ALLOCATION, storage.nbytes() // element):
            raise ResourceLimit(
                f"a quantized tensor of {numel} elements over a storage of "
                f"{storage.nbytes()} bytes: torch.load allocates them"
            )
        empty.set_(_shadow(storage.nbytes()), *rest)
        self.sealed[_stand_in_identity(target)] = target
        return target

    def nested(self, buffer: Any) -> Any:
        import torch

        stand_in = torch.empty(0, dtype=buffer.dtype, device="meta")
        self.sealed[_stand_in_identity(stand_in)] = stand_in
        self.unverified.append(
            "a nested tensor: torch checks its sizes, strides and offsets, which are "
            "tensor bytes the auditor does not read"
        )
        return stand_in


def shadow_mode(really_meta: set[int]) -> Any:
    """The dispatch mode; `really_meta` holds the `_cdata` of the storages torch too would
    make on meta (where it checks nothing and has no quantized kernels). Its `unverified`
    lists what stage 2 stood in for and could not judge."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    _STRIDED[:] = [torch.strided]
    set_storage = aten.set_.source_Storage_storage_offset
    quantized_empty = {
        aten._empty_affine_quantized.default,
        aten._empty_per_channel_affine_quantized.default,
    }

    class ShadowStorages(TorchDispatchMode):
        """Real-storage checks for meta storages; quantized and nested ops to `_StandIns`."""

        def __init__(self) -> None:
            super().__init__()
            self.stand_ins = _StandIns(really_meta)
            self.unverified = self.stand_ins.unverified

        @classmethod
        def _should_skip_dynamo(cls) -> bool:
            return False  # no torch.compile here: spare the 1 s import of torch._dynamo

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            stand_ins = self.stand_ins
            for tensor in _tensors(args, kwargs):
                if _identity(tensor) in stand_ins.sealed:
                    raise Unverifiable(
                        f"{func} on a tensor stage 2 stood in for (quantized or nested), "
                        "whose outcome in torch depends on what the auditor did not build"
                    )
            if func in quantized_empty:
                return stand_ins.quantized_empty(func, args, kwargs)
            if func is aten._nested_view_from_buffer.default:
                return stand_ins.nested(args[0])
            if func is set_storage:
                target, storage, *rest = args
                if _identity(target) in stand_ins.fresh:
                    return stand_ins.quantized_set(target, storage, rest)
                if storage._cdata not in really_meta:
                    empty = torch.empty(0, dtype=target.dtype)
                    empty.set_(_shadow(storage.nbytes()), *rest, **kwargs)
            return func(*args, **kwargs)

    return ShadowStorages()
