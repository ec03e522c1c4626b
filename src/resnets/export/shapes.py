"""Inputs for tracing and checking exports, and the dynamic axes every format declares."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import torch


def sample_input(input_size: tuple[int, int, int], batch: int = 2, seed: int = 0,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random batch for tracing; batch 2 so that exporters keep the batch axis dynamic.
    uint8 gives random pixel values 0..255 (for graphs that take images as they are)."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (batch, *input_size), generator=generator,
                             dtype=torch.uint8)
    return torch.randn((batch, *input_size), generator=generator)


def input_dtype(model: torch.nn.Module) -> torch.dtype:
    """What ``model`` takes: uint8 for a graph that normalises inside
    (:class:`resnets.export.graphs.Uint8Input`), else float32."""
    return getattr(model, "input_dtype", torch.float32)


def dynamic_shapes() -> tuple[dict[int, object], ...]:
    """``torch.export`` dynamic shapes for one ``(N, C, H, W)`` input: N, H and W free.

    ``Dim.DYNAMIC`` rather than named ranges: the shortcut's ``x[..., ::2, ::2]`` and the
    strided conv beside it give equal sizes for every height, which the shape solver cannot
    prove, so a named range would be refused for odd sizes.
    """
    return ({0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC,
             3: torch.export.Dim.DYNAMIC},)


def check_inputs(input_size: tuple[int, int, int],
                 dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """The trace sample and one of another batch and odd sizes, to test the dynamic axes."""
    c, h, w = input_size
    return [sample_input(input_size, dtype=dtype),
            sample_input((c, h + 3, w + 5), batch=3, seed=1, dtype=dtype)]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, graph dumps and deprecation warnings; their
    failures still arrive as exceptions."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
