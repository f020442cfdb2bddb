"""Write-then-rename helpers: a target is always absent, the old version or the new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffsep.atomic import replacing, replacing_folder, temporary_sibling


def test_replacing_renames_on_success_and_cleans_up_on_error(tmp_path: Path) -> None:
    target = tmp_path / "report.csv"
    target.write_text("old")
    with replacing(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".report.partial-")
        assert temp.suffix == ".csv" and temp.exists()
        temp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the end
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), replacing(target) as temp:
        temp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_temporary_siblings_are_distinct(tmp_path: Path) -> None:
    names = {temporary_sibling(tmp_path / "a.wav").name for _ in range(20)}
    assert len(names) == 20 and all(n.startswith(".a.partial-") for n in names)


def test_replacing_folder_puts_the_old_folder_back_when_the_swap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    with replacing_folder(folder) as staging:
        (staging / "weights").write_text("v1")
    assert (folder / "weights").read_text() == "v1"

    real_rename = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst) == folder and Path(src).name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space"), replacing_folder(folder) as staging:
        (staging / "weights").write_text("v2")
    assert (folder / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    monkeypatch.undo()
    with replacing_folder(folder) as staging:
        (staging / "weights").write_text("v2")
    assert (folder / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
