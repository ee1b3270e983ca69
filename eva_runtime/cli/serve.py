"""`eva serve world-model`: a verified bundle's world model behind the websocket server, for planners elsewhere."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eva_runtime.cli.common import app, console

if TYPE_CHECKING:  # the bundle module pulls in pydantic and YAML; `eva --help` should not pay for them
    from eva_runtime.bundle import Bundle

serve_app = typer.Typer(help="Serve models to runtimes on other machines.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")


def world_model_spec(bundle: Bundle) -> dict[str, Any]:
    """The bundle's world model as `build_world_model` takes it (one definition, shared with `eva run`)."""
    from eva_runtime.control.sim_runtime import world_model_spec as spec_for

    return spec_for(bundle, task="", threads=None)  # a server has its cores to itself


@serve_app.command("world-model")
def serve_world_model_command(
    bundle: Annotated[Path, typer.Option(help="Deployment bundle whose world model is served (verified on load).")],
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback should have a token.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8765,
    token_env: Annotated[
        str, typer.Option(help="Environment variable holding the bearer token clients must send (unset: none).")
    ] = "EVA_WM_TOKEN",
    max_message_mb: Annotated[float, typer.Option(min=0.001, help="Largest accepted call, in MiB.")] = 64.0,
) -> None:
    """Serve the bundle's world model over websockets (`GET /healthz` for health; one generation at a time)."""
    from eva_runtime.world_model.serving.server import WorldModelServer

    deployed = _servable_bundle(bundle)
    token = os.environ.get(token_env) or None  # an empty variable is no token, not a token that is empty
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one INFO line per health probe would bury ours
    world_model = _matching_world_model(deployed)
    server = WorldModelServer(
        world_model,
        host=host,
        port=port,
        token=token,
        max_message_bytes=int(max_message_mb * 1024 * 1024),
        metadata=_server_metadata(deployed),
    )
    try:
        server.run()
    except KeyboardInterrupt:
        console.print("stopped")


def _servable_bundle(path: Path) -> Bundle:
    """The verified bundle, or exit 2 when it does not load or its world model is the oracle."""
    from eva_runtime.bundle import BundleError, load_bundle

    try:
        deployed = load_bundle(path)  # every hash is checked before anything is served
    except BundleError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    if deployed.manifest.world_model.kind == "oracle":
        console.print(
            "[red]error:[/red] the bundle's world model is the oracle, a test instrument that re-simulates the "
            "expert from privileged simulator state; that state never crosses the network, so it cannot be served"
        )
        raise typer.Exit(2)
    return deployed


def _matching_world_model(deployed: Bundle) -> Any:
    """The bundle's world model, built; exit 2 when it cannot be or does not make what the bundle's IDM decodes."""
    from eva_runtime.world_model.factory import build_world_model

    section, idm = deployed.manifest.world_model, deployed.manifest.idm
    try:
        world_model = build_world_model(
            world_model_spec(deployed),
            embodiment=deployed.embodiment,
            fps=idm.fps,
            cameras=idm.cameras,
            image_size=idm.image_size,
        )
    except (ValueError, OSError, ImportError) as error:
        console.print(f"[red]error:[/red] world model {section.id}: {error}", soft_wrap=True)
        raise typer.Exit(2) from None
    # The IDM decoding these frames needs exactly its own rate and every camera it reads; refuse now, not per call.
    missing = [camera for camera in idm.cameras if camera not in world_model.cameras]
    if abs(world_model.fps - idm.fps) > 1e-9 or missing:
        console.print(
            f"[red]error:[/red] the world model makes {list(world_model.cameras)} at {world_model.fps} fps; the "
            f"bundle's IDM decodes {list(idm.cameras)} at {idm.fps} fps"
        )
        raise typer.Exit(2)
    return world_model


def _server_metadata(deployed: Bundle) -> dict[str, Any]:
    """What a client may check before trusting the frames: which bundle, which base, what the IDM expects."""
    section, idm = deployed.manifest.world_model, deployed.manifest.idm
    return {
        "world_model_id": section.id,
        "horizon": section.horizon,
        "idm_image_size": list(idm.image_size),
        "bundle": {
            "manifest_sha256": deployed.manifest_sha256,
            "files": deployed.hashes(),
            "base_sha256": section.base_sha256,
        },
    }
