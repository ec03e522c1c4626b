"""The ``resnets`` command line: one verb per job. It parses, calls the library, prints.

Heavy imports (torch, the models) happen inside the commands so that ``resnets --help``
stays fast. Errors print one line and exit 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any

import typer

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Residual networks on PyTorch: models, training, evaluation, export.")

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               PermissionError, KeyError)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"resnets {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    ctx.obj = {"debug": debug}


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a user error into one line on stderr and exit code 1 (unless ``--debug``).

    The wrapped command takes ``ctx: typer.Context`` so the root's ``--debug`` is visible.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            ctx = kwargs.get("ctx")
            if ctx is not None and (ctx.find_root().obj or {}).get("debug"):
                raise
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            typer.echo(f"error: {msg}", err=True)
            raise typer.Exit(1) from None

    return wrapper


@app.command()
@friendly_errors
def info(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A model name; omit for the table.")] = None,
    paper_stride: Annotated[bool, typer.Option(
        "--paper-stride", help="Bottleneck stride on the first 1x1 conv, as the paper.")] = False,
) -> None:
    """Every model with layers, parameters, GMACs and the paper's error; or one model's stages."""
    from rich.console import Console
    from rich.table import Table

    from .registry import get_spec, list_models
    from .stats import model_stats, stage_rows

    console = Console()
    kwargs = {"stride_in_1x1": True} if paper_stride else {}
    if name is None:
        table = Table(title="resnets models", caption="paper err: top-1 error (%) reported by the "
                      "source; ImageNet 10-crop (He2016) or 224 crop (Xie2017), CIFAR-10 test")
        for col in ("model", "layers", "params", "GMACs", "input", "stride on", "paper err",
                    "source"):
            table.add_column(col, justify="right" if col in ("params", "GMACs") else "left")
        for n in list_models():
            spec = get_spec(n)
            st = model_stats(n, **kwargs)
            err = f"{spec.paper_error:.2f}" if spec.paper_error is not None else "-"
            table.add_row(n, str(st.depth), f"{st.params:,}", f"{st.gmacs:.3f}",
                          "x".join(map(str, st.input_size)), st.stride_placement, err,
                          spec.paper_source or "-")
        console.print(table)
        return

    spec = get_spec(name)
    st = model_stats(name, **kwargs)
    console.print(f"[bold]{name}[/bold]: {st.depth} layers, {st.params:,} parameters, "
                  f"{st.gmacs:.3f} GMACs at {'x'.join(map(str, spec.input_size))}, "
                  f"shortcut {st.shortcut}, "
                  f"stride on {st.stride_placement}")
    table = Table()
    for col in ("stage", "modules", "output shape", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for row in stage_rows(name, **kwargs):
        table.add_row(row.name, row.description, str(list(row.output_shape)), f"{row.params:,}")
    console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
