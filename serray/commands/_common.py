"""Options and helpers shared by CLI commands."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

__all__ = [
    "workdir_option", "address_option", "seed_option", "feature_param_option", "fail",
    "parse_value", "parse_feature_params",
]

workdir_option = click.option(
    "--workdir", "-w", required=True, type=click.Path(file_okay=False), help="Work directory holding manifests, features, runs and results."
)
address_option = click.option(
    "--address", default=None, metavar="auto|HOST:PORT", help="Join a running Ray cluster; default: start local Ray."
)
seed_option = click.option("--seed", default=0, show_default=True, type=int, help="Random seed (recorded in the run record).")
feature_param_option = click.option(
    "--feature-param", "feature_params", multiple=True, metavar="KEY=VALUE",
    help="Parameter of the --features set as it was extracted (`serray features --param SET.KEY=VALUE`) or "
         "loaded, e.g. model=/models/hubert-base pooling=frames layer=6 for ssl (repeatable).",
)


def parse_value(text: str) -> Any:
    """A command-line value as a YAML scalar (``3`` -> 3, ``[6, 12]`` -> list); plain text if not YAML."""
    import yaml

    try:
        parsed = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    return text if parsed is None else parsed


def parse_feature_params(items: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    """``--feature-param KEY=VALUE`` items -> ``{key: value}`` (``None`` when there are none)."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or "." in key:
            fail(f"--feature-param {item!r} must be KEY=VALUE without the set name, e.g. model=/models/hubert-base")
        out[key.strip()] = parse_value(value)
    return out or None


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as an error and exit with ``code``."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
