"""Two ladder rungs paired by seed: the four counts, McNemar's exact p, the per-seed changes, and refusals of rows
that did not run the same seeds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from eva_runtime.cli import app
from eva_runtime.world_model.ladder_paired import compare_rungs, find_rung, mcnemar_exact_p, render_paired


def _row(name: str, outcomes: list[bool], stages: list[int], reaches: list[float | None], first_seed=1000) -> dict:
    return {
        "rung": name,
        "first_seed": first_seed,
        "per_episode": outcomes,
        "per_episode_stage": stages,
        "per_episode_reach_m": reaches,
    }


def test_mcnemar_exact_p_matches_the_binomial_tail_by_hand() -> None:
    # 2 against 7 discordant seeds: 2 * (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 2 * 46 / 512.
    assert mcnemar_exact_p(2, 7) == pytest.approx(2 * 46 / 512)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 / 1024)
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact_p(-1, 2)


@given(a_only=st.integers(0, 60), b_only=st.integers(0, 60))
def test_mcnemar_p_is_a_probability_symmetric_and_shrinks_as_the_split_grows(a_only: int, b_only: int) -> None:
    p = mcnemar_exact_p(a_only, b_only)
    assert 0.0 < p <= 1.0 and p == mcnemar_exact_p(b_only, a_only)
    if b_only > a_only:  # one more seed on the side already ahead makes the split less likely under the null
        assert mcnemar_exact_p(a_only, b_only + 1) <= p


@given(outcomes=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=2, max_size=60))
def test_the_four_counts_partition_the_seeds(outcomes: list[tuple[bool, bool]]) -> None:
    a = _row("a", [x for x, _ in outcomes], [0] * len(outcomes), [0.05] * len(outcomes))
    b = _row("b", [y for _, y in outcomes], [0] * len(outcomes), [0.05] * len(outcomes))
    c = compare_rungs(a, b)
    assert c.both + c.a_only + c.b_only + c.neither == c.episodes == len(outcomes)
    assert c.both + c.a_only == sum(a["per_episode"]) and c.both + c.b_only == sum(b["per_episode"])
    assert c.stage_change == (0.0, 0.0) and c.reach_change_m == (0.0, 0.0)


def test_stage_and_reach_changes_are_means_of_per_seed_differences() -> None:
    a = _row("a", [False, False, True, False], [1, 1, 4, 0], [0.06, 0.08, 0.04, None])
    b = _row("b", [True, False, True, False], [4, 1, 4, 1], [0.04, 0.07, 0.04, 0.09])
    c = compare_rungs(a, b)
    assert (c.both, c.a_only, c.b_only, c.neither) == (1, 0, 1, 2)
    stage_mean, stage_half = c.stage_change
    assert stage_mean == pytest.approx((3 + 0 + 0 + 1) / 4)
    sd = math.sqrt(sum((d - 1.0) ** 2 for d in (3, 0, 0, 1)) / 3)
    assert stage_half == pytest.approx(1.959963984540054 * sd / 2)
    reach_mean, _ = c.reach_change_m  # the seed without a reach in A is left out
    assert reach_mean == pytest.approx((-0.02 - 0.01 + 0.0) / 3)
    table = render_paired(c)
    assert "| a | b | 4 | 1 | 0 | 1 | 2 |" in table and "+1.00 +- " in table and " cm |" in table


def test_plan_executability_is_paired_by_seed_and_absent_from_rows_written_before_it() -> None:
    a = _row("a", [False, True, False], [1, 4, 1], [0.06, 0.04, 0.07])
    b = _row("b", [False, True, True], [1, 4, 4], [0.06, 0.04, 0.04])
    assert compare_rungs(a, b).plan_score_change is None  # neither row has per-episode plan scores
    assert "| - |" in render_paired(compare_rungs(a, b))
    a["per_episode_plan_score"] = [5.0, 6.0, None]  # an episode without a scored plan is left out
    b["per_episode_plan_score"] = [5.5, 6.5, 7.0]
    mean, half = compare_rungs(a, b).plan_score_change
    assert mean == pytest.approx(0.5) and half == pytest.approx(0.0)
    assert "| +0.50 +- 0.00 |" in render_paired(compare_rungs(a, b))


def test_a_run_result_keeps_each_episodes_mean_plan_score_leaving_out_unscored_plans() -> None:
    from eva_runtime.control.deployment import _mean_finite

    assert _mean_finite([5.0, float("nan"), 7.0]) == pytest.approx(6.0)
    assert _mean_finite([]) is None and _mean_finite([float("nan")]) is None


def test_rows_that_did_not_run_the_same_seeds_are_refused() -> None:
    a = _row("a", [True, False], [4, 1], [0.04, 0.06])
    with pytest.raises(ValueError, match="ran 2 episodes"):
        compare_rungs(a, _row("b", [True], [4], [0.04]))
    with pytest.raises(ValueError, match="started at seed 1000"):
        compare_rungs(a, _row("b", [True, True], [4, 4], [0.04, 0.04], first_seed=2000))
    with pytest.raises(ValueError, match="per_episode"):
        compare_rungs(a, {"rung": "old"})


def test_the_command_prints_the_table_and_exits_2_naming_the_rungs_it_has(tmp_path: Path) -> None:
    ladder = tmp_path / "ladder.json"
    rows = [_row("sft", [True, False, False], [4, 1, 1], [0.04, 0.06, 0.07])]
    rows.append(_row("aligned", [True, True, False], [4, 4, 1], [0.04, 0.04, 0.06]))
    ladder.write_text(json.dumps(rows))
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "paired", "--ladder", str(ladder), "--a", "sft", "--b", "aligned"])
    assert result.exit_code == 0, result.output
    assert "| sft | aligned | 3 | 1 | 0 | 1 | 1 | 1.000 |" in result.output
    missing = runner.invoke(app, ["eval", "paired", "--ladder", str(ladder), "--a", "sft", "--b", "nonesuch"])
    assert missing.exit_code == 2 and "'aligned'" in missing.output


def test_a_missing_or_unparsable_ladder_file_is_a_value_error_naming_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"broken\.json: not a ladder\.json"):
        find_rung(broken, "sft")
    with pytest.raises(ValueError, match=r"missing\.json"):
        find_rung(tmp_path / "missing.json", "sft")
    result = CliRunner().invoke(app, ["eval", "paired", "--ladder", str(broken), "--a", "x", "--b", "y"])
    assert result.exit_code == 2 and "not a ladder.json" in " ".join(result.output.split())
