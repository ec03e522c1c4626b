"""Super-resolution by residual learning: VDSR (Kim et al. 2016) and EDSR (Lim et al. 2017).

Both networks learn only the residual, the detail that bicubic interpolation misses, and add
the bicubic-upscaled input back at the end (MATLAB-style bicubic, a = -0.5, the same as the
benchmark baseline). VDSR upscales first and runs a plain conv/ReLU stack at full size, so one
network serves every scale. EDSR works at low resolution with residual blocks (conv-ReLU-conv,
no batch norm) inside a long skip, then a pixel-shuffle upsampler per scale.

Images are float ``(N, C, H, W)`` in [0, 1] with C = 1 or 3; ``model(x, scale)`` returns
``(N, C, scale * H, scale * W)``, not clipped. Weight files are safetensors with the
architecture in their metadata (``resnets.weights.sr``).

These classes are separate from the classification registry on purpose: ``resnets info``
and ``list_models()`` stay classification-only. ``create_sr_model(name)`` builds one of
``list_sr_models()``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch import nn

from .imresize import upscale

SUPPORTED_SCALES = (2, 3, 4)
METADATA_KEY = "resnets.sr"  # safetensors metadata entry: {"arch": ..., "config": {...}}


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


def _check_input(x: torch.Tensor, in_chans: int) -> None:
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"expected a (N, {in_chans}, H, W) batch, got shape {tuple(x.shape)}")


def _check_scale(scale: int | None, scales: tuple[int, ...]) -> int:
    """The scale to run at: the one given (it must be served) or the model's only scale."""
    if scale is None:
        if len(scales) != 1:
            raise ValueError(f"this model serves scales {list(scales)}: pass scale=")
        return scales[0]
    if scale not in scales:
        raise ValueError(f"this model serves scales {list(scales)}, got scale {scale}")
    return scale


@dataclass(frozen=True)
class VDSRConfig:
    """VDSR's shape. Defaults are the paper's: 20 layers of 64 3x3 filters (Kim et al. 2016,
    Sec. 3.1); with ``in_chans=1`` (the paper's Y channel) that is 665,921 parameters, the
    "665K" quoted for VDSR in later comparisons (e.g. Tai et al. 2017, DRRN, Table 5)."""

    in_chans: int = 3
    depth: int = 20  # conv layers, first and last included
    width: int = 64
    scales: tuple[int, ...] = SUPPORTED_SCALES  # what it was trained for; any integer runs


