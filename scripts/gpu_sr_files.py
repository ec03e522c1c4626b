"""The files that travel to and from a GPU lease for super-resolution training (issue #18).

The device carries at most 64 MiB (the tracked tree included) and brings back files of at
most 16 MiB, so:

- ``pack DATA PACKDIR``: the training images (T91, BSD200) and the report sets
  (matlab_ref/Set5, matlab_ref/Set14, every scale, HR and LR) of ``DATA`` (a folder laid out
  like ../shared/data/sr) as lossless WebP in one tar, ``PACKDIR/sr.tar``, with a manifest of
  each file's name, format and mode, and ``PACKDIR/sr.digest``: the digest of the decoded
  pixels of the originals (:func:`pixel_digest`). Lossless WebP was the smallest of what was
  measured on 21 of the training images (every 9th of T91, every 20th of BSD200; 6.61 MB of
  RGB pixels, 4.62 MB as stored): WebP 2.68 MB (method 4; method 6 no smaller, 10x slower),
  xz of the delta-filtered pixels 3.48, optimised PNG 3.84, xz -9e of the raw pixels 4.32.
  All 405 images: 43.2 MiB, from 86 MB as stored. The report sets travel without repeats: the
  HR images of a picture at x2, x3 and x4 are crops of one canvas, stored once, and each LR
  image is made again from its HR with the project's MATLAB bicubic (checked equal here,
  pixel for pixel, before it is left out).
- ``unpack PACKDIR DEST``: the images again under ``DEST/sr`` with their original names and
  formats (BMP stays BMP, PNG stays PNG, so a run's ``val_images`` name the same files as on
  the CPU), then the pixel digest of the written files, compared with ``sr.digest``: equal
  means every file decodes to the pixels, mode and size of its original. Exit status 1 if not.
- ``digest ROOT``: print :func:`pixel_digest` of ``ROOT``'s sets.
- ``split FILE PIECE_MIB`` / ``join FIRST_PIECE [OUT]``: a file cut into numbered pieces
  (``FILE.00``, ``FILE.01``, ...) with ``FILE.sha256``, and put together again, checked.
- ``slim CHECKPOINT OUT``: a training checkpoint without Adam's moments (a third of its size),
  still resumable: the optimizer starts its averages afresh (an approximate resume).

Images are decoded with the project's reader (:func:`resnets.data.image_file.open_image`, EXIF
orientation applied), so the digest covers the pixels the trainer and ``sr-eval`` see.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnets.data.image_file import open_image
from resnets.files import atomic_write

SETS = ("T91", "BSD200", "matlab_ref/Set5", "matlab_ref/Set14")
MANIFEST = "manifest.json"
WEBP = {"lossless": True, "quality": 100, "method": 4}  # method 6: the same size, 10x slower
KEPT_MODES = ("RGB", "L")  # L travels as RGB (R = G = B) and is converted back


def image_files(root: Path, sets: tuple[str, ...] = SETS) -> list[str]:
    """The image files of ``root``'s sets, as sorted paths relative to ``root``."""
    from_sets = []
    for name in sets:
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"expected the set folder {folder}")
        from_sets += [p.relative_to(root).as_posix() for p in folder.rglob("*")
                      if p.is_file() and p.suffix.lower() in (".png", ".bmp")]
    return sorted(from_sets)


def _file_line(args: tuple[Path, str]) -> str:
    root, rel = args
    img = open_image(root / rel)
    pixels = hashlib.sha256(img.tobytes()).hexdigest()
    return f"{rel}\t{img.mode}\t{img.width}x{img.height}\t{pixels}\n"


def pixel_digest(root: Path, files: list[str], workers: int | None = None) -> str:
    """sha256 over one line per file, in order: name, mode, size and the sha256 of its
    decoded pixels."""
    with ProcessPoolExecutor(workers) as pool:
        lines = pool.map(_file_line, [(root, rel) for rel in files], chunksize=4)
        return hashlib.sha256("".join(lines).encode()).hexdigest()


def _to_webp(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="WEBP", **WEBP)
    return buf.getvalue()


def _entry(img: Image.Image, rel: str, **source) -> dict:
    if img.mode not in KEPT_MODES:
        raise ValueError(f"{rel}: mode {img.mode}, expected one of {KEPT_MODES}")
    fmt = "BMP" if rel.lower().endswith(".bmp") else "PNG"
    return {"mode": img.mode, "format": fmt, "size": [img.width, img.height], **source}


