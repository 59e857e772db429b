"""Where torch versions differ in what torch.load(weights_only=True) checks, the auditor follows
the installed torch. These pass on every torch `make test-torch TORCH=X.Y.Z` runs them on; on the
pinned one they pin today's behaviour."""

from __future__ import annotations

import torch

from pytest_ckpt.audit import audit_file
from tests.audit.conftest import torch_verdicts

DECLINED = {"resource-limit", "cannot-verify"}  # by design: the auditor does not vouch


def test_sparse_tensors_are_never_called_ok_where_this_torch_refuses_them(tmp_path) -> None:
    """torch 2.14 validates sparse indices under weights_only whatever the global setting
    (2.13 only under check_sparse_tensor_invariants); an index past the size is then refused,
    and the audit may not say ok. 2.15 keeps the list to validate thread-local."""
    good = torch.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (2,), check_invariants=True)
    bad = torch.sparse_coo_tensor([[5]], [1.0], (2,), check_invariants=False)
    paths = []
    for name, tensor in (("good", good), ("bad", bad)):
        paths.append(tmp_path / f"{name}.pt")
        torch.save({"s": tensor}, paths[-1])
    torch_says = torch_verdicts(paths)
    for path in paths:
        report = audit_file(path)
        assert report.error is None, report.error
        if report.loadable:
            assert torch_says[str(path)], f"{path.name}: audit says ok, torch refuses"
        else:
            kinds = {finding.kind for finding in report.findings}
            assert not torch_says[str(path)] or kinds <= DECLINED, (path.name, kinds)
    if torch_says[str(paths[0])] and not torch_says[str(paths[1])]:  # torch >= 2.14
        assert not audit_file(paths[1]).loadable
