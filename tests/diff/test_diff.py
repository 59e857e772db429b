"""`diff_checkpoints`: keys, dtypes, shapes and values compared across formats, statically."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import pytest_ckpt.diff.compare as compare
from pytest_ckpt.diff import DiffRefused, diff_checkpoints
from pytest_ckpt.diff.compare import tensor_difference
from tests.diff.files import write_safetensors, write_sharded

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def _tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "model.w": torch.randn(16, 8, generator=generator),
        "model.b": torch.randn(8, generator=generator).to(torch.bfloat16),
        "model.mask": torch.rand(4, generator=generator) > 0.5,
        "steps": torch.arange(5),
        "empty": torch.zeros(0, 3),
    }


def _nested(flat: dict[str, torch.Tensor]) -> dict:
    """{"model.w": t} -> {"model": {"w": t}}: how a .pt holds what safetensors keeps flat."""
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def test_a_pt_and_the_safetensors_of_the_same_tensors_are_equal(tmp_path) -> None:
    torch.save(_nested(_tensors()), tmp_path / "a.pt")
    write_safetensors(tmp_path / "a.safetensors", _tensors(), metadata={"format": "pt"})
    result = diff_checkpoints(str(tmp_path / "a.pt"), str(tmp_path / "a.safetensors"))
    assert result.equal and result.compared == 5
    assert (result.a_format, result.b_format) == ("torch zip", "safetensors")


def test_safetensors_written_by_the_package_itself_read_the_same(tmp_path) -> None:
    save_file = pytest.importorskip("safetensors.torch").save_file
    save_file(_tensors(), tmp_path / "pkg.safetensors")
    write_safetensors(tmp_path / "ours.safetensors", _tensors())
    assert diff_checkpoints(
        str(tmp_path / "pkg.safetensors"), str(tmp_path / "ours.safetensors")
    ).equal


def test_added_removed_dtype_shape_and_value_changes(tmp_path) -> None:
    before = {"w": torch.zeros(4), "gone": torch.ones(1), "s": torch.ones(2), "d": torch.ones(2)}
    before |= {"lr": 0.1, "name": "run"}
    after = {"w": torch.tensor([0.0, 0.5, 0.0, -2.0]), "new": torch.ones(1)}
    after |= {"s": torch.ones(3), "d": torch.ones(2, dtype=torch.float64), "lr": 0.2}
    after |= {"name": "run"}
    torch.save(before, tmp_path / "a.pt")
    torch.save(after, tmp_path / "b.pt")
    result = diff_checkpoints(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    assert not result.equal and result.removed == ["gone"] and result.added == ["new"]
    changes = {c.key: c for c in result.changed}
    assert sorted(changes) == ["d", "lr", "s", "w"]
    assert (changes["d"].kind, changes["d"].before, changes["d"].after) == (
        "dtype",
        "float32",
        "float64",
    )
    assert (changes["s"].kind, changes["s"].before, changes["s"].after) == ("shape", "[2]", "[3]")
    assert (changes["lr"].kind, changes["lr"].before, changes["lr"].after) == (
        "value",
        "0.1",
        "0.2",
    )
    w = changes["w"]
    assert (w.kind, w.beyond, w.elements, w.max_abs) == ("values", 2, 4, 2.0)
    tolerant = diff_checkpoints(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), atol=1.0)
    assert {c.key: c.beyond for c in tolerant.changed if c.kind == "values"} == {"w": 1}


def test_nan_matches_nan_infinities_match_themselves(tmp_path) -> None:
    a = torch.tensor([math.nan, math.inf, -math.inf, 1.0])
    assert tensor_difference(a, a.clone(), rtol=0, atol=0).beyond == 0
    b = torch.tensor([1.0, math.inf, math.inf, 1.0])
    difference = tensor_difference(a, b, rtol=0, atol=0)
    assert difference.beyond == 2 and math.isnan(difference.max_abs)


def test_tensors_larger_than_a_chunk_are_counted_in_every_chunk(monkeypatch) -> None:
    monkeypatch.setattr(compare, "CHUNK_ELEMENTS", 7)
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(10, 10, generator=generator)
    b = a + torch.randn(10, 10, generator=generator) * 1e-3
    b[3, 3] = a[3, 3] + 5
    expected = int((~torch.isclose(a, b, rtol=1e-4, atol=1e-4)).sum())
    difference = tensor_difference(a, b, rtol=1e-4, atol=1e-4)
    assert difference.beyond == expected and difference.max_abs == pytest.approx(5, abs=0.01)
    z = torch.randn(20, dtype=torch.complex64, generator=generator)
    shifted = z.clone()
    shifted[5] += 3j
    complex_difference = tensor_difference(z, shifted, rtol=0, atol=0)
    assert complex_difference.beyond == 1 and complex_difference.max_abs == pytest.approx(3)
    ints = tensor_difference(torch.arange(50), torch.arange(50).flip(0), rtol=0, atol=0)
    assert ints.beyond == 50 and ints.max_abs == 49


def test_a_legacy_file_against_a_zip_file(tmp_path) -> None:
    state = _nested(_tensors())
    torch.save(state, tmp_path / "new.pt")
    torch.save(state, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    result = diff_checkpoints(str(tmp_path / "old.pt"), str(tmp_path / "new.pt"))
    assert result.equal and result.a_format == "torch legacy"


def test_sharded_safetensors_by_index_or_folder(tmp_path) -> None:
    tensors = _tensors()
    keys = list(tensors)
    index = write_sharded(
        tmp_path / "sharded",
        {
            "model-00001-of-00002.safetensors": {k: tensors[k] for k in keys[:2]},
            "model-00002-of-00002.safetensors": {k: tensors[k] for k in keys[2:]},
        },
    )
    torch.save(_nested(tensors), tmp_path / "a.pt")
    assert diff_checkpoints(str(index), str(tmp_path / "a.pt")).equal
    assert diff_checkpoints(str(tmp_path / "sharded"), str(tmp_path / "a.pt")).equal
    index.write_text('{"weight_map": {"model.w": "../a.pt"}}')
    with pytest.raises(DiffRefused, match=r"'model.w': shard '../a.pt' is not a file beside"):
        diff_checkpoints(str(index), str(tmp_path / "a.pt"))


def _dcp_state() -> dict:
    return {"model": {"w": torch.randn(6, 4), "b": torch.zeros(4)}, "step": 7, "name": "run"}


def test_a_dcp_folder_equals_its_torch_save_consolidation(tmp_path) -> None:
    """format_utils.dcp_to_torch_save is DCP's own consolidation to one file."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    state = _dcp_state()
    dcp.save(state, checkpoint_id=tmp_path / "dcp")
    dcp_to_torch_save(tmp_path / "dcp", tmp_path / "whole.pt")
    result = diff_checkpoints(str(tmp_path / "dcp"), str(tmp_path / "whole.pt"))
    assert result.equal and result.compared == 4 and result.a_format == "DCP folder"
    state["model"]["w"][0, 0] += 1
    state["step"] = 8
    dcp.save(state, checkpoint_id=tmp_path / "dcp2")
    changed = diff_checkpoints(str(tmp_path / "dcp"), str(tmp_path / "dcp2")).changed
    assert [(c.key, c.kind, c.beyond) for c in changed] == [
        ("model.w", "values", 1),
        ("step", "value", None),
    ]


