"""The auditor reads a checkpoint held in a seekable stream (a DCP shard's item) exactly as
the same bytes in a file."""

from __future__ import annotations

import collections
import dataclasses
import io

import torch

from pytest_ckpt.audit import audit_file


def test_a_stream_gets_the_same_verdict_as_its_file(tmp_path) -> None:
    for name, state in {
        "ok": {"w": torch.arange(4.0)},
        "bad": {"h": collections.deque([1])},
    }.items():
        path = tmp_path / f"{name}.pt"
        torch.save(state, path)
        stream = io.BytesIO(path.read_bytes())
        stream.name = f"item-{name}"
        from_file, from_stream = audit_file(path), audit_file(stream)
        assert from_stream.path == f"item-{name}"
        assert dataclasses.replace(from_stream, path=from_file.path) == from_file
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert audit_file(io.BytesIO(legacy.read_bytes())).format == "legacy"
    assert audit_file(io.BytesIO(b"")).error == "empty"
