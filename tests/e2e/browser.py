"""Driving the web console in real Chromium (Debian's ``/usr/bin/chromium``) with Playwright.

Playwright never downloads a browser here: ``launch_chromium()`` points it at the system one.
Screenshots go to ``test-artifacts/`` (gitignored) at the repository root.
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser, Page, Playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "ConsoleError",
    "chat_in_console",
    "launch_chromium",
    "screenshot",
    "sign_in",
    "sign_out",
    "sign_up",
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


async def sign_up(
    page: Page, console_url: str, *, organisation: str, email: str, password: str, display_name: str = ""
) -> str:
    """Create an organisation from the console's sign-up page; returns its tenant id (shown on the
    account page the console lands on)."""
    await page.goto(console_url.rstrip("/") + "/signup")
    await page.locator("#organisation").fill(organisation)
    await page.locator("#email").fill(email)
    await page.locator("#display_name").fill(display_name)
    await page.locator("#password").fill(password)
    await page.locator("#confirm").fill(password)
    await page.locator("#sign-up").click()
    await _settle(page, "**/account?notice=welcome")
    return (await page.locator("#profile-tenant").inner_text()).strip()


async def sign_in(page: Page, console_url: str, *, tenant: str, email: str, password: str, landing: str = "**/chat") -> None:
    """Sign in with a password from the console's login page (no second factor)."""
    await page.goto(console_url.rstrip("/") + "/login")
    await page.locator("#tenant").fill(tenant)
    await page.locator("#email").fill(email)
    await page.locator("#password").fill(password)
    await page.locator("#sign-in").click()
    await _settle(page, landing)


async def sign_out(page: Page) -> None:
    await page.locator("#sign-out").click()
    await _settle(page, "**/login?notice=signed_out")


async def _settle(page: Page, url_glob: str) -> None:
    """Wait for ``url_glob``; if an error is shown instead, fail with its text."""
    try:
        await page.wait_for_url(url_glob, timeout=15_000)
    except PlaywrightTimeout:
        shown = await page.locator("[role=alert]:not([hidden])").all_inner_texts()
        raise ConsoleError(f"expected {url_glob}, at {page.url}: {' | '.join(shown) or 'no message'}") from None


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``test-artifacts/<name>.png`` and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
