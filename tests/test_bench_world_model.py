"""The world-model benchmark scripts run (`--quick`) and print one JSON document with the expected keys.

No timing is asserted: the numbers depend on the machine and its load. The scripts run in this process (their
imports are shared with the other world-model tests, which keeps this fast); `bench/` goes on `sys.path` as it
does when a script is run, and the modules it imports from there are removed again afterwards.
"""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"
MACHINE_KEYS = {"cpu", "cpu_count", "torch_threads", "torch", "python", "load_average_before", "bench_seconds"}


@pytest.fixture
def bench_main(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Callable[[list[str]], None]]]:
    monkeypatch.syspath_prepend(str(BENCH))
    before = set(sys.modules)

    def load(script: str) -> Callable[[list[str]], None]:
        return runpy.run_path(str(BENCH / script), run_name=f"bench_{script[:-3]}")["main"]

    yield load
    for name in ("world_model", "timing"):  # bench/ modules imported by the scripts, not packages of ours
        if name not in before:
            sys.modules.pop(name, None)


def test_world_model_bench_quick(bench_main, capsys: pytest.CaptureFixture[str]) -> None:
    bench_main("world_model.py")(["--quick", "--threads", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "wan_world_model_rollout"
    assert set(report) >= MACHINE_KEYS
    assert report["image_size"] == [64, 64]
    assert {(cell["steps"], cell["samples"]) for cell in report["cells"]} == {(1, 1), (10, 1)}
    for cell in report["cells"]:
        assert {
            "median_s",
            "p90_s",
            "per_rollout_s",
            "ratio_to_reference",
            "median_cpu_s",
            "cpu_ratio_to_reference",
        } <= set(cell)
    assert report["reference"]["steps"] == 10 and report["reference"]["samples"] == 1
    assert set(report["linear_fit_vs_steps"]["G1"]) == {"ms_per_step", "fixed_ms", "cpu_ms_per_step", "cpu_fixed_ms"}
    (split,) = report["breakdown"]
    assert (
        set(split["pieces_ms"]) == set(split["pieces_cpu_ms"]) == {"vae_encode", "transformer_denoising", "vae_decode"}
    )
    assert split["dominant"] in split["pieces_ms"]
    assert sum(split["shares_of_pieces"].values()) == pytest.approx(1.0, abs=0.01)


def test_world_model_server_bench_quick(bench_main, capsys: pytest.CaptureFixture[str]) -> None:
    bench_main("world_model_server.py")(["--quick", "--threads", "1"])
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"] == "wan_world_model_server_round_trip"
    assert set(report) >= MACHINE_KEYS
    ways = {"in_process_ms", "server_ms", "server_token_ms", "overhead_ms", "overhead_token_ms", "ratio", "ratio_token"}
    ways |= {"in_process_cpu_ms", "server_cpu_ms", "overhead_cpu_ms", "overhead_token_cpu_ms", "cpu_ratio"}
    assert [(row["steps"], row["samples"]) for row in report["wan"]] == [(1, 1)]
    assert ways <= set(report["wan"][0])
    sizes = {(tuple(row["image_size"]), row["samples"]) for row in report["transport"]}
    assert sizes == {((64, 64), 1), ((64, 64), 8), ((480, 640), 1), ((480, 640), 8)}
    for row in report["transport"]:
        assert ways | {"request_mb", "reply_mb", "mb_per_s", "reply_encode_ms", "reply_decode_ms", "rest_ms"} <= set(
            row
        )
    assert set(report["connect_ms"]) == {"no_token", "token"}
