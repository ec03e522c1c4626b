"""Decoding image files in a second process while this one starts up.

``resnets predict`` spends its first seconds on one core (``import torch`` alone took 1.8 s
on this project's 2-core machine, then the model and the backend load) while the other
core idles. :class:`Prefetch` forks a child process before PyTorch is imported; the child
decodes the files in order, with the one guarded reader
(:func:`resnets.data.image_file.read_if_small`), into memory it shares with this process.
It takes only files whose header gives no side above ``max_side`` (their size after resizing
is not known yet, so it decodes them at full size), up to ``max_bytes`` of pixels in all.

The decode pipeline (:func:`resnets.data.stream.image_batches`) takes those pixels and reads
everything else itself, as it would without a child: files the child skipped (larger ones,
and unreadable ones, so that reading them again gives the one error line), files it had not
reached, and JPEGs that the pipeline would decode at a reduced size. Pixels, order and
errors are therefore the same with or without a child.

The child ends by itself when it is through the list. It stops early, within one image,
at :meth:`Prefetch.close` (the end of the ``with`` block, errors included), when this
process has gone, and at once on Ctrl-C. One that reports nothing for :data:`STALL_S` is
killed, with a warning, and the pipeline reads the rest.

Without ``fork`` (Windows), off Linux (macOS's system libraries are not fork-safe), with
Python threads running, once PyTorch, onnxruntime or OpenVINO is loaded (their thread pools'
locks), or for a few files, no child is started and every file is read by the pipeline.
"""

from __future__ import annotations

import mmap
import os
import select
import signal
import struct
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from .image_file import read_if_small, reduced_size

# An ImageNet validation photo (500x375) is small enough; a 12 MP photo is not: the pipeline
# decodes that at a reduced size once the model's input size is known.
MAX_SIDE = 640
MAX_BYTES = 256 * 2**20
# Below this many files the fork costs about what the child saves.
MIN_FILES = 256

_FIELDS = 6  # per file: offset, height, width (as decoded), width, height (header), is JPEG
_COUNT = struct.Struct("=q")  # a message from the child: how many files it is through
_REPORT_EVERY = 64
# A child that reports nothing for this long is stuck (a lock some library held at the fork,
# though the fork is refused where that is known to happen): it is killed and the rest is
# read here. Its reports come every few files, each under MAX_SIDE, so a live child on even a
# crowded machine reports far sooner.
STALL_S = 60.0


# Libraries that run thread pools of their own (invisible to ``threading``): a process that
# loaded one is not forked, since a lock one of their threads held at the fork stays locked
# in the child for ever. The CLI forks before it imports any of them.
THREADED_LIBRARIES = ("torch", "onnxruntime", "openvino")


def can_fork() -> bool:
    """Whether a child may be forked here: Linux, no other Python thread running, and none of
    :data:`THREADED_LIBRARIES` loaded (an in-process call after them reads without a child)."""
    return (sys.platform == "linux" and hasattr(os, "fork") and threading.active_count() == 1
            and not any(name in sys.modules for name in THREADED_LIBRARIES))


