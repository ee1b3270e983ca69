"""Benchmark: simulation physics rate and camera render cost, ours (shadows off) next to the stock scene.

Prints one JSON object: physics steps per second (one 2 ms mj_step), control steps per second (one 20 ms
`apply`, 10 physics steps + forward), and milliseconds per camera render at 64x64, 128x128 and 480x640 for the
scene as we build it and for the stock gym-aloha scene with its shadows, with the stock/ours ratio.

    MUJOCO_GL=egl .venv/bin/python bench/sim.py [--repeats 200]
"""

from __future__ import annotations

import argparse
import json

from timing import median_ms

from eva_runtime.sim.bimanual_sim import START_POSE, BimanualSim
from eva_runtime.sim.scene import SCENE_FILES, _assets_dir, ensure_headless_gl
from eva_runtime.sim.tasks import task_spec

SIZES = ((64, 64), (128, 128), (480, 640))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    ensure_headless_gl()
    import mujoco

    sim = BimanualSim("transfer_cube")
    sim.reset(START_POSE, task_spec("transfer_cube").sample_objects(0))
    physics_ms = median_ms(lambda: mujoco.mj_step(sim.model, sim.data), args.repeats * 10)
    control_ms = median_ms(lambda: sim.apply(START_POSE), args.repeats)

    stock_model = mujoco.MjModel.from_xml_path(str(_assets_dir() / SCENE_FILES["transfer_cube"]))
    stock_data = mujoco.MjData(stock_model)
    mujoco.mj_forward(stock_model, stock_data)
    renders = {}
    for height, width in SIZES:
        sim.render(("cam_high",), height, width)  # create the renderer outside the timing
        ours = median_ms(lambda h=height, w=width: sim.render(("cam_high",), h, w), args.repeats)
        stock_renderer = mujoco.Renderer(stock_model, height, width)

        def stock(renderer=stock_renderer) -> None:
            renderer.update_scene(stock_data, camera="top")
            renderer.render()

        stock()
        stock_ms = median_ms(stock, max(20, args.repeats // 4))
        stock_renderer.close()
        renders[f"{height}x{width}"] = {
            "ours_ms": round(ours, 2),
            "stock_with_shadows_ms": round(stock_ms, 2),
            "stock_over_ours": round(stock_ms / ours, 1),
        }
    report = {
        "benchmark": "simulation",
        "mujoco": mujoco.__version__,
        "gl": __import__("os").environ.get("MUJOCO_GL"),
        "physics_steps_per_s": round(1e3 / physics_ms),
        "control_steps_per_s": round(1e3 / control_ms, 1),
        "render_one_camera": renders,
    }
    sim.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
