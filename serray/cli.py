"""The ``serray`` command line: one group, one module per command under ``serray.commands``."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from serray import __version__

__all__ = ["main"]

#: (command name, module); each module exports ``command`` (a click command or group).
_COMMANDS: tuple[tuple[str, str], ...] = (
    ("data", "serray.commands.data"),
    ("features", "serray.commands.features"),
    ("train", "serray.commands.train"),
    ("tune", "serray.commands.tune"),
    ("seeds", "serray.commands.seeds"),
    ("ensemble", "serray.commands.ensemble"),
    ("fuse", "serray.commands.fuse"),
    ("report", "serray.commands.report"),
    ("crosscorpus", "serray.commands.crosscorpus"),
    ("export", "serray.commands.export"),
    ("predict", "serray.commands.predict"),
    ("track", "serray.commands.track"),
    ("pipeline", "serray.commands.pipeline"),
    ("demo", "serray.commands.demo"),
)


class _LazyGroup(click.Group):
    """Imports a command's module only when that command runs (keeps ``--help`` fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, _ in _COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        mod = dict(_COMMANDS).get(name)
        if mod is None:
            return None
        return importlib.import_module(mod).command

    def invoke(self, ctx: click.Context) -> None:
        """Run the command; an unexpected error prints one line (its traceback only with ``-vv``)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that turns errors into a line
            if ctx.params.get("verbose", 0) >= 2:
                raise
            click.echo(f"error: {type(exc).__name__}: {exc} (run `serray -vv ...` for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="serray")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """serray: speech emotion recognition at scale on Ray.

    Typical pipeline: data prepare -> features -> train / tune -> seeds -> ensemble -> report.
    `serray demo` runs all of it on a built-in synthetic corpus.
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for noisy in ("ray", "numba", "urllib3", "filelock", "matplotlib", "h5py", "fsspec"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
