"""Tensor storages for the static converter, read the way `torch.load` reads them.

Through torch's own archive reader (`torch._C.PyTorchFileReader`, given the open file as
torch.load gives it, so a file name that is not UTF-8 reads too), so that an archive with
two members of one name gives the bytes torch would give (which copy its reader finds is
its business, not zipfile's); in a storage of fixed size, as torch's (a view past its
storage is refused by torch's own rebuild function, never grown into uninitialised memory),
whose record size must be what the storage declares, as torch checks; byte-swapped when the
archive's `byteorder` record differs from this machine's, as torch does; wrapped in a
`TypedStorage` for torch's own rebuild functions. Nothing is unpickled. A member that
inflates beyond the file's own size (torch.save never compresses) is refused, not read; a
storage on meta (torch.load gives no values) is refused.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections import Counter
from typing import Any

from pytest_ckpt.errors import Unreadable


class StorageRefused(Exception):
    """A storage that cannot be read faithfully; the message says why."""


class StorageRejected(Unreadable):
    """A storage record torch.load itself rejects: the file is unreadable (exit 2)."""


class ArchiveStorages:
    """The storages of one zip checkpoint; `close()` when done."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import torch

        self.file_size = os.path.getsize(path)
        self.loaded: dict[str, Any] = {}
        self._zip: zipfile.ZipFile | None = None
        self._prefix = ""
        self._file = None
        reader_class = getattr(torch._C, "PyTorchFileReader", None)
        try:
            if reader_class is not None and all(
                hasattr(reader_class, method)
                for method in ("get_record_size", "get_storage_from_record")
            ):
                self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
                self._reader = reader_class(self._file)
            else:  # zipfile reads the last of duplicate members: refuse those
                self._reader = None
                self._zip = zipfile.ZipFile(path)
                self._prefix = self._zip.infolist()[0].filename.split("/", 1)[0] + "/"
                twice = [n for n, k in Counter(self._zip.namelist()).items() if k > 1]
                if twice:
                    raise Unreadable(f"archive member {twice[0]} appears more than once")
            order = self._record("byteorder") if self._has("byteorder") else b"little"
        except (RuntimeError, zipfile.BadZipFile, OSError) as err:
            self.close()
            raise Unreadable(f"cannot read the archive: {err}") from None
        if order not in (b"little", b"big"):
            raise Unreadable(f"unknown endianness type {order[:16]!r} in the byteorder record")
        self.swap = order.decode() != sys.byteorder

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._file is not None:
            self._file.close()

    def _zipped(self) -> zipfile.ZipFile:
        """The zipfile reader, which __init__ opens when torch has no record reader."""
        assert self._zip is not None, "ArchiveStorages: no reader open"
        return self._zip

    def _has(self, name: str) -> bool:
        if self._reader is not None:
            return bool(self._reader.has_record(name))
        return self._prefix + name in self._zipped().NameToInfo

    def _size(self, name: str) -> int:
        if self._reader is not None:
            return int(self._reader.get_record_size(name))
        return self._zipped().getinfo(self._prefix + name).file_size

    def _record(self, name: str) -> bytes:
        if self._reader is not None:
            return bytes(self._reader.get_record(name))
        return self._zipped().read(self._prefix + name)

    def storage(self, key: str, dtype: Any, numel: int, location: Any = "cpu") -> Any:
        """The TypedStorage `key` of `numel` elements of `dtype` (one object per key, so
        views keep sharing it); raises StorageRefused, or StorageRejected where torch.load
        rejects the record."""
        import torch

        if key in self.loaded:
            return self.loaded[key]
        if isinstance(location, str) and location.startswith("meta"):
            raise StorageRefused(
                f"storage {key!r} is on meta: torch.load gives a tensor without values; fix: "
                "save the tensor from a real device"
            )
        name = f"data/{key}"
        if not self._has(name):
            raise StorageRefused(f"storage {key!r} missing from the archive")
        nbytes = numel * torch._utils._element_size(dtype)
        size = self._size(name)
        if size > self.file_size:
            raise StorageRefused(
                f"storage {key!r} inflates to {size} bytes from a {self.file_size}-byte file"
            )
        if size != nbytes:
            raise StorageRejected(
                f"storage {key!r}: record size ({size} bytes) does not match the {nbytes} bytes "
                "it declares (torch.load rejects it)"
            )
        untyped = self._untyped(name, nbytes)
        if self.swap:
            untyped.byteswap(dtype)
        typed = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        self.loaded[key] = typed
        return typed

    def _untyped(self, name: str, nbytes: int) -> Any:
        """The record as torch.load reads it: a storage of fixed size."""
        import torch

        if self._reader is not None:
            record = self._reader.get_storage_from_record(name, nbytes, torch.UntypedStorage)
            return record._typed_storage()._untyped_storage
        raw = self._record(name)
        untyped = torch.UntypedStorage.from_buffer(raw, dtype=torch.uint8) if raw else None
        if untyped is None:
            untyped = torch.UntypedStorage(0)
        return untyped
