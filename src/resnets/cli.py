"""The ``resnets`` command line: one verb per job. It parses, calls the library, prints.

Heavy imports (torch, the models) happen inside the commands so that ``resnets --help``
stays fast. Errors print one line and exit 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Residual networks on PyTorch: models, training, evaluation, export.")

# OSError: every system error (missing file, read-only folder, full disk, permission, a
# failed download) is the user's to fix, and is said in one line naming the path.
USER_ERRORS = (ValueError, OSError, KeyError)


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


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """A library warning as one ``warning:`` line on stderr, without the source location."""
    typer.echo(f"warning: {message}", err=True)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a user error into one line on stderr and exit code 1 (unless ``--debug``);
    warnings print as one line each.

    The wrapped command takes ``ctx: typer.Context`` so the root's ``--debug`` is visible.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                ctx = kwargs.get("ctx")
                if not (ctx is not None and (ctx.find_root().obj or {}).get("debug")):
                    warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except BrokenPipeError:  # `resnets info | head`: the reader left; say nothing more
            import os
            import sys

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(1) from None
        except USER_ERRORS as e:
            ctx = kwargs.get("ctx")
            if ctx is not None and (ctx.find_root().obj or {}).get("debug"):
                raise
            typer.echo(f"error: {_one_line(e)}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _one_line(e: BaseException) -> str:
    """An exception as one line; an OSError as ``path: reason`` without its errno."""
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.strerror and len(e.args) >= 2:
        where = [str(f) for f in (e.filename, e.filename2) if f is not None]
        text = f"{' -> '.join(where)}: {e.strerror}" if where else e.strerror
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


def _strict_json(record: Any) -> str:
    """``record`` as JSON that every parser reads: JSON has no Infinity or NaN (Python's
    ``json.dumps`` writes them), so a non-finite number, such as the PSNR of an exact copy,
    is written as null."""
    import json
    import math

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    return json.dumps(finite(record))


@contextlib.contextmanager
def _resume_hint(command: str, run_dir: str) -> Iterator[None]:
    """On Ctrl-C say how the run goes on: from its ``last.pt`` when it has one."""
    try:
        yield
    except KeyboardInterrupt:
        from pathlib import Path

        if (Path(run_dir) / "last.pt").is_file():
            typer.echo(f"interrupted: resume with `resnets {command} --resume {run_dir}`",
                       err=True)
        else:
            typer.echo(f"interrupted before the first checkpoint of {run_dir}", err=True)
        raise


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not a default)."""
    source = ctx.get_parameter_source(name)  # an enum of typer's own copy of click
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


@app.command()
@friendly_errors
def info(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A model name; omit for the table.")] = None,
    paper_stride: Annotated[bool, typer.Option(
        "--paper-stride", help="Bottleneck stride on the first 1x1 conv, as the paper.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON: one object per model, "
                                                       "or the model with its stages.")] = False,
) -> None:
    """Every model with layers, parameters, GMACs and the paper's error; or one model's stages."""
    from rich.table import Table

    from .models.registry import get_spec, list_models
    from .models.stats import model_stats, stage_rows
    from .terminal import result_console

    console = result_console()
    kwargs = {"stride_in_1x1": True} if paper_stride else {}
    if json_:
        _info_json(name, kwargs)
        return
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


def _info_json(name: str | None, kwargs: dict) -> None:
    """``info --json``: JSON lines, one object per model; or one model with its stages."""
    import json

    from .models.registry import get_spec, list_models
    from .models.stats import model_stats, stage_rows

    def record(n: str) -> dict:
        spec, st = get_spec(n), model_stats(n, **kwargs)
        return {"model": n, "family": spec.family, "layers": st.depth, "params": st.params,
                "gmacs": st.gmacs, "input_size": list(st.input_size),
                "stride_on": st.stride_placement, "shortcut": st.shortcut,
                "paper_error": spec.paper_error, "paper_source": spec.paper_source}

    if name is None:
        for n in list_models():
            typer.echo(json.dumps(record(n)))
        return
    stages = [{"stage": r.name, "modules": r.description, "output_shape": list(r.output_shape),
               "params": r.params} for r in stage_rows(name, **kwargs)]
    typer.echo(json.dumps({**record(name), "stages": stages}))


