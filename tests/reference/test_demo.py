from __future__ import annotations

import pytest

from pytest_ckpt.reference import demo


def test_demo_round_trips_every_stage_and_writes_the_report(tmp_path, capsys) -> None:
    report = tmp_path / "report.md"
    assert demo.main(["--hosts", "cnn", "--grids", "1x1,2x2", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    assert "14 passed, 0 failed" in out
    assert "BLENDING" in out and "cnn 2x2" in out
    text = report.read_text()
    assert "14/14 cells pass" in text
    assert "| PRUNED | PASS | PASS |" in text


def test_demo_reports_a_failing_cell(tmp_path, capsys, monkeypatch) -> None:
    from pytest_ckpt.reference import slot as slot_module

    original = slot_module.SeedSlot.get_extra_state

    def leaky(self):
        extra = original(self)
        if self.state is not None and self.state.stage.name == "BLENDING":
            extra["seed_state"]["stage"] = self.state.stage  # an Enum member: unsafe
        return extra

    monkeypatch.setattr(slot_module.SeedSlot, "get_extra_state", leaky)
    report = tmp_path / "report.md"
    assert demo.main(["--hosts", "cnn", "--grids", "1x1", "--report", str(report)]) == 1
    captured = capsys.readouterr()
    assert "6 passed, 1 failed" in captured.out
    assert "FAIL cnn 1x1 BLENDING: unsafe globals in checkpoint" in captured.err
    assert "SeedStage" in report.read_text()


@pytest.mark.parametrize("args", [["--grids", "3y2"], ["--hosts", "rnn"]])
def test_demo_rejects_bad_arguments_with_a_usage_error(args, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        demo.main(args)
    assert exit_info.value.code == 2
    assert "error: argument --" in capsys.readouterr().err
