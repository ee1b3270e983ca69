"""Benchmark: IDM decode latency, ONNX Runtime vs torch eager vs torch.compile, in one run, as ratios.

Decodes one rollout of H frames two ways: one frame window at a time (batch 1, H calls) and the whole rollout
in one call (batch H). Prints one JSON object with the median milliseconds per rollout for each backend and
each backend's ratio to ONNX Runtime. Uses the shipped model unless --onnx/--checkpoint are given.

    .venv/bin/python bench/idm.py [--onnx models/bundle_transfer_cube/idm.onnx] [--checkpoint ...] [--horizon 37]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from timing import median_ms

from eva_runtime.idm.checkpoint import load_checkpoint
from eva_runtime.idm.decoder import IdmDecoder

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, default=ROOT / "models/bundle_transfer_cube/idm.onnx")
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models/idm_transfer_cube.safetensors")
    parser.add_argument("--horizon", type=int, default=37)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    decoder = IdmDecoder(args.onnx)
    model, _, _ = load_checkpoint(args.checkpoint)
    model.eval()
    config = decoder.config
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, size=(args.horizon, config.input_channels, *config.image_size)).astype(np.float32)
    session, name = decoder.session, decoder.session.get_inputs()[0].name
    tensor = torch.from_numpy(pixels)
    compiled = torch.compile(model)
    backends = {
        "onnxruntime": lambda batch: session.run(None, {name: pixels[:batch]}),
        "torch_eager": lambda batch: model(tensor[:batch]),
        "torch_compile": lambda batch: compiled(tensor[:batch]),
    }
    results: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for backend, run in backends.items():
            one_by_one = median_ms(lambda run=run: [run(1) for _ in range(args.horizon)], max(3, args.repeats // 5))
            batched = median_ms(lambda run=run: run(args.horizon), args.repeats)
            results[backend] = {"batch1_ms": round(one_by_one, 2), "batchH_ms": round(batched, 2)}
    reference = results["onnxruntime"]
    for values in results.values():
        for key in ("batch1_ms", "batchH_ms"):
            values[key.replace("_ms", "_ratio_to_onnxruntime")] = round(values[key] / reference[key], 2)
    print(
        json.dumps(
            {
                "benchmark": "idm_decode",
                "horizon": args.horizon,
                "input": [config.input_channels, *config.image_size],
                "provider": decoder.provider,
                "torch_threads": args.threads,
                "backends": results,
            }
        )
    )


if __name__ == "__main__":
    main()