def _parse_sets(items: list[str]) -> dict[str, str]:
    """``--set field=value`` pairs as text; the config parses each by its field's type."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip().replace("-", "_")] = value
    return out


def _resume_changes(ctx: typer.Context, flags: dict[str, Any], sets: dict[str, Any],
                    fixed: tuple[str, ...]) -> dict[str, Any]:
    """The config changes asked for with ``--resume``: the flags given on the command line
    and the ``--set`` fields; ``fixed`` flags cannot go with ``--resume`` at all."""
    refused = [f"--{name.replace('_', '-')}" for name in fixed if _given(ctx, name)]
    if refused:
        raise ValueError(f"{', '.join(refused)} cannot be given with --resume (the run "
                         "folder is the one being resumed)")
    changes = {k: v for k, v in flags.items() if _given(ctx, k)}
    changes.update(sets)
    return changes


@app.command()
@friendly_errors
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name (see `resnets info`).")] = "resnet20",
    data: Annotated[str, typer.Option(help="ImageFolder root (with train/ and test/) or "
                                           "CIFAR python folder.")] = "",
    out: Annotated[str | None, typer.Option(help="Run folder.")] = None,
    recipe: Annotated[str | None, typer.Option(
        help="paper, fast or finetune; default: finetune for an ImageNet model with "
             "--pretrained, else paper.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option(help="Per-process batch size.")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    amp: Annotated[str | None, typer.Option(help="none, bf16, fp16 or auto.")] = None,
    compile: Annotated[bool | None, typer.Option("--compile/--no-compile")] = None,
    val_fraction: Annotated[float | None, typer.Option()] = None,
    pretrained: Annotated[str | None, typer.Option(help="Weights to start from.")] = None,
    teacher: Annotated[str | None, typer.Option(
        help="Distil from this classifier (weights file or bundled model name; "
             "A,B for an ensemble); "
             "--set distill_alpha=0.5 --set distill_temperature=4 "
             "--set teacher_flip=true.")] = None,
    freeze_backbone: Annotated[bool, typer.Option("--freeze-backbone")] = False,
    backbone_lr_scale: Annotated[float | None, typer.Option()] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on unreadable images.")] = False,
    checkpoint_every: Annotated[int | None, typer.Option(help="Also every N steps.")] = None,
    test_every_epoch: Annotated[bool, typer.Option("--test-every-epoch")] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any config field: "
                                                   "--set label_smoothing=0.1")] = None,
    resume: Annotated[str | None, typer.Option(
        help="Run folder to continue. With it, --epochs (more), --data (the same dataset "
             "moved), --device, --compile, --checkpoint-every, --test-every-epoch and the "
             "--set fields workers, log_every, compile_mode, max_nonfinite_losses may "
             "change; other flags that differ are refused.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
) -> None:
    """Train a classifier; every epoch writes metrics and an atomic checkpoint."""

    from .train import recipe as make_recipe
    from .train import train as run_training
    from .train.config import TrainConfig, default_recipe_name

    sets = TrainConfig.parse(_parse_sets(set_ or []))  # typed and checked: nothing written
    flags = {"model": model, "data": data, "epochs": epochs, "batch_size": batch_size,
             "lr": lr, "weight_decay": weight_decay, "seed": seed, "device": device,
             "amp": amp, "compile": compile, "val_fraction": val_fraction,
             "pretrained": pretrained, "backbone_lr_scale": backbone_lr_scale,
             "checkpoint_every": checkpoint_every, "teacher": teacher,
             "freeze_backbone": freeze_backbone, "strict": strict,
             "test_every_epoch": test_every_epoch}
    if resume:
        changes = _resume_changes(ctx, flags, sets, fixed=("out", "recipe"))
        with _resume_hint("train", resume):
            result = run_training(TrainConfig(out=resume), resume=True, quiet=quiet,
                                  changes=changes)
    else:
        switches = ("freeze_backbone", "strict", "test_every_epoch")  # off unless given
        flags = {k: v for k, v in flags.items()
                 if v is not None and not (k in switches and v is False)}
        recipe = recipe or default_recipe_name(model, pretrained)
        flags["out"] = out or f"runs/{model}-{recipe}"
        flags.update(sets)
        with _resume_hint("train", flags["out"]):
            result = run_training(make_recipe(recipe, **flags), quiet=quiet)
    typer.echo(_strict_json({k: v for k, v in result.items() if k != "classes"}))



@app.command("eval")
@friendly_errors
def eval_(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Model name; default from the weights.")] = None,
    weights: Annotated[str | None, typer.Option(
        help="Weights: a file (resnets, torchvision, timm, akamaster ...), a tag or a URL; "
             "default: the model's own (bundled) weights.")] = None,
    data: Annotated[str, typer.Option(help="ImageFolder root (or its parent with test/).")] = "",
    tta: Annotated[bool, typer.Option("--tta", help="Average with the flipped image.")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    device: Annotated[str, typer.Option()] = "cpu",
    out: Annotated[str | None, typer.Option(help="Folder for confusion.csv/png.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Load weights holding NaN/inf (to inspect them).")] = False,
) -> None:
    """Top-1/top-5, per-class accuracy and a confusion matrix on an image folder."""

    from .tasks.classify import evaluate_folder, folder_classes, write_confusion
    from .weights.classifier import load_classifier

    if not data:
        raise ValueError("no dataset given: pass --data DIR (an ImageFolder tree)")
    clf = load_classifier(weights, model, device=device, class_hint=folder_classes(data),
                          allow_nonfinite=allow_nonfinite)
    _notes(clf.notes)
    report = evaluate_folder(clf, data, batch_size=batch_size, tta=tta)
    out_dir = out or f"runs/eval-{clf.name}"
    csv_path, png_path = write_confusion(report, out_dir)
    for line in report.skipped:
        typer.echo(f"error: {line}", err=True)
    if json_:
        typer.echo(_strict_json({"model": clf.name, "weights": clf.source, "tta": tta,
                               **report.to_dict(), "confusion_csv": str(csv_path)}))
        if report.skipped:
            raise typer.Exit(1)
        return
    from rich.markup import escape
    from rich.table import Table

    from .terminal import result_console

    # names and paths are the user's: escaped, or rich reads "[raw]" in them as markup
    table = Table(title=escape(f"{clf.name} on {data} ({report.n} images"
                               f"{', flip TTA' if tta else ''})"))
    table.add_column("class")
    table.add_column("accuracy %", justify="right")
    for c, acc in report.per_class.items():  # None: no image of the class was read
        table.add_row(escape(c), "n/a" if acc is None else f"{acc:.2f}")
    console = result_console()
    console.print(table)
    console.print(escape(f"top-1 {report.top1:.2f}%  top-5 {report.top5:.2f}%  "
                         f"confusion matrix: {csv_path}, {png_path}"))
    if report.skipped:
        raise typer.Exit(1)


def _notes(notes: list[str]) -> None:
    """What the loader assumed, one line each on stderr."""
    for note in notes:
        typer.echo(f"note: {note}", err=True)


@app.command()
@friendly_errors
def predict(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Image files or folders.")],
    model: Annotated[str | None, typer.Option(help="Model name; default: the bundled "
                                                   "ResNet-56, or the weights' own.")] = None,
    weights: Annotated[str | None, typer.Option(
        help="Weights: a file (resnets, torchvision, timm, akamaster ...), a tag or a URL; "
             "default: the model's own (bundled or published) weights.")] = None,
    top_k: Annotated[int, typer.Option()] = 5,
    device: Annotated[str, typer.Option()] = "cpu",
    json_: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    csv_: Annotated[str | None, typer.Option("--csv", help="Also write a CSV file.")] = None,
    backend: Annotated[str, typer.Option(help=(
        "auto (the fastest exact fp32 backend installed: openvino, onnxruntime, else "
        "optimized PyTorch), torch, optimized, onnxruntime, openvino, or int8 (the fastest "
        "int8 backend installed: openvino-int8, else onnxruntime-int8; faster, at a measured "
        "accuracy cost), openvino-int8, onnxruntime-int8. Int8 models are cached after the "
        "first run."))] = "auto",
    calibration: Annotated[str | None, typer.Option(
        help="int8 backends: a folder of training images to calibrate on; "
        "default: the inputs.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    cam: Annotated[str | None, typer.Option(
        "--cam", help="Also write a Grad-CAM heat map per image into this folder.")] = None,
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Load weights holding NaN/inf (to inspect them).")] = False,
) -> None:
    """Classify images; unreadable files are reported and the rest still classified.
    --model also takes an exported .onnx or .xml file, run with its own classes and
    preprocessing."""

    from .data.image_file import collect_images
    from .data.prefetch import Prefetch

    backends = ("auto", "int8", "torch", "optimized", "onnxruntime", "onnxruntime-int8",
                "openvino", "openvino-int8")
    if backend not in backends:
        raise ValueError(f"--backend must be one of {', '.join(backends)}, got {backend!r}")
    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}")
    if calibration is not None and "int8" not in backend:
        raise ValueError(f"--calibration is for the int8 backends (int8, openvino-int8, "
                         f"onnxruntime-int8), not --backend {backend}")
    paths = collect_images(inputs)
    if not paths:
        raise ValueError("no images given (expected image files or folders of images)")
    # A child process decodes while this one imports PyTorch and loads the model (both
    # on one core): forked before anything below imports torch.
    with Prefetch(paths) as prefetched:
        from .export.backends import resolve_backend
        from .export.exported import is_exported_file, load_exported
        from .tasks.classify import predict_exported, predict_with
        from .weights.classifier import load_classifier

        if model is not None and is_exported_file(model):
            if weights or cam or backend != "auto" or calibration or device != "cpu" \
                    or allow_nonfinite:
                raise ValueError("an exported --model runs as it is, on the CPU: no --weights, "
                                 "--backend, --calibration, --device, --allow-nonfinite or "
                                 "--cam with it")
            exported = load_exported(model)
            _notes(exported.notes)
            preds, errors = predict_exported(exported, paths, top_k=top_k,
                                             batch_size=batch_size, prefetched=prefetched)
            clf = None
        else:
            clf = load_classifier(weights, model, device=device,
                                  allow_nonfinite=allow_nonfinite)
            _notes(clf.notes)
            if backend == "int8":  # what runs depends on what is installed: say it
                _notes([f"--backend int8 runs {resolve_backend(backend)} (the fastest int8 "
                        f"backend installed)"])
            preds, errors = predict_with(clf, paths, top_k=top_k, batch_size=batch_size,
                                         backend=backend, calibration=calibration,
                                         prefetched=prefetched)
    for err in errors:
        typer.echo(f"error: {err}", err=True)
    if cam and clf is not None:
        from .tasks.cam import write_cam_files

        # the images classified (the unreadable ones are reported above)
        written, cam_errors = write_cam_files(clf.model, clf.preprocessing,
                                              [p.path for p in preds], cam)
        for err in cam_errors:  # two inputs whose maps would share a name
            typer.echo(f"error: {err}", err=True)
        errors = [*errors, *cam_errors]
        typer.echo(f"{len(written)} heat map(s) in {cam}", err=True)
    if csv_ and preds:
        from .tasks.classify import write_predictions_csv

        write_predictions_csv(preds, csv_)
    elif csv_:  # a run that classified nothing leaves an existing file as it was
        typer.echo(f"no predictions: {csv_} not written", err=True)
    if json_:
        for p in preds:  # NaN probabilities (weights loaded with --allow-nonfinite): null
            typer.echo(_strict_json({"path": p.path, "top": [{"class": c, "probability": v}
                                                             for c, v in p.top]}))
    else:
        from rich.markup import escape
        from rich.table import Table

        from .terminal import result_console

        table = Table()
        table.add_column("image")
        table.add_column("prediction")
        for p in preds:  # paths and class names escaped: "[raw]" in them is text
            table.add_row(escape(p.path), escape(", ".join(f"{c} {v:.1%}" for c, v in p.top)))
        result_console().print(table)
    if errors:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def embed(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Image files or folders.")],
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="A .npy file for the (N, D) float32 features; the paths in "
        "row order go into a .json beside it.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name; default: the bundled "
                                                   "ResNet-56, or the weights' own.")] = None,
    weights: Annotated[str | None, typer.Option(
        help="Weights: a file, a tag or a URL; default: the model's own weights.")] = None,
    backend: Annotated[str, typer.Option(
        help="auto, torch, optimized, onnxruntime, openvino, int8 (the fastest int8 backend "
             "installed), onnxruntime-int8 or openvino-int8.")
    ] = "auto",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    device: Annotated[str, typer.Option()] = "cpu",
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON line per image: "
                                                       "path and embedding.")] = False,
) -> None:
    """Pooled features (the vector fc takes) of images, for similarity search and linear
    probes; unreadable files are reported and the rest still embedded."""
    import json

    from .data.image_file import collect_images
    from .data.prefetch import Prefetch

    if output is None and not json_:
        raise ValueError("say where the embeddings go: --output FILE.npy, or --json")
    paths = collect_images(inputs)
    if not paths:
        raise ValueError("no images given (expected image files or folders of images)")
    # as predict: a child decodes while this process imports PyTorch and loads the model
    with Prefetch(paths) as prefetched:
        from .tasks.embed import embed_with
        from .weights.classifier import load_classifier

        clf = load_classifier(weights, model, device=device)
        _notes(clf.notes)
        result = embed_with(clf, paths, batch_size=batch_size, backend=backend,
                            prefetched=prefetched)
    for err in result.errors:
        typer.echo(f"error: {err}", err=True)
    if output is not None and not result.paths:  # nothing embedded: nothing replaced
        typer.echo(f"no embeddings: {output} not written", err=True)
    elif output is not None:
        from .tasks.embed import write_embeddings

        array, index = write_embeddings(result, output)
        typer.echo(f"{len(result.paths)} embedding(s) of {result.features.shape[1]} values "
                   f"in {array} (paths in {index})", err=True)
    if json_:
        for path, row in zip(result.paths, result.features.tolist(), strict=True):
            typer.echo(json.dumps({"path": path, "embedding": row}))
    if result.errors:
        raise typer.Exit(1)


weights_app = typer.Typer(no_args_is_help=True,
                          help="Pretrained weights: list, inspect, download, convert.")
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
@friendly_errors
def weights_list(
    ctx: typer.Context,
    pattern: Annotated[str | None, typer.Argument(help="A glob over tags: 'resnet50*'.")] = None,
) -> None:
    """Every known weight set: dataset, published accuracy, size, whether it is cached."""
    from .terminal import result_console
    from .weights.display import weights_table

    result_console().print(weights_table(pattern))


@weights_app.command("info")
@friendly_errors
def weights_info(
    ctx: typer.Context,
    tag: Annotated[str, typer.Argument(help="A tag, or a model name for its default.")],
) -> None:
    """One weight set's record: file, hash, license, classes, preprocessing, accuracy."""
    from .terminal import result_console
    from .weights.display import record_table
    from .weights.records import get_weights

    result_console().print(record_table(get_weights(tag)))