def _lowres(hr: Image.Image, scale: int) -> Image.Image:
    """MATLAB's bicubic LR of ``hr`` as the project computes it."""
    from resnets.models.imresize import downscale

    pixels = torch.from_numpy(np.asarray(hr).copy())
    chw = pixels[None] if pixels.dim() == 2 else pixels.permute(2, 0, 1)
    lr = downscale(chw, scale)
    return Image.fromarray((lr[0] if lr.shape[0] == 1 else lr.permute(1, 2, 0)).numpy())


def _report_entries(data: Path, files: list[str]) -> tuple[dict, dict]:
    """The report sets (``SET/xS/HR``, ``SET/xS/LR``) without their repeats: the HR images of
    one picture at every scale are top-left crops of one canvas (MATLAB's modcrop), stored
    once, and each LR is the bicubic of its HR, made again on unpacking. Each is checked
    here; a file that is not what it should be is stored as itself. Returns the manifest
    entries and the canvases to store."""
    hr = {rel: open_image(data / rel) for rel in files if "/HR/" in rel}
    groups: dict[str, list[str]] = {}
    for rel in hr:
        folder, scale_dir, _, name = rel.rsplit("/", 3)
        scale = scale_dir.removeprefix("x")
        groups.setdefault(f"{folder}/{name.replace(f'_{scale}_', '_')}", []).append(rel)
    entries, canvases = {}, {}
    for key, members in groups.items():
        imgs = [hr[rel] for rel in members]
        canvas = Image.new(imgs[0].mode, (max(i.width for i in imgs), max(i.height for i in imgs)))
        for img in imgs:
            canvas.paste(img, (0, 0))
        if any(img.mode != canvas.mode or img.tobytes() != canvas.crop(
                (0, 0, img.width, img.height)).tobytes() for img in imgs):
            continue  # not crops of one picture: each is stored as itself
        canvases[key + ".webp"] = canvas
        for rel, img in zip(members, imgs, strict=True):
            entries[rel] = _entry(img, rel, webp=key + ".webp")
    for rel in files:
        if "/LR/" not in rel:
            continue
        folder, scale_dir, _, name = rel.rsplit("/", 3)
        partner = f"{folder}/{scale_dir}/HR/{name[::-1].replace('RL', 'RH', 1)[::-1]}"
        img = open_image(data / rel)
        if partner in entries and img.tobytes() == _lowres(hr[partner],
                                                           int(scale_dir[1:])).tobytes():
            entries[rel] = _entry(img, rel, downscale=[partner, int(scale_dir[1:])])
    return entries, canvases


def _encode(args: tuple[Path, str]) -> tuple[str, dict, bytes]:
    root, rel = args
    img = open_image(root / rel)
    return rel, _entry(img, rel, webp=rel + ".webp"), _to_webp(img)


def pack(data: Path, packdir: Path, workers: int | None = None) -> None:
    files = image_files(data)
    manifest, canvases = _report_entries(data, [f for f in files if f.startswith("matlab_ref/")])
    with ProcessPoolExecutor(workers) as pool:
        own = [rel for rel in files if rel not in manifest]
        stored = list(pool.map(_encode, [(data, rel) for rel in own], chunksize=2))
        blobs = dict(zip(canvases, pool.map(_to_webp, canvases.values()), strict=True))
    for rel, entry, blob in stored:
        manifest[rel] = entry
        blobs[entry["webp"]] = blob
    manifest = dict(sorted(manifest.items()))

    def write_tar(tmp: Path) -> None:
        with tarfile.open(tmp, "w") as tar:
            for name, blob in [*blobs.items(), (MANIFEST, json.dumps(manifest, indent=1).encode())]:
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))

    digest = pixel_digest(data, files, workers)
    atomic_write(packdir / "sr.tar", write_tar)
    atomic_write(packdir / "sr.digest", lambda tmp: tmp.write_text(digest + "\n"))
    size = (packdir / "sr.tar").stat().st_size
    raw = sum(3 * w * h for w, h in (e["size"] for e in manifest.values()))
    made = sum("downscale" in e for e in manifest.values())
    crops = sum(e.get("webp") in canvases for e in manifest.values())
    print(f"{len(files)} images ({raw / 1e6:.1f} MB as RGB pixels; {len(canvases)} report "
          f"pictures stored once for their {crops} HR crops, {made} LR images to be made again "
          f"from their HR) -> {packdir / 'sr.tar'}: {size / 2**20:.2f} MiB; pixel digest "
          f"{digest}")


def _save(img: Image.Image, path: Path, fmt: str) -> None:
    options = {"compress_level": 1} if fmt == "PNG" else {}  # read once, on this machine
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **options))


def _decode(args: tuple[Path, str, dict, bytes]) -> None:
    root, rel, entry, blob = args
    w, h = entry["size"]
    img = Image.open(io.BytesIO(blob)).crop((0, 0, w, h)).convert(entry["mode"])
    _save(img, root / rel, entry["format"])