class Prefetch:
    """Pixels of ``paths`` decoded ahead by a child process (see the module docstring); a
    context manager that ends the child. Inert (``pid`` None) when no child was started."""

    def __init__(self, paths: Sequence[str | Path], max_side: int = MAX_SIDE,
                 max_bytes: int = MAX_BYTES, min_files: int = MIN_FILES) -> None:
        self.pid: int | None = None
        self._lock = threading.Lock()
        self._through = 0    # files the child has reported as done, taken or not
        self._ended = True   # no more reports will come
        if len(paths) < max(1, min_files) or not can_fork():
            return
        try:
            pixels = mmap.mmap(-1, max_bytes)  # anonymous and shared: the child writes here
            index = mmap.mmap(-1, len(paths) * _FIELDS * 8)
            stop = mmap.mmap(-1, 1)
            read_fd, write_fd = os.pipe()
        except OSError:  # no memory to share (a strict overcommit policy): read as before
            return
        with warnings.catch_warnings():
            # Python 3.12+ warns of any other OS thread; the one here is numpy's BLAS pool,
            # which the child never calls (it decodes with Pillow and copies with numpy).
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                pid = os.fork()
            except OSError:
                os.close(read_fd)
                os.close(write_fd)
                return
        if pid == 0:  # the child; never returns
            os.close(read_fd)
            _decode_ahead(paths, max_side, pixels, index, stop, write_fd)
        os.close(write_fd)
        self.pid, self._read_fd, self._ended = pid, read_fd, False
        self._pixels = np.frombuffer(pixels, np.uint8)
        self._rows = np.frombuffer(index, np.int64).reshape(len(paths), _FIELDS)
        self._end_child = weakref.finalize(self, _end_child, pid, stop)

    def take(self, i: int, min_side: int | None = None) -> np.ndarray | None:
        """File ``i``'s pixels, ``(H, W, 3)`` uint8, a copy the caller owns; None when the
        child did not decode it as ``open_image(path, min_side=min_side)`` would (waiting
        for the child while it is still before file ``i``)."""
        with self._lock:
            if not self._reached(i):
                return None
            offset, height, width, header_width, header_height, jpeg = self._rows[i].tolist()
            if height == 0 or (jpeg and reduced_size((header_width, header_height), min_side)):
                return None
            end = offset + height * width * 3
            return self._pixels[offset:end].reshape(height, width, 3).copy()

    def _reached(self, i: int) -> bool:
        while i >= self._through and not self._ended:
            ready, _, _ = select.select([self._read_fd], [], [], STALL_S)
            if not ready:
                self._abandon()
                break
            reports = os.read(self._read_fd, 4096)
            if not reports:  # the child has exited
                self._ended = True
                break
            (self._through,) = _COUNT.unpack_from(reports, len(reports) - _COUNT.size)
        return i < self._through

    def _abandon(self) -> None:
        """The child made no progress for STALL_S: end it; the pipeline reads the rest."""
        warnings.warn(f"the decoding child process made no progress for {STALL_S:g} s: "
                      "reading the remaining files in this process", RuntimeWarning,
                      stacklevel=4)
        try:
            os.kill(self.pid, signal.SIGKILL)  # it cannot be trusted to see the stop flag
        except ProcessLookupError:
            pass
        self._ended = True

    def close(self) -> None:
        """Stop the child (it finishes the image in hand) and wait for it to exit."""
        if self.pid is None:
            return
        self._end_child()
        with self._lock:
            self._ended, self._through = True, 0
            os.close(self._read_fd)
            self.pid = None
            del self._pixels, self._rows  # the shared memory goes with them

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


END_WAIT_S = 5.0  # how long a child gets to see the stop flag before it is killed


def _end_child(pid: int, stop: mmap.mmap) -> None:
    """Ask the child to stop (it finishes the image in hand), wait for it a few seconds,
    then kill it: a stuck one never sees the flag, and close() must not hang on it."""
    stop[0] = 1
    deadline = time.monotonic() + END_WAIT_S
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.01)
    except (ChildProcessError, ProcessLookupError):  # already waited for
        pass


def _decode_ahead(paths: Sequence[str | Path], max_side: int, pixels: mmap.mmap,
                  index: mmap.mmap, stop: mmap.mmap, write_fd: int) -> None:
    """The child: decode small files into ``pixels`` and their rows into ``index``, in
    order; after every few files, report how many it is through on ``write_fd``."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends it at once, quietly
        os.set_blocking(write_fd, False)  # a full pipe drops a report: the next one counts
        parent = os.getppid()
        data = np.frombuffer(pixels, np.uint8)
        rows = np.frombuffer(index, np.int64).reshape(len(paths), _FIELDS)
        used = through = 0
        for i, path in enumerate(paths):
            if stop[0] or os.getppid() != parent:
                break
            try:
                image = read_if_small(path, max_side)
            except Exception:  # noqa: BLE001  the parent reads it again and says what it is
                image = None
            if image is not None:
                size = image.pixels.nbytes
                if used + size > len(data):
                    break
                data[used:used + size] = image.pixels.reshape(-1)
                height, width = image.pixels.shape[:2]
                rows[i] = (used, height, width, *image.size, image.jpeg)  # after the pixels
                used += size
            through = i + 1
            if through % _REPORT_EVERY == 0 and not _report(write_fd, through):
                break
        _report(write_fd, through)
        code = 0
    finally:
        os._exit(code)  # no atexit handlers, no flushing the parent's buffered output


def _report(write_fd: int, through: int) -> bool:
    """Tell the parent how many files the child is through; False once it stopped reading."""
    try:
        os.write(write_fd, _COUNT.pack(through))
    except BlockingIOError:
        pass
    except BrokenPipeError:
        return False
    return True