@weights_app.command("download")
@friendly_errors
def weights_download(
    ctx: typer.Context,
    tags: Annotated[list[str], typer.Argument(help="Tags or model names (their defaults).")],
) -> None:
    """Fetch weights into torch hub's cache now, e.g. before going offline."""
    from .weights.loading import record_path
    from .weights.records import get_weights

    for tag in tags:
        record = get_weights(tag)
        typer.echo(f"{record.tag}: {record_path(record)}")


@weights_app.command("convert")
@friendly_errors
def weights_convert(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A checkpoint file, tag or URL.")],
    out: Annotated[str, typer.Argument(help="The .safetensors file to write.")],
    model: Annotated[str | None, typer.Option(help="Map and check the keys and shapes for "
                                                   "this model.")] = None,
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Convert weights holding NaN/inf too.")] = False,
) -> None:
    """Write any loadable checkpoint as a clean safetensors file with metadata."""
    from .weights.loading import convert

    typer.echo(f"wrote {convert(source, out, model_name=model, allow_nonfinite=allow_nonfinite)}")


experiment_app = typer.Typer(no_args_is_help=True, help="Experiments about residual learning.")
app.add_typer(experiment_app, name="experiment")


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def _claim_line(c: dict) -> str:
    """One degradation comparison as a line: the two errors, margin, bar and verdict."""
    verdict = "holds" if c["holds"] else "does NOT hold"
    seeds = c.get("seeds", [0, 1])
    within = ("" if c["beyond_spread"] or not c["holds"] else
              ", within the seed spread" if len(seeds) > 1 else
              f" (seed {seeds[0]} only: no spread to judge it by)")
    return (f"{c['claim']}: {c['a']:.2f} vs {c['b']:.2f} (margin {c['margin']:+.2f}, "
            f"half-ranges summed {c['half_range_sum']:.2f}): {verdict}{within}")


