"""Checkpoint files for the diff tests: safetensors written by hand from the format's own
description (the package is optional)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {
    torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
    torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.float32: "F32",
    torch.float64: "F64", torch.int64: "I64", torch.complex64: "C64",
}  # fmt: skip


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata=None) -> Path:
    """huggingface/safetensors' layout: u64 header length, JSON header, data in key order."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    chunks, offset = [], 0
    for name, tensor in tensors.items():
        raw = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    return path


def write_sharded(folder: Path, shards: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Shards plus the `model.safetensors.index.json` naming each tensor's shard."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for shard, tensors in shards.items():
        write_safetensors(folder / shard, tensors)
        weight_map.update(dict.fromkeys(tensors, shard))
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index
