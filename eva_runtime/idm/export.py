"""IDM export: one self-contained ONNX file (dynamic batch) with its configuration as metadata, parity-checked.

The metadata carries everything a runtime needs to feed the graph and to refuse a mismatched one: cameras,
image size, window, fps, joint names, normalisation, the training data digest and the checkpoint's SHA-256.
After writing, the file is run with ONNX Runtime on real inputs and compared with torch; a maximum absolute
difference above the tolerance (1e-4 by default) deletes the file and raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from eva_runtime.atomic_file import replaced_atomically
from eva_runtime.file_hash import file_sha256
from eva_runtime.idm.checkpoint import load_checkpoint

__all__ = ["ExportReport", "ParityError", "export_idm", "parity_batch_from_data", "read_metadata"]

INPUT, OUTPUT = "pixels", "actions"
FORMAT = "eva-runtime/idm-onnx-v1"


class ParityError(RuntimeError):
    """The exported graph does not reproduce the torch model."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    sha256: str
    max_abs_difference: float
    samples: int
    provider: str


def export_idm(
    checkpoint: Path, out: Path, parity_inputs: np.ndarray | None = None, tolerance: float = 1e-4
) -> ExportReport:
    """Export `checkpoint` to `out` (.onnx) and verify it; `parity_inputs` (B, C, H, W) float32 0..255."""
    import onnx
    import onnxruntime as ort

    model, _, state = load_checkpoint(checkpoint)
    model.eval()
    config = model.config
    height, width = config.image_size
    if parity_inputs is None:
        rng = np.random.default_rng(0)
        parity_inputs = rng.uniform(0, 255, size=(4, config.input_channels, height, width)).astype(np.float32)
    example = torch.from_numpy(parity_inputs[:2])
    # Written beside `out` and renamed over it only once the parity check passes: a failed export leaves no file.
    with replaced_atomically(out, suffix=".onnx") as temporary:
        torch.onnx.export(
            model,
            (example,),
            str(temporary),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes={"pixels": {0: torch.export.Dim("batch", min=1, max=4096)}},
            dynamo=True,
            external_data=False,
            optimize=True,
        )
        graph = onnx.load(str(temporary))
        metadata = {
            "format": FORMAT,
            "config": config.to_json(),
            "data_digest": state.data_digest,
            "checkpoint_sha256": file_sha256(checkpoint),
            "training_step": str(state.step),
        }
        del graph.metadata_props[:]
        for key, value in metadata.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(temporary))
        session = ort.InferenceSession(str(temporary), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = model(torch.from_numpy(parity_inputs)).numpy()
        (actual,) = session.run([OUTPUT], {INPUT: parity_inputs})
        difference = float(np.max(np.abs(actual - expected)))
        if not difference <= tolerance:
            raise ParityError(f"ONNX export differs from torch by {difference:.3g} > {tolerance:g}; nothing written")
    return ExportReport(out, file_sha256(out), difference, len(parity_inputs), session.get_providers()[0])


def read_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}


def parity_batch_from_data(model_config_json: str, data_dir: Path, count: int = 16) -> np.ndarray:
    """Real inputs for the parity check: windows from the first recorded episodes (HDF5 or LeRobot v3)."""
    from eva_runtime.idm.config import IdmConfig
    from eva_runtime.idm.dataset import IdmDataset, load_episodes
    from eva_runtime.idm.train import episode_sources

    config = IdmConfig.from_json(model_config_json)
    sources, _ = episode_sources(data_dir)
    dataset = IdmDataset(load_episodes(sources[:2], config), config)
    samples = np.linspace(0, len(dataset) - 1, count).astype(int)
    return dataset.batch(samples)[0]
