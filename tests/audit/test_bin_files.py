"""`targets.bin_files`: a `.bin` is skipped as "not a checkpoint" only where nothing can read
it as one. Held against the real readers in a subprocess: for every sample called "not a
checkpoint", `pickle.loads` never reaches an import (`pickle.find_class`, watched with an
audit hook that refuses it, so nothing is imported or run) and `torch.load(weights_only=True)`
refuses the bytes. Every sample that is a pickle is called one."""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import subprocess
import sys
import tarfile

import numpy as np
import torch

from pytest_ckpt.audit.formats.bin_files import is_checkpoint_bin, may_unpickle

# For each hex-encoded sample: did pickle.loads reach find_class, and does torch.load with
# weights_only=True refuse it? The audit hook refuses every import find_class asks for.
READERS = """
import io, json, pickle, sys, warnings
import torch
warnings.simplefilter("ignore")
reached = []
def refuse_imports(event, args):
    if event == "pickle.find_class":
        reached.append(args)
        raise RuntimeError("find_class refused by the test")
sys.addaudithook(refuse_imports)
verdicts = []
for line in sys.stdin:
    data = bytes.fromhex(line.strip())
    reached.clear()
    try:
        pickle.loads(data)
    except Exception:
        pass
    try:
        torch.load(io.BytesIO(data), weights_only=True)
        torch_loads = True
    except Exception:
        torch_loads = False
    verdicts.append([bool(reached), torch_loads])
print(json.dumps(verdicts))
"""