def _make_lowres(args: tuple[Path, str, dict]) -> None:
    root, rel, entry = args
    torch.set_num_threads(1)
    hr_rel, scale = entry["downscale"]
    _save(_lowres(open_image(root / hr_rel), scale), root / rel, entry["format"])


def unpack(packdir: Path, dest: Path, workers: int | None = None) -> bool:
    root = dest / "sr"
    if root.exists():
        shutil.rmtree(root)
    with tarfile.open(packdir / "sr.tar") as tar:
        manifest = json.load(tar.extractfile(MANIFEST))
        blobs = {name: tar.extractfile(name).read()
                 for name in {e["webp"] for e in manifest.values() if "webp" in e}}
    with ProcessPoolExecutor(workers) as pool:  # the HR images first: the LR come from them
        list(pool.map(_decode, [(root, rel, e, blobs[e["webp"]]) for rel, e in manifest.items()
                                if "webp" in e], chunksize=4))
        list(pool.map(_make_lowres, [(root, rel, e) for rel, e in manifest.items()
                                     if "downscale" in e], chunksize=2))
    got = pixel_digest(root, image_files(root), workers)
    want = (packdir / "sr.digest").read_text().strip()
    print(f"{len(manifest)} images unpacked to {root}\npixel digest here: {got}\n"
          f"made from the originals: {want}")
    if got != want:
        print("the unpacked images differ from the originals", file=sys.stderr)
        return False
    return True


def split(path: Path, piece_mib: float) -> list[Path]:
    """``path`` cut into ``path.00``, ``path.01``, ... of at most ``piece_mib`` MiB, with
    ``path.sha256`` (the whole file's); the pieces replace the file."""
    size = int(piece_mib * 2**20)
    data = path.read_bytes()
    pieces = []
    for i, start in enumerate(range(0, max(len(data), 1), size)):
        piece = path.with_name(f"{path.name}.{i:02d}")
        atomic_write(piece, lambda tmp, s=start: tmp.write_bytes(data[s:s + size]))
        pieces.append(piece)
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(path.with_name(path.name + ".sha256"), lambda tmp: tmp.write_text(digest + "\n"))
    path.unlink()
    return pieces


def join(first: Path, out: Path | None = None) -> Path:
    """The file ``first`` (``NAME.00``) was cut from, put together and checked against
    ``NAME.sha256``; written to ``out`` (default: ``NAME`` beside the pieces)."""
    name = first.name.removesuffix(".00")
    if name == first.name:
        raise ValueError(f"expected the first piece, NAME.00, got {first}")
    pieces = sorted(first.parent.glob(f"{name}.[0-9][0-9]"))
    data = b"".join(p.read_bytes() for p in pieces)
    want = (first.parent / f"{name}.sha256").read_text().split()[0]
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ValueError(f"{len(pieces)} pieces of {name} do not make the file they were cut "
                         f"from: sha256 {got}, expected {want}")
    out = out or first.parent / name
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    return out


def slim(checkpoint: Path, out: Path) -> None:
    """``checkpoint`` without the optimizer's per-parameter state (Adam's two moving
    averages): the optimizer restarts them on resume, weights and schedule carry on."""
    from resnets.train.run_folder import load_training_state, save_training_state

    state = load_training_state(checkpoint)
    state["optimizer"]["state"] = {}
    save_training_state(out, state)
    print(f"{checkpoint} ({checkpoint.stat().st_size / 2**20:.1f} MiB) -> {out} "
          f"({out.stat().st_size / 2**20:.1f} MiB), without the optimizer's moments")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data", type=Path)
    p.add_argument("packdir", type=Path)
    p = sub.add_parser("unpack")
    p.add_argument("packdir", type=Path)
    p.add_argument("dest", type=Path)
    p = sub.add_parser("digest")
    p.add_argument("root", type=Path)
    p = sub.add_parser("split")
    p.add_argument("file", type=Path)
    p.add_argument("piece_mib", type=float)
    p = sub.add_parser("join")
    p.add_argument("first", type=Path)
    p.add_argument("out", type=Path, nargs="?")
    p = sub.add_parser("slim")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    for p in sub.choices.values():
        p.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "pack":
        pack(args.data, args.packdir, args.workers)
    elif args.command == "unpack":
        return 0 if unpack(args.packdir, args.dest, args.workers) else 1
    elif args.command == "digest":
        print(pixel_digest(args.root, image_files(args.root), args.workers))
    elif args.command == "split":
        for piece in split(args.file, args.piece_mib):
            print(piece, piece.stat().st_size)
    elif args.command == "join":
        print(join(args.first, args.out))
    else:
        slim(args.checkpoint, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
