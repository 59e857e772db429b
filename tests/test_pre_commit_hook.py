"""`.pre-commit-hooks.yaml` is a valid pre-commit hook definition (checked with a small
parser for the YAML subset it uses: PyYAML is not a dependency), its `files` pattern picks
the checkpoint suffixes, and the command it names exists and takes many files at once, as
pre-commit passes them."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_the_entry_command_exists_and_audits_many_files_at_once(tmp_path) -> None:
    (hook,) = parse_hooks(HOOKS.read_text())
    command, *args = shlex.split(str(hook["entry"]))
    script = shutil.which(command, path=str(Path(sys.executable).parent))
    if script is None:
        pytest.fail(f"{command} is not installed beside {sys.executable}: pip install -e .")
    files = []
    for i in range(5):
        files.append(tmp_path / f"ok{i}.pt")
        torch.save({"w": torch.zeros(i + 1)}, files[-1])
    bad = tmp_path / "bad.pth"
    torch.save({"h": __import__("collections").deque([1])}, bad)
    result = subprocess.run(
        [script, *args, *map(str, files), str(bad)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr  # pre-commit fails the commit on non-zero
    lines = result.stdout.splitlines()
    assert [line for line in lines if ": ok (zip" in line] == [
        f"{path}: ok (zip, 1 storages): loads with weights_only=True" for path in files
    ]
    assert f"{bad}: 1 finding(s) (zip)" in lines
