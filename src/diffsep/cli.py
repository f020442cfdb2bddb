"""The ``diffsep`` command line: Typer commands only; the work lives in the library modules."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from diffsep import __version__

app = typer.Typer(
    name="diffsep",
    help="Speech separation and enhancement with score-based diffusion (DiffSep).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"diffsep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version_callback, is_eager=True,
                     help="Print the version and exit."),
    ] = None,
) -> None:
    """Speech separation and enhancement with score-based diffusion (DiffSep)."""


def main() -> None:
    """Console-script entry point."""
    app()
