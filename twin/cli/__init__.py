"""The ``twin`` command line: a thin typer front over the library.

Each stage keeps its commands in a module of this package with a
``register(app)`` function. Errors of the project's own hierarchy are printed
on one line and exit with status 2; no traceback reaches the user.

The stage modules (and through them WNTR, GeoPandas, folium, DuckDB) are
imported inside each command's body, marked "deferred, see twin.cli": they
take about 2 s to import, and ``twin --help`` or a mistyped option should
answer at once. No import cycle is involved.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from twin.cli import demo, localise, network, repair, store, synth
from twin.errors import TwinError

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on real click
    from click.exceptions import ClickException, NoArgsIsHelpError

app = typer.Typer(
    name="twin",
    help="Digital twin of a city's water network: import, meters, balance, leaks, maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

err_console = Console(stderr=True)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show debug messages."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Show warnings and errors only."),
) -> None:
    """Configure logging for the whole command."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("wntr", "distributed", "fiona", "pyogrio", "numexpr"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


for _stage in (network, synth, store, localise, repair, demo):
    _stage.register(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 success, 2 bad input, 1 failure)."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=argv, prog_name="twin", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("[red]aborted[/red]")
        return 130
    except NoArgsIsHelpError as exc:
        exc.show()
        return 0
    except ClickException as exc:
        exc.show()
        return 2
    except TwinError as exc:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return rv if isinstance(rv, int) else 0


def run() -> None:  # pragma: no cover - console entry
    sys.exit(main())
