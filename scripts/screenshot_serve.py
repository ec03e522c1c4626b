"""Take the README's screenshot of the `resnets serve` page (docs/serve/page.png).

Starts `resnets serve` on a free port of 127.0.0.1, opens the page in headless Chromium
(Debian's package; Playwright's own download is not needed), classifies and upscales a
sample picture and saves the screenshot atomically.

    python scripts/screenshot_serve.py [--image examples/images/cat_0007.jpg] [--out PATH]
"""

from __future__ import annotations

import argparse
import io
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image
from playwright.sync_api import sync_playwright

from resnets.files import atomic_output

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(ROOT / "examples/images/cat_0007.jpg"))
    parser.add_argument("--out", default=str(ROOT / "docs/serve/page.png"))
    parser.add_argument("--scale", default="4")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "resnets", "serve", "--port", str(port)])
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url)
            page.set_input_files("#file", args.image)
            page.wait_for_selector("#cam:not(.hidden)", timeout=60_000)
            page.select_option("#scale", args.scale)
            page.click("#upbtn")
            page.wait_for_selector("#download:not(.hidden)", timeout=120_000)
            page.wait_for_timeout(300)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            shot = Image.open(io.BytesIO(page.screenshot(full_page=True, type="png")))
            with atomic_output(args.out) as tmp:  # 256 colours: a small file for the README
                shot.convert("RGB").quantize(256).save(tmp, format="PNG", optimize=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
