"""The page in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

from resnets.export.sr import resolve_sr_backend

from .conftest import EXAMPLES, chromium_path, require


def test_the_page_classifies_shows_the_heat_map_and_upscales(server_factory):
    require("playwright")
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    server = server_factory()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True,
                                    args=["--no-sandbox"])
        page = browser.new_page()
        failed: list[str] = []
        page.on("requestfailed", lambda req: failed.append(req.url))
        page.goto(server.url)
        page.wait_for_function("document.getElementById('models').textContent"
                               ".includes('resnet56')", timeout=30_000)
        backend = resolve_sr_backend("auto")  # the upscaler's, as /v1/models names it
        assert page.text_content("#models").endswith(f"(x2, x3, x4, {backend})")
        page.set_input_files("#file", str(EXAMPLES / "cat_0007.jpg"))
        page.wait_for_selector("#bars .bar", timeout=60_000)
        assert page.locator("#bars .bar").count() == 5
        assert page.locator("#bars .bar .c").first.text_content() == "cat"
        page.wait_for_selector("#cam:not(.hidden)", timeout=60_000)
        assert page.evaluate("document.getElementById('cam').naturalWidth") == 32

        page.select_option("#scale", "3")
        page.click("#upbtn")
        page.wait_for_function("document.getElementById('after').naturalWidth === 96",
                               timeout=60_000)
        link = page.locator("#download")
        assert link.get_attribute("download") == "cat_0007_x3.png"
        assert link.get_attribute("href").startswith("blob:")
        assert page.locator("#status").get_attribute("class") != "error"
        browser.close()
    assert failed == []
