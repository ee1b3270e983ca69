"""The resumable VAE run (`eva train world-model-vae`): a stopped run resumed ends with the weights of an
uninterrupted one; a resumption of another run, a corrupted state, a leftover state without --resume and an
unverified warm start are refused with the reason."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from eva_runtime.training.vae_candidates import VaeCandidate, VaeTraining
from tests.wan_helpers import save_scattered_cache

INSTRUCTION = "pick up the red cube"
TINY = VaeCandidate("tiny_test", z_dim=4, base_dim=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vae_run")
    return save_scattered_cache(root / "cache.npz", episodes=3, length=44, size=16, instruction=INSTRUCTION)


@pytest.fixture(autouse=True)
def tiny_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    from eva_runtime.training import wm_recipe

    monkeypatch.setitem(wm_recipe.CANDIDATES, TINY.name, TINY)


def _run(cache: Path, out: Path, **changes):
    from eva_runtime.training.vae_run import VaeRun

    settings = VaeTraining(short_batch=2, long_batch=1, short_share=0.5, lr=1e-3)
    run = VaeRun(cache, TINY.name, out, steps=6, settings=settings, held_out=1, checkpoint_every=2)
    return dataclasses.replace(run, **changes)


def _stop_at_step(monkeypatch: pytest.MonkeyPatch, stop: int) -> None:
    """Kill the run at its `stop`-th optimizer step (counted from 1), as a dead process would stop it."""
    from eva_runtime.training import vae_candidates

    original, calls = vae_candidates._vae_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(vae_candidates, "_vae_step", step)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_a_stopped_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eva_runtime.training.vae_run import state_path, train_vae_run

    whole = train_vae_run(_run(cache, tmp_path / "whole.safetensors"), log=lambda _: None)
    cut = _run(cache, tmp_path / "cut.safetensors")
    with monkeypatch.context() as patch:
        _stop_at_step(patch, 4)  # the state on disk is step 2's; the resumed run redoes steps 3 and 4
        with pytest.raises(KeyboardInterrupt):
            train_vae_run(cut, log=lambda _: None)
    assert json.loads(_metadata(state_path(cut.out))["step"]) == 2 and not cut.out.exists()
    resumed = train_vae_run(cut, resume=True, log=lambda _: None)
    a, b = _weights(tmp_path / "whole.safetensors"), _weights(cut.out)
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert resumed["final_loss"] == whole["final_loss"] and np.isfinite(resumed["frame_psnr_db"])
    by_frame = resumed["cube_visible_by_frame"]  # one share per frame of the 41-frame clip (a cube in every frame)
    assert len(by_frame) == 41 and all(0.0 <= share <= 1.0 for share in by_frame)
    assert not state_path(cut.out).exists() and not Path(str(state_path(cut.out)) + ".sha256").exists()
    assert (tmp_path / "cut.safetensors.sha256").is_file() and (tmp_path / "cut.json").is_file()


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def _stopped(cache: Path, out: Path, monkeypatch: pytest.MonkeyPatch):
    from eva_runtime.training.vae_run import train_vae_run

    run = _run(cache, out)
    with monkeypatch.context() as patch:
        _stop_at_step(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            train_vae_run(run, log=lambda _: None)
    return run


def test_another_run_a_leftover_state_and_a_corrupted_state_are_refused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eva_runtime.training import wm_recipe
    from eva_runtime.training.vae_run import state_path, train_vae_run

    run = _stopped(cache, tmp_path / "vae.safetensors", monkeypatch)
    with pytest.raises(ValueError, match="pass --resume to continue it"):
        train_vae_run(run, log=lambda _: None)
    other_lr = dataclasses.replace(run, settings=dataclasses.replace(run.settings, lr=5e-4))
    with pytest.raises(ValueError, match=r"cannot resume .*'settings'"):
        train_vae_run(other_lr, resume=True, log=lambda _: None)
    with pytest.raises(ValueError, match=r"cannot resume .*'steps' is 8, the run used 6"):
        train_vae_run(dataclasses.replace(run, steps=8), resume=True, log=lambda _: None)
    wider = dataclasses.replace(TINY, name="wider_test", z_dim=8)  # another network: refused before loading it
    monkeypatch.setitem(wm_recipe.CANDIDATES, wider.name, wider)
    with pytest.raises(ValueError, match=r"cannot resume .*'candidate'"):
        train_vae_run(dataclasses.replace(run, candidate=wider.name), resume=True, log=lambda _: None)
    state = state_path(run.out)
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="refusing a corrupted checkpoint"):
        train_vae_run(run, resume=True, log=lambda _: None)
    assert not run.out.exists()  # nothing was written from a refused state


def test_a_warm_start_is_loaded_only_when_its_hash_matches_and_its_shape_is_the_candidates(
    cache: Path, tmp_path: Path
) -> None:
    from eva_runtime.training.vae_candidates import build_candidate_vae, save_candidate_vae
    from eva_runtime.training.vae_run import train_vae_run

    init = save_candidate_vae(build_candidate_vae(TINY).eval(), TINY, tmp_path / "init.safetensors")
    warm = train_vae_run(_run(cache, tmp_path / "warm.safetensors", init=init, steps=2), log=lambda _: None)
    assert warm["init"] == str(init)
    wider = dataclasses.replace(TINY, z_dim=8)
    other = save_candidate_vae(build_candidate_vae(wider).eval(), wider, tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match=r"another architecture than tiny_test \(z_dim differ\)"):
        train_vae_run(_run(cache, tmp_path / "a.safetensors", init=other), log=lambda _: None)
    Path(str(init) + ".sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        train_vae_run(_run(cache, tmp_path / "b.safetensors", init=init), log=lambda _: None)
    Path(str(init) + ".sha256").unlink()
    with pytest.raises(ValueError, match="refusing an unverified VAE"):
        train_vae_run(_run(cache, tmp_path / "c.safetensors", init=init), log=lambda _: None)


def test_an_unknown_candidate_is_refused_with_the_known_ones(cache: Path, tmp_path: Path) -> None:
    from eva_runtime.training.vae_run import train_vae_run

    with pytest.raises(ValueError, match=r"candidate 'z99' is unknown \(known: .*z32_t4_fgsat"):
        train_vae_run(_run(cache, tmp_path / "x.safetensors", candidate="z99"), log=lambda _: None)