@experiment_app.command("degradation")
@friendly_errors
def experiment_degradation(
    ctx: typer.Context,
    data: Annotated[str, typer.Option()] = "../shared/data/cifar10",
    out: Annotated[str, typer.Option()] = "runs/degradation",
    depths: Annotated[str, typer.Option(help="Any of 20,32,44,56,110.")] = "20,56",
    seeds: Annotated[str, typer.Option()] = "0,1",
    epochs: Annotated[int | None, typer.Option(help="Default: 164 (paper), 12 (quick).")] = None,
    subset_per_class: Annotated[int | None, typer.Option()] = None,
    quick: Annotated[bool, typer.Option("--quick", help="<= 60 min on a 2-core CPU.")] = False,
    batch_size: Annotated[int, typer.Option()] = 128,
    device: Annotated[str, typer.Option()] = "auto",
    amp: Annotated[str, typer.Option()] = "auto",
    only: Annotated[str, typer.Option(help="Train just these networks (e.g. plain56,resnet56) "
                                           "and summarise what is finished.")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any training config field: "
                                                   "--set compile=true")] = None,
) -> None:
    """Plain vs residual nets of several depths: training/test error and gradient norms."""
    from .experiments.degradation import DegradationConfig, run_degradation
    from .train.config import TrainConfig

    depth_list = _ints(depths, "--depths")
    bad = [d for d in depth_list if d not in (20, 32, 44, 56, 110)]
    if bad or len(depth_list) < 2:
        raise ValueError(f"--depths takes two or more of 20,32,44,56,110, got {depths!r}")
    names = tuple(n.strip() for n in only.split(",") if n.strip())
    known = {f"{k}{d}" for d in depth_list for k in ("plain", "resnet")}
    if set(names) - known:
        raise ValueError(f"--only takes networks of --depths ({', '.join(sorted(known))}), "
                         f"got {only!r}")
    overrides = {"data": data, "out": out, "depths": depth_list,
                 "seeds": _ints(seeds, "--seeds"), "device": device, "amp": amp,
                 "batch_size": batch_size, "only": names,
                 "extra": TrainConfig.parse(_parse_sets(set_ or []))}
    if epochs is not None:
        overrides["epochs"] = epochs
    if subset_per_class is not None:
        overrides["subset_per_class"] = subset_per_class
    cfg = (DegradationConfig.quick_setting(**overrides) if quick
           else DegradationConfig(**overrides))
    if quick:
        typer.echo(f"quick setting: {cfg.subset_per_class} training images per class, "
                   f"{cfg.epochs} epochs; the full setting is the paper's schedule for a GPU")
    summary = run_degradation(cfg, log=typer.echo)
    for c in summary["comparisons"]:
        typer.echo(_claim_line(c))
    if summary.get("comparisons_clean"):
        typer.echo("the same claims on the fixed clean training subset (beside, not verdicts):")
        for c in summary["comparisons_clean"]:
            typer.echo(f"  {_claim_line(c)}")
    typer.echo(f"summary: {out}/summary.json, figures: {out}/fig6_errors.png, "
               f"{out}/gradient_norms.png, {out}/error_vs_depth.png, {out}/depth_gap.png")


