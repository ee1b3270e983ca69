"""`eva eval ladder-plot`: rungs of several ladder runs in one figure; bad specs and unknown rungs are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from eva_runtime.cli import app
from eva_runtime.world_model.ladder_plot import load_rungs, parse_rung_spec

runner = CliRunner()


def ladder_json(path: Path, rows: list[tuple[str, int, dict]]) -> Path:
    path.write_text(
        json.dumps([{"rung": name, "successes": s, "episodes": 10, "stages_reached": st} for name, s, st in rows])
    )
    return path


def test_rungs_from_two_runs_make_one_figure(tmp_path: Path) -> None:
    import matplotlib.image

    first = ladder_json(tmp_path / "a.json", [("oracle", 9, {"touched": 10, "lifted": 9}), ("other", 0, {})])
    second = ladder_json(tmp_path / "b.json", [("model", 3, {"touched": 9, "lifted": 4})])
    out = tmp_path / "plot.png"
    specs = [f"the oracle={first}:oracle", f"a model={second}:model", f"nothing measured={first}:other"]
    result = runner.invoke(
        app,
        [
            "eval",
            "ladder-plot",
            "--out",
            str(out),
            "--target",
            "0.3",
            *[arg for spec in specs for arg in ("--rung", spec)],
        ],
    )
    assert result.exit_code == 0, result.output
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and np.ptp(image[..., :3]) > 0.5  # drawn, not blank


def test_a_rung_spec_names_label_file_and_rung() -> None:
    assert parse_rung_spec("SFT best=runs/x/ladder.json:SFT varied 1600 steps") == (
        "SFT best",
        Path("runs/x/ladder.json"),
        "SFT varied 1600 steps",
    )
    for bad in ("no-equals", "label=file-without-rung", "=f.json:r", "label=:rung"):
        with pytest.raises(ValueError, match="LABEL=LADDER_JSON:RUNG_NAME"):
            parse_rung_spec(bad)


def test_unknown_rungs_and_missing_files_are_refused_with_what_exists(tmp_path: Path) -> None:
    path = ladder_json(tmp_path / "a.json", [("oracle", 9, {})])
    with pytest.raises(ValueError, match=r"no rung 'model'; it has \['oracle'\]"):
        load_rungs([f"m={path}:model"])
    with pytest.raises(ValueError, match=r"missing\.json"):
        load_rungs([f"m={tmp_path / 'missing.json'}:oracle"])
    result = runner.invoke(app, ["eval", "ladder-plot", "--out", str(tmp_path / "p.png"), "--rung", f"m={path}:model"])
    assert (
        result.exit_code == 2
        and "no rung 'model'" in " ".join(result.output.split())
        and not (tmp_path / "p.png").exists()
    )
