"""recipes/plot_curves.py, promote_model.py and compare_setups.sh (validate_run.py: in
test_train.py, which has a training run to validate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
sys.path.insert(0, str(RECIPES))

import plot_curves  # noqa: E402
import promote_model  # noqa: E402


def _run_with_metrics(folder: Path, points: list[tuple[float, int, float]]) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"kind": "train", "step": 1, "loss": 1.0, "train_cpu_s": 1.0})]
    lines += [json.dumps({"kind": "valid", "step": step, "train_cpu_s": cpu_s,
                          "si_sdri_T": value}) for cpu_s, step, value in points]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_curves_table_reads_the_last_value_within_each_budget(tmp_path: Path) -> None:
    a = _run_with_metrics(tmp_path / "a", [(60, 10, -3.0), (180, 30, -1.0), (600, 90, 2.0)])
    b = _run_with_metrics(tmp_path / "b", [(120, 40, 0.5)])
    table = tmp_path / "curves.md"
    plot_curves.main([str(a), f"short={b}", "--budgets", "1,2,4,5,16,18", "--table", str(table)])
    rows = table.read_text().splitlines()
    assert rows[0] == ("| run | 1 CPU-min | 2 CPU-min | 4 CPU-min | 5 CPU-min | 16 CPU-min "
                       "| 18 CPU-min | best | steps |")
    assert rows[2] == "| a | -3.00 | -3.00 | -1.00 | -1.00 | +2.00 | – | +2.00 | 90 |"
    # b stopped after 2 CPU-minutes: later budgets are not its value
    assert rows[3] == "| short | – | +0.50 | +0.50 | – | – | – | +0.50 | 40 |"
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        plot_curves.read_curve(tmp_path / "missing", "si_sdri_T")


def test_promotion_needs_a_better_score_and_swaps_the_folder_whole(tmp_path: Path) -> None:
    assert promote_model.better("separate", {"si_sdri": 1.0}, {"si_sdri": 0.5})
    assert not promote_model.better("separate", {"si_sdri": 0.5}, {"si_sdri": 0.5})
    # enhancement: SI-SDRi up is not enough when PESQ drops
    assert not promote_model.better(
        "enhance", {"si_sdri": 3.0, "pesq_wb": 1.2}, {"si_sdri": 1.0, "pesq_wb": 1.3}
    )
    assert promote_model.better(
        "enhance", {"si_sdri": 3.0, "pesq_wb": 1.3}, {"si_sdri": 1.0, "pesq_wb": 1.3}
    )
    new, bundled = tmp_path / "new", tmp_path / "models" / "sep"
    for folder, text in ((new, "new"), (bundled, "old")):
        folder.mkdir(parents=True)
        for name in promote_model.FILES:
            (folder / name).write_text(f"{text} {name}")
    (bundled / "stray.txt").write_text("left from before")
    promote_model.install(new, bundled)
    assert sorted(p.name for p in bundled.iterdir()) == sorted(promote_model.FILES)
    assert (bundled / "config.json").read_text() == "new config.json"
    assert sorted(p.name for p in bundled.parent.iterdir()) == ["sep"]  # nothing left behind


def test_promotion_refuses_a_folder_without_model_files(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    code = promote_model.main(["separate", str(tmp_path / "empty"), str(tmp_path / "empty"),
                               str(tmp_path)])
    assert code == 2 and "missing config.json" in capsys.readouterr().err


def test_promotion_passes_the_options_after_the_double_dash(tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    folders = []
    for name in ("cand", "bundled"):
        folders.append(tmp_path / name)
        folders[-1].mkdir()
        for file in promote_model.FILES:
            (folders[-1] / file).write_text(file)
    calls = []

    def fake_score(command, model, split, count, out, extra):
        calls.append((model.name, count, extra))
        return {"si_sdri": 1.0 if model.name == "cand" else 0.5}

    monkeypatch.setattr(promote_model, "score", fake_score)
    code = promote_model.main(["separate", *map(str, folders), str(tmp_path), "--count", "3",
                               "--work", str(tmp_path / "w"), "--", "--threads", "1"])
    assert code == 0 and "candidate is better" in capsys.readouterr().out
    assert calls == [("cand", 3, ["--threads", "1"]), ("bundled", 3, ["--threads", "1"])]
    assert (folders[1] / "config.json").read_text() == "config.json"  # no --apply: unchanged


def test_compare_setups_names_the_set_ups() -> None:
    result = subprocess.run(["bash", str(RECIPES / "compare_setups.sh"), "/c", "/r", "Z"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "unknown set-up 'Z'" in result.stderr
    usage = subprocess.run(["bash", str(RECIPES / "compare_setups.sh")],
                           capture_output=True, text=True)
    assert usage.returncode == 2 and "CPU_MINUTES" in usage.stderr
    assert "set -e" not in usage.stderr
    env = {k: v for k, v in os.environ.items() if k != "G_INIT"}
    g = subprocess.run(["bash", str(RECIPES / "compare_setups.sh"), "/c", "/r", "G"],
                       capture_output=True, text=True, env=env)
    assert g.returncode == 2 and "needs G_INIT" in g.stderr
