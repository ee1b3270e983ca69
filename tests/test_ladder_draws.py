"""Two models over several sampling draws each: per-seed success shares and executability, pooled success, how
often a model's own draws disagree, and refusals of rows that did not run the same seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from eva_runtime.cli import app
from eva_runtime.world_model.ladder_draws import ModelDraws, compare_draws, load_draws, render_draws


def _row(name: str, outcomes: list[bool], scores: list[float | None] | None = None, first_seed: int = 1000) -> dict:
    row: dict = {"rung": name, "first_seed": first_seed, "per_episode": outcomes}
    if scores is not None:
        row["per_episode_plan_score"] = scores
    return row


def test_success_shares_and_scores_are_per_seed_means_over_the_draws() -> None:
    a = ModelDraws.from_rows([_row("a0", [True, False, False, True], [5.0, 6.0, None, 4.0])])
    b = ModelDraws.from_rows(
        [
            _row("b0", [True, True, False, False], [6.0, 6.0, 7.0, None]),
            _row("b1", [False, True, False, True], [7.0, 8.0, None, None]),
        ]
    )
    assert b.success_share() == [0.5, 1.0, 0.0, 0.5]
    assert b.plan_score() == [6.5, 7.0, 7.0, None]  # draws without a scored plan are left out, not zeros
    assert b.disagreement() == 0.5 and a.disagreement() is None
    comparison = compare_draws(a, b)
    assert comparison.success_change[0] == pytest.approx((-0.5 + 1.0 + 0.0 - 0.5) / 4)
    # Seeds 2 and 3 have no score on one side: only seeds 0 and 1 are differenced.
    assert comparison.plan_score_change[0] == pytest.approx((1.5 + 1.0) / 2)
    table = render_draws(comparison)
    assert "| A | a0 | 1 | 2/4 |" in table and "| B | b0; b1 | 2 | 4/8 |" in table and "| 0.50 |" in table


@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=2, max_size=40))
def test_a_model_against_itself_changes_nothing_and_its_shares_are_fractions(outcomes) -> None:
    rows = [_row(f"d{k}", [o[k] for o in outcomes]) for k in range(3)]
    model = ModelDraws.from_rows(rows)
    assert all(share in (0.0, 1 / 3, 2 / 3, 1.0) for share in model.success_share())
    assert sum(model.success_share()) * 3 == pytest.approx(sum(map(sum, model.outcomes)))
    assert compare_draws(model, model).success_change == (0.0, 0.0)
    disagreeing = sum(len(set(o)) > 1 for o in outcomes)
    assert model.disagreement() == disagreeing / len(outcomes)


def test_draws_or_models_on_other_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="same seeds"):
        ModelDraws.from_rows([_row("a0", [True]), _row("a1", [True], first_seed=2000)])
    with pytest.raises(ValueError, match="same seeds"):
        ModelDraws.from_rows([_row("a0", [True]), _row("a1", [True, False])])
    with pytest.raises(ValueError, match="same seeds"):
        compare_draws(
            ModelDraws.from_rows([_row("a", [True])]), ModelDraws.from_rows([_row("b", [True], first_seed=7)])
        )
    with pytest.raises(ValueError, match="per_episode"):
        ModelDraws.from_rows([{"rung": "old"}])


def test_the_command_pools_rungs_from_several_files_and_exits_2_on_a_bad_spec(tmp_path: Path) -> None:
    first, second = tmp_path / "one.json", tmp_path / "two.json"
    first.write_text(json.dumps([_row("sft", [True, False, True], [5.0, 5.0, 5.0])]))
    second.write_text(
        json.dumps(
            [
                _row("sft draw 1", [False, False, True], [5.0, 5.0, 5.0]),
                _row("aligned", [True, True, True], [6.0, 6.0, 6.0]),
            ]
        )
    )
    runner = CliRunner()
    args = ["eval", "draws", "--a", f"{first}:sft", "--a", f"{second}:sft draw 1", "--b", f"{second}:aligned"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (
        "| A | sft; sft draw 1 | 2 | 3/6 |" in result.output and "plan executability +1.000 +- 0.000" in result.output
    )
    assert load_draws([f"{first}:sft"]).names == ("sft",)
    bad = runner.invoke(app, ["eval", "draws", "--a", "no-colon", "--b", f"{second}:aligned"])
    assert bad.exit_code == 2 and "LADDER_JSON:RUNG_NAME" in bad.output
