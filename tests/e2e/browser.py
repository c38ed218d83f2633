"""Driving the web console in real Chromium (Debian's ``/usr/bin/chromium``) with Playwright.

Playwright never downloads a browser here: ``launch_chromium()`` points it at the system one.
Screenshots go to ``test-artifacts/`` (gitignored) at the repository root.
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page, Playwright

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "ConsoleError",
    "chat_in_console",
    "launch_chromium",
    "screenshot",
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class ConsoleError(AssertionError):
    """The console showed an error instead of an answer; the message is the text it showed."""


async def launch_chromium(playwright: Playwright) -> Browser:
    """Launch the system Chromium headless. Use inside ``async with async_playwright() as pw``."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `apt-get install -y chromium` (or `make install`)")
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)


async def chat_in_console(
    page: Page,
    console_url: str,
    prompt: str,
    *,
    model: str = "",
    timeout_ms: float = 30_000,
) -> str:
    """Send ``prompt`` from the console's chat page and return the streamed answer's text.

    Opens ``/chat`` unless the page is already on it (so several calls make one transcript),
    waits until the answer is finished (its provider/model line is shown) and returns the text.
    Raises ``ConsoleError`` with the shown message if the console reports an error instead.
    """
    chat_url = console_url.rstrip("/") + "/chat"
    if page.url != chat_url:
        await page.goto(chat_url)
    turns = page.locator("article.msg.assistant")
    before = await turns.count()
    await page.locator("#prompt").fill(prompt)
    await page.locator("#model").fill(model)
    await page.locator("#send").click()
    turn = turns.nth(before)
    # Finished: either the metadata line or an error is shown, and the stream is closed.
    await turn.locator(".meta:not(:empty), .failure:not(:empty)").first.wait_for(timeout=timeout_ms)
    failure = (await turn.locator(".failure").inner_text()).strip()
    if failure:
        raise ConsoleError(failure)
    return await turn.locator(".answer").inner_text()


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``test-artifacts/<name>.png`` and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