@app.command()
@friendly_errors
def export(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name (see `resnets info`).")],
    output: Annotated[str, typer.Option("--output", "-o", help="File to write.")],
    weights: Annotated[str | None, typer.Option(
        help="Weights file (.safetensors or torch); default: the model's initial weights.")] = None,
    format_: Annotated[str | None, typer.Option(
        "--format", help="onnx, openvino, torch-export, torchscript or safetensors; default: "
        "from the suffix (.onnx .xml .pt2 .pt .safetensors).")] = None,
    uint8_input: Annotated[bool, typer.Option(
        help="onnx, openvino: normalise inside the graph, so uint8 images (resized and "
             "cropped as the metadata says) go straight in.")] = False,
    force_extension: Annotated[bool, typer.Option(
        "--force-extension", help="Keep an output suffix that names another format.")] = False,
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Export weights holding NaN/inf too.")] = False,
) -> None:
    """Write a model as ONNX (dynamic batch/size, checked in onnxruntime), an OpenVINO IR
    (.xml + .bin, checked in OpenVINO), a torch.export program, TorchScript or safetensors;
    atomically."""
    from .export.formats import SuffixMismatch, export_named

    try:
        report = export_named(model, output, format_, weights, force_extension=force_extension,
                              allow_nonfinite=allow_nonfinite, uint8_input=uint8_input)
    except SuffixMismatch as e:
        raise ValueError(f"{e} (--force-extension)") from None
    typer.echo(report.summary())
    if weights is None:  # as torchvision's builders without weights=: an architecture to time
        typer.echo(f"warning: no --weights: {output} holds {model} with freshly initialised "
                   f"(untrained) weights; --weights {model} exports its trained ones where "
                   "the package has them", err=True)


