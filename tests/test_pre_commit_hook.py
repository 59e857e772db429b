"""`.pre-commit-hooks.yaml` is a valid pre-commit hook definition (checked with a small
parser for the YAML subset it uses: PyYAML is not a dependency), its `files` pattern picks
the checkpoint suffixes, and the command it names exists and takes many files at once, as
pre-commit passes them: `entry`, then `args`, then the file names (relative to the
repository root), in a subprocess. A file name is never taken for an option, and a `.bin`
that is not a checkpoint at all passes."""

from __future__ import annotations

import pickle
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.audit.conftest import torch_verdicts

HOOKS = Path(__file__).resolve().parents[1] / ".pre-commit-hooks.yaml"
# pre-commit's documented hook keys (https://pre-commit.com/#creating-new-hooks)
REQUIRED = {"id", "name", "entry", "language"}
OPTIONAL = {
    "alias", "files", "exclude", "types", "types_or", "exclude_types", "always_run",
    "fail_fast", "verbose", "pass_filenames", "require_serial", "description",
    "language_version", "minimum_pre_commit_version", "args", "stages",
    "additional_dependencies", "log_file",
}  # fmt: skip
LANGUAGES = {"python", "system", "script", "docker", "node", "rust", "golang", "conda"}


def parse_hooks(text: str) -> list[dict[str, object]]:
    """A YAML list of flat mappings: `- key: value` starts a hook, `  key: value` continues
    it; values are plain scalars, `true`/`false`, or `[a, b]` flow lists."""
    hooks: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"(- |  )([a-z_]+): (.+)", line)
        assert match, f"line {number} is outside the subset: {line!r}"
        lead, key, raw = match.groups()
        if lead == "- ":
            hooks.append({})
        assert hooks and key not in hooks[-1], f"line {number}: {key} out of place"
        value: object = raw
        if raw in ("true", "false"):
            value = raw == "true"
        elif raw.startswith("["):
            assert raw.endswith("]"), f"line {number}: unclosed list"
            value = [item.strip() for item in raw[1:-1].split(",")]
        else:
            assert raw[0] not in "'\"{&*!|>%@`", f"line {number}: quoting outside the subset"
            assert ": " not in raw and " #" not in raw, f"line {number}: YAML would split it"
        hooks[-1][key] = value
    return hooks


def test_the_hook_file_has_pre_commit_s_keys_and_a_files_pattern_for_checkpoints() -> None:
    (hook,) = parse_hooks(HOOKS.read_text())
    assert REQUIRED <= hook.keys() <= REQUIRED | OPTIONAL
    assert hook["id"] == "pytest-ckpt-audit" and hook["language"] in LANGUAGES
    assert hook.get("pass_filenames", True) is True
    pattern = re.compile(str(hook["files"]))
    for name in ("a.pt", "dir/b.pth", "c.ckpt", "pytorch_model.bin", "model.safetensors"):
        assert pattern.search(name), name
    for name in ("config.json", "train.py", "notes.pt.txt", "README.md"):
        assert not pattern.search(name), name


