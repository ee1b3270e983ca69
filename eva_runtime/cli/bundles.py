"""`eva bundle create|verify`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from eva_runtime.cli.common import EmbodimentOption, app, console, embodiment_path

if TYPE_CHECKING:
    from eva_runtime.bundle import Manifest

bundle_app = typer.Typer(help="Deployment bundles: the IDM, embodiment and settings, hashed.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")


@bundle_app.command("create")
def bundle_create_command(
    idm: Annotated[Path, typer.Option(help="The exported IDM (.onnx).")],
    out: Annotated[Path, typer.Option(help="New (or empty) bundle directory.")],
    embodiment: EmbodimentOption = None,
    world_model: Annotated[str, typer.Option(help="World model: oracle, or wan (needs --wm-base).")] = "oracle",
    horizon: Annotated[int, typer.Option(help="Frames per imagined rollout, frame 0 included.")] = 37,
    wm_base: Annotated[
        Path | None, typer.Option(help="Wan base pipeline directory (with eva_hashes.json); stored relative.")
    ] = None,
    wm_adapter: Annotated[
        list[Path] | None, typer.Option(help="LoRA adapter safetensors (repeatable; bundled, applied in order).")
    ] = None,
    wm_id: Annotated[str | None, typer.Option(help="World-model id for the logs (default: the base's name).")] = None,
    wm_steps: Annotated[int, typer.Option(min=1, help="Wan sampling steps.")] = 10,
    wm_history_frames: Annotated[int, typer.Option(min=1, help="Observed frames conditioning a rollout.")] = 1,
    p0: Annotated[float, typer.Option(help="The reward's penalty scale P0.")] = 2000.0,
    reward_form: Annotated[str, typer.Option(help="Reward form: authors or paper.")] = "authors",
) -> None:
    """Write a deployment bundle; the world model's fps is the IDM's (read from the ONNX file)."""
    from eva_runtime.bundle import BundleError, create_bundle

    entry, extra_files = _world_model_entry(
        world_model, horizon, out, wm_base, wm_adapter, wm_id, wm_steps, wm_history_frames
    )
    try:
        manifest = create_bundle(
            out,
            idm,
            embodiment_path(embodiment),
            world_model=entry,
            reward={"p0": p0, "form": reward_form},
            extra_files=extra_files,
        )
    except (BundleError, OSError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(_manifest_table(out, manifest))


def _world_model_entry(
    world_model: str,
    horizon: int,
    out: Path,
    wm_base: Path | None,
    wm_adapter: list[Path] | None,
    wm_id: str | None,
    wm_steps: int,
    wm_history_frames: int,
) -> tuple[dict, dict[str, Path]]:
    """The manifest's world_model section and the extra files it needs bundled (LoRA adapters by role)."""
    if world_model == "oracle":
        return {"kind": "oracle", "id": "oracle", "horizon": horizon}, {}  # fps: the IDM's
    if world_model != "wan":
        console.print(f"[red]error:[/red] --world-model {world_model!r}: use oracle or wan")
        raise typer.Exit(2)
    if wm_base is None or not (wm_base / "eva_hashes.json").is_file():
        console.print("[red]error:[/red] --world-model wan needs --wm-base DIR holding eva_hashes.json")
        raise typer.Exit(2)
    import hashlib
    import os

    extra_files = {f"adapter{i}": path for i, path in enumerate(wm_adapter or [])}
    entry = {
        "kind": "wan",
        "id": wm_id or wm_base.resolve().name,
        "horizon": horizon,
        "base": os.path.relpath(wm_base.resolve(), out.resolve()),
        "base_sha256": hashlib.sha256((wm_base / "eva_hashes.json").read_bytes()).hexdigest(),
        "adapters": list(extra_files),
        "sampling": {"steps": wm_steps, "history_frames": wm_history_frames},
    }
    return entry, extra_files


def _manifest_table(out: Path, manifest: Manifest) -> Table:
    """What the new bundle holds, one row per manifest section and per file."""
    table = Table(title=f"bundle {out} ({manifest.format})")
    table.add_column("entry")
    table.add_column("value")
    robot, net, wm, reward = manifest.embodiment, manifest.idm, manifest.world_model, manifest.reward
    table.add_row("embodiment", f"{robot.name} ({len(robot.joint_names)} joints, {robot.control_rate_hz:g} Hz)")
    size = "x".join(str(n) for n in net.image_size)
    table.add_row("idm", f"{net.fps:g} fps, window {net.window}, {size}, cameras {', '.join(net.cameras)}")
    table.add_row("world model", f"{wm.kind} ({wm.id}), {wm.fps:g} fps, horizon {wm.horizon}")
    table.add_row("reward", f"{reward.form}, p0 {reward.p0:g}, gamma {reward.gamma:g}")
    for entry in manifest.files:
        table.add_row(f"file {entry.role}", f"{entry.path} ({entry.bytes} bytes, sha256 {entry.sha256[:12]})")
    return table


@bundle_app.command("verify")
def bundle_verify_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    embodiment: Annotated[
        Path | None, typer.Option("--embodiment", "-e", help="Also check the bundle is for this robot.")
    ] = None,
) -> None:
    """Re-hash every file and check the manifest; print OK and the hashes, or the problem (exit 1)."""
    from eva_runtime.bundle import BundleError, load_bundle
    from eva_runtime.embodiment import EmbodimentError, load_embodiment

    try:
        robot = load_embodiment(embodiment) if embodiment is not None else None
    except EmbodimentError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    try:
        loaded = load_bundle(bundle, robot)
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    typer.echo(f"OK {loaded.path} ({loaded.manifest.embodiment.name}, manifest sha256 {loaded.manifest_sha256})")
    for role, digest in loaded.hashes().items():
        typer.echo(f"{role}: {digest}")