class VDSR(nn.Module):
    """Bicubic upscale, then a plain stack of conv+ReLU predicting the residual."""

    def __init__(self, config: VDSRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VDSRConfig()
        if config.depth < 2:
            raise ValueError(f"VDSR needs at least 2 conv layers, got depth {config.depth}")
        layers: list[nn.Module] = [_conv3x3(config.in_chans, config.width), nn.ReLU(inplace=True)]
        for _ in range(config.depth - 2):
            layers += [_conv3x3(config.width, config.width), nn.ReLU(inplace=True)]
        layers.append(_conv3x3(config.width, config.in_chans))
        self.body = nn.Sequential(*layers)
        for m in self.body:
            if isinstance(m, nn.Conv2d):  # He init, as the paper (Sec. 3.3 cites He et al.)
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        _check_input(x, self.config.in_chans)
        if scale is None:
            scale = _check_scale(None, self.scales)
        up = upscale(x, scale)
        return up + self.body(up)


class ResBlock(nn.Module):
    """EDSR's residual block: conv-ReLU-conv, no batch norm, branch scaled before the add."""

    def __init__(self, width: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = _conv3x3(width, width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(width, width)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.relu(out)
        out = self.conv2(out)
        return identity + out * self.res_scale

    def extra_repr(self) -> str:
        return f"res_scale={self.res_scale}"


def _upsampler(width: int, out_chans: int, scale: int, kind: str) -> nn.Sequential:
    """Features at low resolution to ``out_chans`` channels at ``scale`` times the size.

    ``"conv"``: EDSR's, conv to ``width * r^2`` + pixel shuffle per factor r (x4 = two x2
    steps), then a conv to ``out_chans``. ``"light"``: one conv straight to
    ``out_chans * scale^2`` + pixel shuffle (ESPCN-style; far fewer parameters).
    """
    if kind == "light":
        return nn.Sequential(_conv3x3(width, out_chans * scale * scale), nn.PixelShuffle(scale))
    if kind != "conv":
        raise ValueError(f"upsampler must be 'conv' or 'light', got {kind!r}")
    if scale == 3:
        steps = [3]
    elif scale >= 2 and scale & (scale - 1) == 0:
        steps = [2] * (scale.bit_length() - 1)
    else:
        raise ValueError(f"the 'conv' upsampler builds scales 2, 3 and powers of 2, got {scale}")
    layers: list[nn.Module] = []
    for r in steps:
        layers += [_conv3x3(width, width * r * r), nn.PixelShuffle(r)]
    layers.append(_conv3x3(width, out_chans))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class EDSRConfig:
    """EDSR's shape. ``edsr_baseline`` is the paper's baseline: 16 blocks of 64 channels,
    1,369,859 parameters at x2 and 1,517,571 at x4 ("1.5M", Lim et al. 2017, Table 1; the
    large EDSR adds res_scale 0.1 at 32 blocks of 256 channels)."""

    in_chans: int = 3
    num_blocks: int = 16
    width: int = 64
    res_scale: float = 1.0
    scales: tuple[int, ...] = (2,)  # one upsampler each; several = one multi-scale network
    upsampler: str = "conv"  # "conv" (EDSR) or "light" (one conv + pixel shuffle)


class EDSR(nn.Module):
    """Head conv, residual blocks inside a long skip, an upsampler per scale, + bicubic input.

    Departure from the paper: EDSR subtracts the dataset's mean colour and adds it back; here
    the bicubic-upscaled input is added to the output instead (the issue's global residual),
    which makes the mean shift unnecessary.
    """

    def __init__(self, config: EDSRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or EDSRConfig()
        if not config.scales:
            raise ValueError("EDSR needs at least one scale, got scales=()")
        self.head = _conv3x3(config.in_chans, config.width)
        blocks: list[nn.Module] = [ResBlock(config.width, config.res_scale)
                                   for _ in range(config.num_blocks)]
        self.body = nn.Sequential(*blocks, _conv3x3(config.width, config.width))
        self.tail = nn.ModuleDict({
            f"x{s}": _upsampler(config.width, config.in_chans, s, config.upsampler)
            for s in config.scales})

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        _check_input(x, self.config.in_chans)
        scale = _check_scale(scale, self.scales)
        feat = self.head(x)
        feat = feat + self.body(feat)  # the long skip
        return upscale(x, scale) + self.tail[f"x{scale}"](feat)


@dataclass(frozen=True)
class BicubicConfig:
    """The baseline has nothing to configure but its channels."""

    in_chans: int = 3
    scales: tuple[int, ...] = SUPPORTED_SCALES


class Bicubic(nn.Module):
    """The baseline as a model: MATLAB-style bicubic upscaling, no parameters."""

    def __init__(self, config: BicubicConfig | None = None) -> None:
        super().__init__()
        self.config = config or BicubicConfig()

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    def forward(self, x: torch.Tensor, scale: int | None = None) -> torch.Tensor:
        _check_input(x, self.config.in_chans)
        if scale is None:
            scale = _check_scale(None, self.scales)
        return upscale(x, scale)


ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "bicubic": (Bicubic, BicubicConfig),
    "vdsr": (VDSR, VDSRConfig),
    "edsr": (EDSR, EDSRConfig),
}


def build_sr(arch: str, base: dict, overrides: dict) -> nn.Module:
    """An ``arch`` network (a key of ``ARCHITECTURES``) from ``base`` settings and overrides."""
    cls, config_cls = ARCHITECTURES[arch]
    known = {f.name for f in fields(config_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {arch}; expected some of "
                         f"{sorted(known)}")
    kwargs = {**base, **overrides}
    if "scales" in kwargs:
        kwargs["scales"] = tuple(int(s) for s in kwargs["scales"])
    return cls(config_cls(**kwargs))


def bicubic(**kwargs) -> nn.Module:
    """MATLAB-style bicubic upscaling (the baseline)."""
    return build_sr("bicubic", {}, kwargs)


def vdsr(**kwargs) -> nn.Module:
    """VDSR as published: 20 layers, 64 channels (668,227 parameters on RGB)."""
    return build_sr("vdsr", {}, kwargs)


def vdsr_tiny(**kwargs) -> nn.Module:
    """A CPU-friendly VDSR: 8 layers of 32 channels (57,251 parameters on RGB)."""
    return build_sr("vdsr", {"depth": 8, "width": 32}, kwargs)


def edsr_tiny(**kwargs) -> nn.Module:
    """4 blocks of 16 channels, light upsampler (23,068 parameters at x2, RGB)."""
    return build_sr("edsr", {"num_blocks": 4, "width": 16, "upsampler": "light"}, kwargs)


def edsr_small(**kwargs) -> nn.Module:
    """8 blocks of 32 channels, light upsampler: 161,580 parameters at x2, the "162k"
    network issue 5 calibrated on this CPU (36.76 dB on Set5 x2 after 30 minutes)."""
    return build_sr("edsr", {"num_blocks": 8, "width": 32, "upsampler": "light"}, kwargs)


def edsr_baseline(**kwargs) -> nn.Module:
    """EDSR-baseline (Lim et al. 2017): 16 blocks of 64 channels, conv upsampler."""
    return build_sr("edsr", {"num_blocks": 16, "width": 64, "upsampler": "conv"}, kwargs)


SR_MODELS: dict[str, Callable[..., nn.Module]] = {
    f.__name__: f for f in (bicubic, vdsr, vdsr_tiny, edsr_tiny, edsr_small, edsr_baseline)}


def list_sr_models() -> list[str]:
    """Names ``create_sr_model`` accepts."""
    return list(SR_MODELS)


def create_sr_model(name: str, **kwargs) -> nn.Module:
    """Build a super-resolution model by name; keywords override its config.

    >>> model = create_sr_model("edsr_baseline", scales=(2, 3, 4))
    """
    if name not in SR_MODELS:
        close = difflib.get_close_matches(name, list(SR_MODELS), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown super-resolution model {name!r}{hint} "
                         f"(expected one of {', '.join(SR_MODELS)})")
    return SR_MODELS[name](**kwargs)


def architecture_of(model: nn.Module) -> str:
    for arch, (cls, _) in ARCHITECTURES.items():
        if type(model) is cls:
            return arch
    raise ValueError(f"expected a resnets super-resolution model, got {type(model).__name__}")


def check_scale(model: nn.Module, scale: int) -> None:
    """Refuse a scale the model was not built or trained for."""
    scales = getattr(model, "scales", None)
    if scales is not None and scale not in scales:
        raise ValueError(f"this model serves scales {list(scales)}, got scale {scale}")
