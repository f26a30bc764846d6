"""Options and helpers shared by CLI commands."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

__all__ = ["workdir_option", "address_option", "seed_option", "not_implemented", "fail"]

workdir_option = click.option(
    "--workdir", "-w", required=True, type=click.Path(file_okay=False), help="Work directory holding manifests, features, runs and results."
)
address_option = click.option(
    "--address", default=None, metavar="auto|HOST:PORT", help="Join a running Ray cluster; default: start local Ray."
)
seed_option = click.option("--seed", default=0, show_default=True, type=int, help="Random seed (recorded in the run record).")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def not_implemented(name: str, issue: str) -> click.Command:
    """A command that exists in ``--help`` but says plainly that it is not built yet (exit 2)."""

    @click.command(name=name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def _cmd() -> None:
        click.echo(f"serray {name}: not implemented yet ({issue})", err=True)
        sys.exit(2)

    _cmd.help = f"(not implemented yet: {issue})"
    _cmd.short_help = "(not implemented yet)"
    return _cmd