def run_hook(root: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    """The hook as pre-commit runs it: `entry` split as a shell would, the hook's `args`,
    then the staged file names relative to the repository root, from that root."""
    (hook,) = parse_hooks(HOOKS.read_text())
    command, *entry_args = shlex.split(str(hook["entry"]))
    script = shutil.which(command, path=str(Path(sys.executable).parent))
    if script is None:
        pytest.fail(f"{command} is not installed beside {sys.executable}: pip install -e .")
    args = [str(a) for a in hook.get("args", [])]  # type: ignore[union-attr]
    return subprocess.run(
        [script, *entry_args, *args, *names], capture_output=True, text=True, timeout=120, cwd=root
    )


def test_the_entry_command_exists_and_audits_many_files_at_once(tmp_path) -> None:
    files = []
    for i in range(5):
        files.append(tmp_path / f"ok{i}.pt")
        torch.save({"w": torch.zeros(i + 1)}, files[-1])
    bad = tmp_path / "bad.pth"
    torch.save({"h": __import__("collections").deque([1])}, bad)
    result = run_hook(tmp_path, [*map(str, files), str(bad)])
    assert result.returncode == 1, result.stderr  # pre-commit fails the commit on non-zero
    lines = result.stdout.splitlines()
    assert [line for line in lines if ": ok (zip" in line] == [
        f"{path}: ok (zip, 1 storages): loads with weights_only=True" for path in files
    ]
    assert f"{bad}: 1 finding(s) (zip)" in lines


def test_a_committed_file_named_like_an_option_is_audited_not_obeyed(tmp_path, monkeypatch) -> None:
    """`--allow=evilmod.pt` is a file name: were it taken for the option, it would allow the
    global evilmod.pt and vouch for a file torch refuses."""
    evilmod = types.ModuleType("evilmod")
    planted = type("pt", (), {"__module__": "evilmod"})
    evilmod.pt = planted  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "evilmod", evilmod)
    torch.save({"x": planted()}, tmp_path / "evil.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "--allow=evilmod.pt")
    assert torch_verdicts([tmp_path / "evil.pt"]) == {str(tmp_path / "evil.pt"): False}

    result = run_hook(tmp_path, ["--allow=evilmod.pt", "evil.pt"])
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "--allow=evilmod.pt: ok (zip, 1 storages): loads with weights_only=True" in lines
    assert "evil.pt: 1 finding(s) (zip)" in lines


def test_audit_paths_after_a_double_dash_are_files_whatever_they_look_like(
    tmp_path, monkeypatch, capsys
) -> None:
    from pytest_ckpt.cli import main

    monkeypatch.chdir(tmp_path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "--json")
    torch.save({"w": torch.zeros(1)}, tmp_path / "-x.pt")
    assert main(["audit", "--", "--json", "-x.pt"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "--json: ok (zip, 1 storages): loads with weights_only=True",
        "-x.pt: ok (zip, 1 storages): loads with weights_only=True",
    ]


def test_an_option_after_the_double_dash_is_a_missing_file_with_a_hint(tmp_path) -> None:
    """What a user who adds `args: [--allow=...]` to the hook sees: the commit fails."""
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    result = run_hook(tmp_path, ["--allow=mypkg.Config", "model.pt"])
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "pytest-ckpt audit: --allow=mypkg.Config: no such file (after `--` every argument is "
        "a file name: put options before the `--`)"
    ]


def not_checkpoints(folder: Path) -> list[str]:
    """`.bin` files that are neither zip, pickle nor safetensors: raw arrays as
    `numpy.tofile` writes them, and an empty file."""
    rng = np.random.default_rng(20)
    rng.standard_normal(4096).astype(np.float32).tofile(folder / "embedding.bin")
    (rng.standard_normal(1000) * 0.02).astype(np.float16).tofile(folder / "weights_f16.bin")
    rng.integers(0, 50_000, 4096, dtype=np.int64).tofile(folder / "token_ids.bin")
    np.zeros(64, dtype=np.float32).tofile(folder / "zeros.bin")
    (folder / "empty.bin").write_bytes(b"")
    return ["embedding.bin", "weights_f16.bin", "token_ids.bin", "zeros.bin", "empty.bin"]


def test_bin_files_that_are_not_checkpoints_pass_the_hook_as_skipped(tmp_path) -> None:
    names = not_checkpoints(tmp_path)
    result = run_hook(tmp_path, names)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{name}: skipped: not a checkpoint" for name in names]
    assert result.stderr == ""


def test_the_same_bytes_named_pt_are_still_unreadable(tmp_path) -> None:
    not_checkpoints(tmp_path)
    (tmp_path / "embedding.pt").write_bytes((tmp_path / "embedding.bin").read_bytes())
    result = run_hook(tmp_path, ["embedding.pt"])
    assert result.returncode == 2
    assert result.stderr.startswith("pytest-ckpt audit: embedding.pt: ")


class RunsACommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (__import__("os").system, (self.command,))


def test_bin_files_that_are_pickles_or_torch_files_are_audited(tmp_path) -> None:
    """Pickles without a protocol header (protocols 0 and 1) are pickles too."""
    torch.save({"w": torch.ones(2)}, tmp_path / "pytorch_model.bin")
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    for protocol in (0, 1):
        hostile = pickle.dumps(RunsACommand("touch ran"), protocol=protocol)
        (tmp_path / f"protocol{protocol}.bin").write_bytes(hostile)
    names = ["pytorch_model.bin", "legacy.bin", "protocol0.bin", "protocol1.bin"]
    result = run_hook(tmp_path, names)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert "pytorch_model.bin: ok (zip, 1 storages): loads with weights_only=True" in out
    assert any(line.startswith("legacy.bin: ok (legacy") for line in out)
    for name in names[2:]:
        assert any(line.startswith(f"{name}: ") and "(raw-pickle)" in line for line in out), out
    assert result.stdout.count("global posix.system") == 2
    assert not (tmp_path / "ran").exists()


def test_a_folder_walk_skips_bin_files_that_are_not_checkpoints(tmp_path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    names = not_checkpoints(folder)
    torch.save({"w": torch.ones(2)}, folder / "model.bin")
    result = run_hook(tmp_path, ["run"])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    for name in names:
        assert f"run/{name}: skipped: not a checkpoint" in out
    assert out[-1] == f"total: {len(names) + 1} file(s) in run: 1 ok, 0 with findings, " + (
        f"0 unreadable, {len(names)} skipped"
    )