@app.command()
@friendly_errors
def bench(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model name.")] = "resnet50",
    batch: Annotated[str, typer.Option(help="Batch sizes, comma-separated.")] = "1,16",
    backend: Annotated[str, typer.Option(
        help="resnets backends: eager, optimized, compiled, bf16, onnxruntime, "
             "onnxruntime-int8, openvino, openvino-int8, or int8 (the fastest int8 backend "
             "installed)."
    )] = "eager,optimized,onnxruntime,int8",
    compare: Annotated[str, typer.Option(
        help="Peers: torchvision, onnxruntime, onnxruntime-int8 (or int8), openvino, "
             "openvino-int8 ('' for none)."
    )] = "torchvision,onnxruntime",
    threads: Annotated[int | None, typer.Option(help="Threads for torch and onnxruntime; "
                                                     "default: every core.")] = None,
    repeats: Annotated[int, typer.Option(help="Interleaved timed rounds.")] = 5,
    min_time: Annotated[float, typer.Option(help="Seconds per case and round.")] = 0.5,
    weights: Annotated[str | None, typer.Option(help="Weights file.")] = None,
    calib_dir: Annotated[str | None, typer.Option(
        help="Images to calibrate int8 on (needed for int8 cases).")] = None,
    calib_images: Annotated[int, typer.Option(help="How many of them.")] = 128,
    image_size: Annotated[int | None, typer.Option(help="Square input side.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time inference backends against torchvision, onnxruntime and OpenVINO, in one process
    and run."""

    from .export.bench import BenchConfig, parse_batches, parse_list, print_report, run_bench

    cfg = BenchConfig(model=model, batches=parse_batches(batch),
                      backends=parse_list(backend, "backends"),
                      compare=parse_list(compare, "peers") if compare.strip() else (),
                      threads=threads, repeats=repeats, min_time_s=min_time, weights=weights,
                      calib_dir=calib_dir, calib_images=calib_images, image_size=image_size)
    report = run_bench(cfg, log=lambda message: typer.echo(message, err=True))
    if json_:
        typer.echo(_strict_json(report))
    else:
        print_report(report)


SR_BACKEND_HELP = ("auto (the fastest exact fp32 backend installed: openvino, else "
                   "onnxruntime, else torch), torch (fp32 eager), onnxruntime, openvino, or "
                   "bf16 (autocast: faster where the CPU has bf16, within a measured 0.003 dB "
                   "on Set5, not exact).")
SR_MODEL_HELP = ("Default: the best bundled network by its recorded Set5/Set14 PSNR "
                 "(edsr_baseline_x234); a bundled name (edsr_small_x234: 9-10x faster), "
                 "bicubic, or a name with --weights.")


@app.command("sr-eval")
@friendly_errors
def sr_eval(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="Folder with HR/ and LR/ (or x2/ x3/ x4/ of them), "
                                           "or a folder of HR images.")],
    scale: Annotated[int, typer.Option(min=2, max=4, help="2, 3 or 4.")] = 2,
    model: Annotated[str | None, typer.Option(help=SR_MODEL_HELP)] = None,
    weights: Annotated[str | None, typer.Option(help="safetensors file of the model.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    backend: Annotated[str, typer.Option(help=SR_BACKEND_HELP)] = "auto",
    self_ensemble: Annotated[bool, typer.Option(
        "--self-ensemble", help="Average the 8 flips/rotations (8x the time); reported as "
                                "self-ensemble x8, apart from single-pass numbers.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """PSNR/SSIM (Y, scale px shaved) per image and mean, beside bicubic and published numbers."""

    from .tasks.sr_eval import evaluate_sr, print_evaluation
    from .weights.sr import get_sr_model

    sr_model, label = get_sr_model(model, weights, device)
    result = evaluate_sr(sr_model, data, scale, label, backend=backend,
                         self_ensemble=self_ensemble)
    for line in result.errors:  # evaluate_sr raised already if no image could be scored
        typer.echo(f"error: {line}", err=True)
    if json_:
        typer.echo(_strict_json(result.to_dict()))
    else:
        print_evaluation(result)
    if result.errors:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def upscale(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Image files.")],
    out_dir: Annotated[str | None, typer.Option("--out-dir", "-o", help="Output folder; "
                                                "default: beside each input.")] = None,
    scale: Annotated[int, typer.Option(min=2, max=4, help="2, 3 or 4.")] = 2,
    model: Annotated[str | None, typer.Option(help=SR_MODEL_HELP)] = None,
    weights: Annotated[str | None, typer.Option(help="safetensors file of the model.")] = None,
    tile: Annotated[int, typer.Option(help="Tile side in input pixels; 0: no tiling.")] = 256,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    backend: Annotated[str, typer.Option(help=SR_BACKEND_HELP)] = "auto",
    self_ensemble: Annotated[bool, typer.Option(
        "--self-ensemble", help="Average the 8 flips/rotations (8x the time).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print one JSON line per image "
                                                       "(no progress bar).")] = False,
) -> None:
    """Super-resolve images to NAME_xS.png; a bad file is reported, the others still written.
    A large image runs in tiles, with a progress bar and the time left on a terminal."""
    import json

    from .models.sr import check_scale
    from .tasks.upscale import describe_inference, inference_model, upscale_files
    from .weights.sr import get_sr_model

    sr_model, label = get_sr_model(model, weights, device)
    check_scale(sr_model, scale)
    run = inference_model(sr_model, backend, self_ensemble, scales=(scale,))
    results = upscale_files(run, inputs, scale, out_dir, tile=tile or None,
                            progress=not (quiet or json_))
    how = describe_inference(run)
    for r in results:
        if r.error:
            typer.echo(f"error: {r.error}", err=True)
        elif json_:
            (h, w), (oh, ow) = r.in_size, r.out_size
            typer.echo(json.dumps({"source": str(r.source), "output": str(r.output),
                                   "in_size": [w, h], "out_size": [ow, oh], "scale": scale,
                                   "model": label, **how}))
        else:
            (h, w), (oh, ow) = r.in_size, r.out_size
            typer.echo(f"{r.source} ({w}x{h}) -> {r.output} ({ow}x{oh})")
    if any(r.error for r in results):
        raise typer.Exit(1)


@app.command()
@friendly_errors
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free one, named in the "
                                                "'running on' line).")] = 8000,
    model: Annotated[str | None, typer.Option(help="Classifier; default: bundled ResNet-56."
                                              )] = None,
    weights: Annotated[str | None, typer.Option(help="Classifier safetensors file.")] = None,
    sr_model: Annotated[str | None, typer.Option(help="Upscaler; default: the best bundled "
                                                  "one (edsr_small_x234: faster).")
                        ] = None,
    sr_weights: Annotated[str | None, typer.Option(help="Upscaler safetensors file.")] = None,
    backend: Annotated[str, typer.Option(help="Classifier backend, as predict's: auto "
                                              "(fastest exact installed), torch, optimized, "
                                              "onnxruntime, openvino, int8 (needs "
                                              "--calibration), ...")] = "auto",
    calibration: Annotated[str | None, typer.Option(help="Image folder for an int8 "
                                                    "backend.")] = None,
    sr_backend: Annotated[str, typer.Option(help="Upscaler backend: " + SR_BACKEND_HELP)
                          ] = "auto",
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    workers: Annotated[int, typer.Option(help="Processes sharing the port.")] = 1,
    queue_size: Annotated[int, typer.Option(help="Waiting requests per model before 503.")
                          ] = 64,
    max_batch: Annotated[int, typer.Option(help="Images per classifier batch.")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(
        help="How long a batch waits to fill; 0: what queued while the last batch ran.")] = 0.0,
    batch_wait_mode: Annotated[str, typer.Option(
        help="adaptive: the wait also ends once a batch holds as many requests as were in "
             "flight at once since the last batch began; fixed: the whole --batch-wait-ms."
             )] = "adaptive",
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload (413 above).")] = 20.0,
    max_pixels: Annotated[int, typer.Option(help="Largest decoded input, in pixels.")
                          ] = 40_000_000,
    max_output_pixels: Annotated[int, typer.Option(help="Largest upscaled output, in pixels.")
                                 ] = 16_777_216,
    shutdown_timeout_s: Annotated[float, typer.Option(
        help="On SIGTERM, how long requests in flight may still take before they are "
             "cancelled.")] = 30.0,
) -> None:
    """Serve classify, Grad-CAM and upscale over HTTP, with a web page at /."""
    from .serve.config import ServeConfig
    from .serve.server import serve as run_server

    run_server(ServeConfig(host=host, port=port, model=model, weights=weights,
                           sr_model=sr_model, sr_weights=sr_weights, backend=backend,
                           calibration=calibration, sr_backend=sr_backend, device=device,
                           workers=workers, queue_size=queue_size, max_batch=max_batch,
                           batch_wait_ms=batch_wait_ms, batch_wait_mode=batch_wait_mode,
                           max_upload_mb=max_upload_mb, max_pixels=max_pixels,
                           max_output_pixels=max_output_pixels,
                           shutdown_timeout_s=shutdown_timeout_s))


@app.command("train-sr")
@friendly_errors
def train_sr(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="edsr_small, edsr_tiny, edsr_baseline, vdsr, "
                                            "vdsr_tiny.")] = "edsr_small",
    data: Annotated[str, typer.Option(help="Folder holding T91/ and BSD200/.")
                    ] = "../shared/data/sr",
    out: Annotated[str | None, typer.Option(help="Run folder.")] = None,
    scales: Annotated[str, typer.Option(help="Scales one network serves, e.g. 2,3,4.")] = "2,3,4",
    pretrained: Annotated[str | None, typer.Option(
        help="Fine-tune: start from a train-sr checkpoint (.pt) or SR weights "
             "(.safetensors) of this network, holding out their validation images.")] = None,
    patch_size: Annotated[int | None, typer.Option(help="HR patch side (96).")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs of --steps-per-epoch steps.")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option(help="Steps per epoch (1000).")] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    amp: Annotated[str | None, typer.Option(
        help="none, bf16 or auto (bf16 where the device computes it natively).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda ...")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    val_count: Annotated[int | None, typer.Option(help="Training images held out for "
                                                       "validation (10).")] = None,
    report: Annotated[str | None, typer.Option(help="Benchmarks scored at the end "
                                                    "(Set5,Set14; '' for none).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Also every N steps.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any config field: "
                                                   "--set min_lr_ratio=0.01")] = None,
    resume: Annotated[str | None, typer.Option(help="Run folder to continue.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet")] = False,
) -> None:
    """Train a super-resolution network on T91+BSD200; checkpoints, resume, model.safetensors."""

    from .train.sr import SRTrainConfig
    from .train.sr import train_sr as run_sr_training

    sets = SRTrainConfig.parse(_parse_sets(set_ or []))  # typed and checked: nothing written
    flags = {"model": model, "data": data, "scales": _ints(scales, "--scales"),
             "pretrained": pretrained, "patch_size": patch_size, "batch_size": batch_size,
             "epochs": epochs, "steps_per_epoch": steps_per_epoch, "lr": lr, "amp": amp,
             "device": device, "seed": seed, "val_count": val_count,
             "checkpoint_every": checkpoint_every}
    if report is not None:
        flags["report_sets"] = tuple(s.strip() for s in report.split(",") if s.strip())
    if resume:
        changes = _resume_changes(ctx, flags, sets, fixed=("out",))
        if report is not None:
            changes["report_sets"] = flags["report_sets"]
        with _resume_hint("train-sr", resume):
            result = run_sr_training(SRTrainConfig(out=resume), resume=True, quiet=quiet,
                                     changes=changes)
    else:
        flags = {k: v for k, v in flags.items() if v is not None}
        flags["out"] = out or f"runs/sr-{model}"
        flags.update(sets)
        with _resume_hint("train-sr", flags["out"]):
            result = run_sr_training(SRTrainConfig().replace(**flags), quiet=quiet)
    typer.echo(_strict_json(result))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
