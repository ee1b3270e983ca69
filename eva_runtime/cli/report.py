"""`eva report`: the outcome log's tables (success with Wilson intervals, interventions, latency, executability)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from eva_runtime.cli.common import app, console


@app.command("report")
def report_command(
    log: Annotated[Path, typer.Option(help="Episode outcome log (SQLite .db written by the runtime).")],
    out: Annotated[
        Path | None, typer.Option(help="Directory for report.md and PNGs (default: <log stem>_report/).")
    ] = None,
    plain: Annotated[bool, typer.Option(help="Print raw Markdown instead of rich tables.")] = False,
) -> None:
    """Success tables (Wilson 95 %), model comparison, interventions, latency and executability from an outcome log."""
    from rich.markdown import Markdown

    from eva_runtime.records.outcome_log import OutcomeLog, OutcomeLogError
    from eva_runtime.records.report import build_report, render_markdown, write_markdown, write_plots

    if not log.is_file():
        console.print(f"[red]error:[/red] outcome log {log} does not exist")
        raise typer.Exit(2)
    try:
        # Read-only: a report must never mark a live runtime's running episode as aborted.
        with OutcomeLog(log, read_only=True) as opened:
            records = opened.episodes()
    except OutcomeLogError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    if not records:
        console.print(f"[red]error:[/red] outcome log {log} holds no episodes: nothing to report")
        raise typer.Exit(2)
    report = build_report(records)
    directory = out if out is not None else log.with_name(f"{log.stem}_report")
    markdown = write_markdown(report, directory / "report.md")
    pngs = write_plots(report, directory)
    if plain:
        typer.echo(render_markdown(report))
    else:
        console.print(Markdown(render_markdown(report)))
    console.print(f"report written to [bold]{markdown}[/bold]; plots: {', '.join(str(p) for p in pngs)}")