def what_readers_do(blobs: list[bytes]) -> list[tuple[bool, bool]]:
    """For each blob, in one fresh process (`READERS`): did pickle.loads reach an import,
    and does torch.load(weights_only=True) load it."""
    result = subprocess.run(
        [sys.executable, "-c", READERS],
        input="\n".join(blob.hex() for blob in blobs),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class RunsACommand:
    def __reduce__(self):
        return (os.system, ("touch ran-by-a-sample",))


def samples() -> list[bytes]:
    """Raw arrays, and headerless (protocol 0 and 1) hostile pickles: whole, cut at every
    length, and with one byte changed."""
    rng = np.random.default_rng(7)
    arrays = []
    for _ in range(40):
        arrays.append(rng.standard_normal(256).astype(np.float32).tobytes())
        arrays.append((rng.standard_normal(256) * 0.02).astype(np.float16).tobytes())
        arrays.append(rng.integers(0, 50_000, 128, dtype=np.int64).tobytes())
        arrays.append(rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
    hostile = [pickle.dumps([1, RunsACommand()], protocol=p) for p in (0, 1)]
    cuts = [blob[:end] for blob in hostile for end in range(len(blob) + 1)]
    mutate = random.Random(7)
    mutants = []
    for _ in range(200):
        blob = bytearray(mutate.choice(hostile))
        blob[mutate.randrange(len(blob))] = mutate.randrange(256)
        mutants.append(bytes(blob))
    return arrays + hostile + cuts + mutants


def test_what_is_called_not_a_checkpoint_no_reader_can_load_or_import_from() -> None:
    blobs = samples()
    called = [may_unpickle(blob, len(blob)) for blob in blobs]
    readers = what_readers_do(blobs)
    for blob, pickle_like, (imported, torch_loads) in zip(blobs, called, readers, strict=True):
        if not pickle_like:
            assert not imported, f"pickle.loads reached an import in {blob!r}"
            assert not torch_loads, f"torch.load(weights_only=True) loads {blob!r}"
    assert any(imported for imported, _ in readers)  # the samples do reach imports
    skipped = sum(not c for c in called)
    assert skipped > len(blobs) // 2  # most arrays, cuts and mutants are not pickles


def test_headerless_pickles_and_legacy_files_are_checkpoints(tmp_path) -> None:
    for protocol in (0, 1):
        assert may_unpickle(pickle.dumps(RunsACommand(), protocol=protocol), 10**6)
        legacy = io.BytesIO()
        torch.save(
            {"w": torch.ones(1)},
            legacy,
            pickle_protocol=protocol,
            _use_new_zipfile_serialization=False,
        )
        data = legacy.getvalue()
        assert may_unpickle(data, len(data))
    assert not may_unpickle(b"I1\n.", 4)  # a whole pickle of one int: torch refuses it
    assert not may_unpickle(b"c\nname\n", 7)  # GLOBAL of no module name: pickle refuses it
    assert not may_unpickle(b"c\xffos\nsystem\n", 12)  # not UTF-8: pickle refuses it
    assert may_unpickle(b"cpos)x\nsystem\n", 14)  # a file pos)x.py on sys.path would import


def test_a_declared_length_counts_only_inside_the_file() -> None:
    """BINBYTES (`B`, 4-byte length) past the bytes read: a pickle if the file holds them."""
    head = b"B" + (100_000).to_bytes(4, "little") + bytes(1000)
    assert may_unpickle(head, 200_000)
    assert not may_unpickle(head, 50_000)
    assert not may_unpickle(b"\x8b" + (2**30).to_bytes(4, "little"), 1 << 20)  # LONG4
    assert may_unpickle(b"\x8b" + (2**21).to_bytes(4, "little"), 1 << 22)  # past our bound only
    assert not may_unpickle(b"X\x02\x00\x00\x00\xff\xfe", 7)  # BINUNICODE, not UTF-8


def test_a_tar_named_bin_is_a_checkpoint(tmp_path) -> None:
    """torch.load reads the legacy tar format: a tar is audited, not skipped."""
    path = tmp_path / "old.bin"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("storages")
        archive.addfile(info, io.BytesIO(b""))
    assert is_checkpoint_bin(path, path.stat().st_size)


# What random arrays most often look like to a byte-level probe: a run of zeros (an empty tar
# to `tarfile`), a STACK_GLOBAL or a call before anything is on the stack, a GET of an empty
# memo. pickle fails on each before an import; torch's tar reader fails on the empty tar.
LOOK_ALIKES = {
    "zeros_4k": bytes(4226),
    "zeros_100k": bytes(100_000),
    "zeros_then_noise": bytes(1024) + bytes(range(256)) * 8,
    "stack_global_first": b"\x93" + bytes(range(256)),
    "stack_global_on_ints": b"K\x01K\x02\x93" + bytes(64),
    "stack_global_on_one_text": b"X\x01\x00\x00\x00a\x93" + bytes(64),
    "stack_global_on_a_mark": b"X\x01\x00\x00\x00a(\x93" + bytes(64),
    "stack_global_on_a_dup_bool": b"\x892\x93\x15%\xbc",  # seed 1 of the benchmark
    "reduce_first": b"K\x01K\x02R" + bytes(64),
    "get_of_an_empty_memo": b"h\x07\x93" + bytes(64),
    "pop_of_nothing": b"0c" + b"os\nsystem\n",
    "stop_of_nothing": b"." + bytes(64),
    "tar_without_storages": b"",  # filled in by the test: a tar of one member "x"
}


def tar_of(names: list[str]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name in names:
            archive.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    return out.getvalue()


# torch.load of each path, with and without weights_only: nothing may load, nothing may run
# (a GLOBAL of os.system in a sample would leave the marker file).
TORCH_LOADS_PATHS = """
import json, sys, warnings
import torch
warnings.simplefilter("ignore")
loaded = []
for path in sys.argv[1:]:
    for weights_only in (True, False):
        try:
            torch.load(path, weights_only=weights_only)
            loaded.append([path, weights_only])
        except Exception:
            pass
print(json.dumps(loaded))
"""


def test_what_random_arrays_look_like_is_not_a_checkpoint_and_nothing_loads_it(tmp_path):
    paths = []
    for name, body in LOOK_ALIKES.items():
        paths.append(tmp_path / f"{name}.bin")
        paths[-1].write_bytes(body or tar_of(["x"]))
    called = {path.name: is_checkpoint_bin(path, path.stat().st_size) for path in paths}
    result = subprocess.run(
        [sys.executable, "-c", TORCH_LOADS_PATHS, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert not (tmp_path / "ran-by-a-sample").exists()
    assert {name for name, is_one in called.items() if is_one} == set()


def test_stack_globals_pickle_can_run_are_still_pickles() -> None:
    two_texts = b"X\x02\x00\x00\x00osX\x06\x00\x00\x00system\x93"
    assert may_unpickle(two_texts, len(two_texts))
    assert may_unpickle(b"(X\x02\x00\x00\x00osq\x00h\x00\x93", 20)  # text from the memo
    assert may_unpickle(b"U\x02osU\x06system\x93", 12)  # SHORT_BINSTRING: text in py3
    assert is_checkpoint_bin_bytes(tar_of(["sys_info", "pickle", "tensors", "storages"]))
    assert is_checkpoint_bin_bytes(tar_of(["./storages"]))


def is_checkpoint_bin_bytes(body: bytes) -> bool:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x.bin")
        with open(path, "wb") as handle:
            handle.write(body)
        return is_checkpoint_bin(path, len(body))


def test_what_torch_save_writes_as_bin_is_audited(tmp_path) -> None:
    """HF `pytorch_model.bin` and `training_args.bin` are torch zips; old ones are legacy
    pickles (protocol 2 headers, or headerless at protocols 0 and 1)."""
    from pytest_ckpt.audit.allowlist import load_allowlist
    from pytest_ckpt.audit.formats.walk import audit_one_file

    state = {"w": torch.zeros(3)}
    saves = {"zip": {}, "legacy2": {"_use_new_zipfile_serialization": False}}
    for protocol in (0, 1):
        saves[f"legacy{protocol}"] = {
            "_use_new_zipfile_serialization": False,
            "pickle_protocol": protocol,
        }
    for name, kwargs in saves.items():
        path = tmp_path / f"{name}" / "pytorch_model.bin"
        path.parent.mkdir()
        torch.save(state, path, **kwargs)
        report = audit_one_file(str(path), load_allowlist())
        assert report.format != "skipped", (name, report)
        # torch's weights_only unpickler reads protocol 2 only: 0 and 1 are refused
        assert report.loadable == (name in ("zip", "legacy2")), (name, report)


def stack_programs(count: int, seed: int) -> list[bytes]:
    """Headerless opcode sequences over the stack, mark and memo opcodes, each ending in
    an import (STACK_GLOBAL of what is on the stack, or GLOBAL / INST of os.getcwd): the
    symbolic stack in `headerless_reach` must never call one that pickle imports from
    "not a pickle"."""
    rng = random.Random(seed)
    pieces = [
        b"X\x02\x00\x00\x00os", b"X\x06\x00\x00\x00getcwd", b"U\x02os", b"K\x01", b"N",
        b"(", b"0", b"1", b"2", b"t", b"\x85", b"\x86", b"]", b"a", b"e", b"}", b"s", b"u",
        b"l", b"d", b"q\x00", b"q\x01", b"h\x00", b"h\x01", b"\x94", b"\x8f", b"\x90", b"\x91",
        b")", b"b", b"\x88",
    ]  # fmt: skip
    endings = [b"\x93", b"\x93", b"cos\ngetcwd\n", b"ios\ngetcwd\n"]
    return [
        b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 7))) + rng.choice(endings)
        for _ in range(count)
    ]


def test_the_symbolic_stack_never_skips_what_pickle_imports_from() -> None:
    blobs = stack_programs(3000, seed=11)
    called = [may_unpickle(blob, len(blob)) for blob in blobs]
    readers = what_readers_do(blobs)
    wrong = [
        blob
        for blob, pickle_like, (imported, _) in zip(blobs, called, readers, strict=True)
        if imported and not pickle_like
    ]
    assert wrong == []
    assert sum(imported for imported, _ in readers) > 100  # the programs do reach imports
    assert sum(not c for c in called) > 300  # and many fail before one
