"""Download and cache: :func:`fetch` is the one way weight files come from the network.

Files live in torch hub's cache, ``torch.hub.get_dir()/checkpoints`` (that is
``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``), under the
URL's file name, so a file torchvision already downloaded is used as it is (a URL whose file
name carries no hash gets a key of the whole URL in its name, ``model.<key>.pth``: nothing
else could tell two such files apart). A download is
streamed to a temporary file beside its destination, checked against its sha256 and only
then moved into place (``os.replace``), so the cache never holds a partial file and a
failed download leaves nothing behind. ``RESNETS_OFFLINE=1`` never touches the network.

A download is bounded: by the record's file size when it is known, else by
``RESNETS_MAX_DOWNLOAD_MB`` (2048 MB by default). Before a file enters the cache its first
bytes must be those of a checkpoint (a torch zip or pickle, or safetensors), so an HTML
error page served with status 200 is refused, not cached. The temporary file goes on any
exit, SIGTERM and SIGINT included (:mod:`resnets.files`).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import struct
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from ..files import atomic_output

OFFLINE_ENV = "RESNETS_OFFLINE"
MAX_DOWNLOAD_ENV = "RESNETS_MAX_DOWNLOAD_MB"
DEFAULT_MAX_DOWNLOAD_MB = 2048  # the largest published ResNet checkpoint is ~0.5 GB
DEFAULT_TIMEOUT = 30.0  # seconds without a byte before a download is given up
_CHUNK = 1 << 20

_log = logging.getLogger(__name__)


class DownloadError(ConnectionError):
    """A download failed: unreachable host, HTTP error, timeout, cut-off or wrong content."""


def cache_dir() -> Path:
    """torch hub's checkpoint folder (honours ``$TORCH_HOME`` and ``torch.hub.set_dir``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def is_offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def max_download_bytes() -> int:
    """The largest download without a known file size, from ``RESNETS_MAX_DOWNLOAD_MB``."""
    text = os.environ.get(MAX_DOWNLOAD_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_DOWNLOAD_MB << 20
    try:
        mb = float(text)
    except ValueError:
        mb = -1.0
    if not mb > 0 or mb == float("inf"):
        raise ValueError(f"{MAX_DOWNLOAD_ENV} must be a positive number of megabytes, got "
                         f"{text!r}")
    return int(mb * (1 << 20))


def checkpoint_format(path: Path) -> str | None:
    """``"zip"`` (torch.save), ``"pickle"`` (legacy torch.save), ``"safetensors"`` or None,
    from the file's first bytes; a web page, an empty file or random bytes give None."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= path.stat().st_size - 8 and head[8:9] == b"{":
            return "safetensors"
    return None


def url_filename(url: str) -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot tell a file name from the URL {url!r}: expected a URL "
                         "ending in a file name such as .../resnet50-11ad3fa6.pth")
    return name


def hash_prefix_from_name(name: str) -> str | None:
    """The sha256 prefix in a file name, by torchvision's convention ``name-<hex>.pth``."""
    match = re.search(r"-([0-9a-f]{8,64})\.", name)
    return match.group(1) if match else None


def url_keyed_path(url: str) -> Path:
    """Where the file of a URL without a hash to check lives in the cache: its name with a
    key of the whole URL before the suffix (``model.<key>.pth``), so that two URLs ending
    in one file name (``.../a/model.pth``, ``.../b/model.pth``) never share a file. Hashed
    files keep their names, torch hub's, where the hash tells the files apart."""
    name = Path(url_filename(url))
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir() / f"{name.stem}.{key}{name.suffix}"


def cache_path(url: str, sha256: str | None = None, filename: str | None = None) -> Path:
    """Where :func:`fetch` keeps ``url``'s file (same arguments): its own name when a hash
    tells files apart or a name is given, else :func:`url_keyed_path`."""
    name = filename or url_filename(url)
    expected = hash_prefix_from_name(name) if sha256 is None else sha256
    if not expected and filename is None:
        return url_keyed_path(url)
    return cache_dir() / name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_problem(path: Path, sha256: str, file_size: int | None) -> str | None:
    """Why the file at ``path`` is not the expected one, or None when it is."""
    if file_size is not None and path.stat().st_size != file_size:
        return f"{path.stat().st_size} bytes, expected {file_size}"
    if checkpoint_format(path) is None:
        return _not_a_checkpoint(path)
    if sha256:
        digest = sha256_of(path)
        if not digest.startswith(sha256):
            return f"sha256 {digest[:16]}..., expected {sha256}"
    return None


def fetch(url: str, *, sha256: str | None = None, filename: str | None = None,
          file_size: int | None = None, timeout: float = DEFAULT_TIMEOUT,
          progress: bool = True) -> Path:
    """The path of ``url``'s file in the cache, downloading it first when needed.

    ``sha256`` is the full digest or its leading hex digits; None takes the prefix from the
    file name (torchvision's convention), "" checks nothing. A cached file that fails the
    check is reported and fetched again. Raises :class:`DownloadError` when the download
    fails and ``FileNotFoundError`` in offline mode when the file is not cached.
    """
    if sha256:  # as sha256sum prints it, any case; a prefix short enough to match by chance
        sha256 = sha256.lower()  # is no check
        if not re.fullmatch(r"[0-9a-f]{8,64}", sha256):
            raise ValueError(f"expected a sha256 of 8 to 64 hex digits (or its full 64), got "
                             f"{sha256!r}")
    name = filename or url_filename(url)
    expected = hash_prefix_from_name(name) if sha256 is None else sha256
    dest = cache_path(url, sha256, filename)
    # digits in a name need not be a hash (model-20240101.pth): say where the expectation
    # came from and how to load such a file without the check
    from_name = (f" ({expected} is the hex in the file name {name}, read as a sha256 prefix "
                 "by torchvision's naming; if it is not a hash, download the file yourself "
                 "and pass its path)") if sha256 is None and expected else ""
    problem = None
    if dest.is_file():
        problem = file_problem(dest, expected or "", file_size)
        if problem is None:
            return dest
        if problem.startswith("sha256"):
            problem += from_name
        _log.warning("cached weights %s are damaged (%s)%s", dest, problem,
                     "" if is_offline() else "; downloading them again")
    if is_offline():
        found = f"{dest} is damaged ({problem})" if problem else f"{name} is not in the cache"
        raise FileNotFoundError(
            f"offline ({OFFLINE_ENV}=1) and {found}: download {url} on a connected machine "
            f"(`resnets weights download` does it) and place the file at {dest}")
    try:
        _download(url, dest, expected or "", file_size, timeout, progress, from_name)
    except _NameHashMismatch:
        raise  # placing the file by hand would fail the same check
    except DownloadError as e:  # e.g. no network: say how to install the file by hand
        raise DownloadError(f"{e} (without network: place the file at {dest})") from None
    return dest


def _not_a_checkpoint(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<")):
        return "a web page, not a checkpoint"
    return "not a checkpoint (neither a torch file nor safetensors)"


class _NameHashMismatch(DownloadError):
    """The download does not match the hash its file name was read as."""


def _download(url: str, dest: Path, sha256: str, file_size: int | None, timeout: float,
              progress: bool, from_name: str = "") -> None:
    limit = file_size if file_size is not None else max_download_bytes()
    with atomic_output(dest, make_parents=True) as tmp:  # a failed check leaves nothing
        with open(tmp, "wb") as out:
            digest, received = _stream(url, out, timeout, progress, dest.name, limit)
        if file_size is not None and received != file_size:
            raise DownloadError(f"download of {url} gave {received} bytes, expected "
                                f"{file_size}; nothing was saved")
        if sha256 and not digest.startswith(sha256):
            error = _NameHashMismatch if from_name else DownloadError
            raise error(f"download of {url} has sha256 {digest[:16]}..., expected "
                        f"{sha256}: the file is damaged or not the published one; "
                        f"nothing was saved{from_name}")
        if checkpoint_format(tmp) is None:
            raise DownloadError(f"download of {url} is {_not_a_checkpoint(tmp)}; nothing was "
                                "saved")
    _log.info("saved %s", dest)


def _too_large(url: str, limit: int) -> DownloadError:
    return DownloadError(f"download of {url} is larger than {limit / (1 << 20):.0f} MB, the "
                         f"most expected (set {MAX_DOWNLOAD_ENV} to allow more); nothing was "
                         "saved")


def _stream(url: str, out, timeout: float, progress: bool, label: str, limit: int
            ) -> tuple[str, int]:
    """Copy ``url`` into the open file ``out``, at most ``limit`` bytes; the sha256 hex
    digest and the byte count."""
    h = hashlib.sha256()
    received = 0
    total = None
    request = urllib.request.Request(url, headers={"User-Agent": "resnets"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise _too_large(url, limit)
            with _progress_bar(label, total, progress) as advance:
                while chunk := response.read(_CHUNK):
                    if received + len(chunk) > limit:
                        raise _too_large(url, limit)
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    advance(len(chunk))
    except DownloadError:
        raise
    except urllib.error.HTTPError as e:
        raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except TimeoutError:
        raise DownloadError(f"download of {url} timed out: no data for {timeout:g} s "
                            f"(after {received} bytes)") from None
    except http.client.IncompleteRead:
        raise DownloadError(f"download of {url} was cut off after {received} of {total} "
                            "bytes") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise DownloadError(f"download of {url} timed out: no answer in {timeout:g} s"
                                ) from None
        raise DownloadError(f"cannot reach {url}: {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise DownloadError(f"download of {url} failed after {received} bytes: {e}") from None
    if total is not None and received != total:
        raise DownloadError(f"download of {url} was cut off after {received} of {total} bytes")
    return h.hexdigest(), received


@contextlib.contextmanager
def _progress_bar(label: str, total: int | None, enabled: bool
                  ) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields the function that advances it."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(escape(label), total=total)  # a file name: text, not markup
        yield lambda n: bar.advance(task, n)