def test_a_dcp_folder_equals_its_consolidated_hf_safetensors(tmp_path) -> None:
    """DCP's HF consolidation (`_consolidate_hf_safetensors`) checked against DCP's own save."""
    pytest.importorskip("safetensors")
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint._consolidate_hf_safetensors import (
        consolidate_safetensors_files,
    )

    # floats only: torch 2.13's consolidation calls torch.finfo on every dtype
    state = {"model.w": torch.randn(6, 4), "model.b": torch.randn(4).to(torch.bfloat16)}
    dcp.save(state, checkpoint_id=tmp_path / "dcp")
    dcp.save(
        state, storage_writer=HuggingFaceStorageWriter(str(tmp_path / "hf"), save_distributed=True)
    )
    (tmp_path / "out").mkdir()
    consolidate_safetensors_files(
        str(tmp_path / "hf"), str(tmp_path / "out"), fqn_to_index_mapping=dict.fromkeys(state, 1)
    )
    result = diff_checkpoints(str(tmp_path / "dcp"), str(tmp_path / "out"))
    assert result.equal and result.b_format == "safetensors (sharded)" and result.compared == 2


def test_a_file_with_findings_is_refused_naming_the_global(tmp_path) -> None:
    import collections

    torch.save({"w": torch.ones(1), "q": collections.deque([1])}, tmp_path / "a.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "b.pt")
    with pytest.raises(DiffRefused, match=r"a.pt: refused.*collections.deque.*nothing from it"):
        diff_checkpoints(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(DiffRefused, match=r"raw.pkl: refused"):
        diff_checkpoints(str(tmp_path / "raw.pkl"), str(tmp_path / "b.pt"))


def test_unreadable_inputs_are_refused_with_the_reason(tmp_path) -> None:
    torch.save({"w": torch.ones(1)}, tmp_path / "b.pt")
    with pytest.raises(DiffRefused, match=r"missing.pt: unreadable: no such file"):
        diff_checkpoints(str(tmp_path / "missing.pt"), str(tmp_path / "b.pt"))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "b.pt").read_bytes()[:100])
    with pytest.raises(DiffRefused, match=r"cut.pt: unreadable"):
        diff_checkpoints(str(tmp_path / "cut.pt"), str(tmp_path / "b.pt"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DiffRefused, match=r"folder: a folder, but not a DCP folder"):
        diff_checkpoints(str(tmp_path / "folder"), str(tmp_path / "b.pt"))
    with pytest.raises(ValueError, match="rtol and atol must be >= 0"):
        diff_checkpoints(str(tmp_path / "b.pt"), str(tmp_path / "b.pt"), atol=-1)
