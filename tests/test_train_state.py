"""The shared training-state file: what is saved loads back exactly, and a file of another format, a corrupted one
or names that would collide are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eva_runtime.training.train_state import load_train_state, save_train_state


def _trained(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        module(torch.randn(5, 3)).square().mean().backward()
        optimizer.step()
    return module, optimizer


def test_weights_optimizer_slots_tensors_and_metadata_come_back_exactly(tmp_path: Path) -> None:
    module, optimizer = _trained(0)
    path = tmp_path / "state.safetensors"
    save_train_state(path, "fmt-v1", {"net": module}, optimizer, {"rng.torch": torch.get_rng_state()}, {"step": "2"})
    fresh, fresh_optimizer = _trained(1)
    tensors, metadata = load_train_state(path, "fmt-v1", {"net": fresh}, fresh_optimizer)
    for (name, a), (_, b) in zip(module.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    for a, b in zip(optimizer.state.values(), fresh_optimizer.state.values(), strict=True):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)
    assert fresh_optimizer.param_groups[0]["lr"] == 1e-3
    assert set(tensors) == {"rng.torch"} and metadata["step"] == "2" and metadata["format"] == "fmt-v1"


def test_another_format_a_corrupted_file_and_colliding_names_are_refused(tmp_path: Path) -> None:
    module, optimizer = _trained(0)
    path = tmp_path / "state.safetensors"
    with pytest.raises(ValueError, match="collides"):
        save_train_state(path, "fmt-v1", {"net": module}, optimizer, {"net.extra": torch.zeros(1)})
    assert not path.exists()
    save_train_state(path, "fmt-v1", {"net": module}, optimizer)
    with pytest.raises(ValueError, match="format 'fmt-v1', expected 'fmt-v2'"):
        load_train_state(path, "fmt-v2", {"net": module}, optimizer)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="refusing a corrupted checkpoint"):
        load_train_state(path, "fmt-v1", {"net": module}, optimizer)
