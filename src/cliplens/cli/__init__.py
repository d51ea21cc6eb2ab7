"""The `cliplens` command: one click group, one module per subcommand.

The top floor: may import anything. Command modules import only the library and the shared `options` helper.
"""

from __future__ import annotations

import sys

import click

from ..errors import CliplensError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Exact, streaming interpretability of CLIP image encoders."""
    ctx.obj = {"debug": debug}


def _register() -> None:
    from . import (ablate, adversarial, analyze, collect, components, decompose, demo, discover, dissect, explain, info,
                   merge, neuron_ablate, pairs, reconstruct, report, retrieve, search, second_order, segment, spurious,
                   textspan, track, train_toy, verify)

    for module in (demo, info, verify, decompose, collect, analyze, merge, textspan, explain, ablate, reconstruct,
                   second_order, pairs, neuron_ablate, retrieve, search, discover, track, adversarial, segment,
                   spurious, components, dissect, report, train_toy):
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort; 130 = 128 + SIGINT
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CliplensError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # anything unexpected still gets one line; --debug shows where it came from
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
