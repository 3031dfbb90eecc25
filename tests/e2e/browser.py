"""Drive the real Open WebUI the way a person does, with a real browser.

Debian's chromium (``tests/e2e/setup_browser.sh``) driven by the PyPI package ``playwright``;
never ``playwright install``, which downloads a browser build and fails without internet.

Checked against Open WebUI 0.12.4 (``tests.fakes.webui_real.OPEN_WEBUI_VERSION``):

- ``/auth``: inputs ``name=email`` / ``name=password`` (labelled Email / Password), a submit
  button "Sign in"; with signup closed there is no "Sign up" link.
- After sign-in, a "What's New in Open WebUI" dialog (``role=dialog``) covers the page until
  dismissed, at every sign-in of a user who never dismissed it: Escape closes it.
- The model selector is a button named "Selected model: <name>" (or "Select a model" when none
  is chosen); its list is a ``listbox`` "Available models" of options "Select <name> model".
- ``#chat-input`` is a contenteditable div (TipTap); Enter sends. The answer lands in the last
  ``.chat-assistant`` (``#response-content-container``); when it is complete its action
  buttons (Copy, Regenerate, ...) appear under it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1280, "height": 800}
# Generous for 2 busy cores: the UI's first page load compiles a large bundle.
TIMEOUT_MS = 30_000
ANSWER_TIMEOUT_S = 60.0
RELOADS = 3  # of SvelteKit's error page after sign-in (see sign_in)


@contextlib.contextmanager
def launch(
    playwright: Playwright | None = None,
    *,
    executable: str = CHROMIUM,
    extra_args: tuple[str, ...] = (),
) -> Iterator[Browser]:
    """Start Debian's chromium headless; closed (and playwright stopped) on exit."""
    with contextlib.ExitStack() as stack:
        if playwright is None:
            playwright = stack.enter_context(sync_playwright())
        if not Path(executable).exists():
            raise AssertionError(
                f"{executable} is missing: run tests/e2e/setup_browser.sh (apt-get install chromium)"
            )
        browser = playwright.chromium.launch(
            executable_path=executable, args=[*CHROMIUM_ARGS, *extra_args]
        )
        stack.callback(browser.close)
        yield browser


_PAGE_ERRORS: dict[int, list[str]] = {}


def new_page(browser: Browser, *, ignore_https_errors: bool = False) -> Page:
    """A fresh context and page; the page's script errors are kept for assertion messages.
    `ignore_https_errors`: for a test CA the browser's own store does not hold (the test
    verifies the chain itself, against that CA's root)."""
    context = browser.new_context(viewport=VIEWPORT, ignore_https_errors=ignore_https_errors)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = _PAGE_ERRORS.setdefault(id(page), [])
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    return page


def page_errors(page: Page) -> list[str]:
    """Script errors and console errors the page has shown so far (pages from ``new_page``)."""
    return list(_PAGE_ERRORS.get(id(page), []))


def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    """Open the sign-in page, sign in, and wait for the chat page (what's-new dialog closed)."""
    page.goto(base_url.rstrip("/") + "/auth")
    email_box = page.get_by_label("Email").or_(page.locator("input[name=email]")).first
    password_box = page.get_by_label("Password").or_(page.locator("input[name=password]")).first
    expect(email_box, "the sign-in page shows no Email field").to_be_visible()
    email_box.fill(email)
    password_box.fill(password)
    page.get_by_role("button", name=re.compile(r"^\s*sign in\s*$", re.I)).click()

    chat_input = page.locator("#chat-input")
    # SvelteKit's own error page ("500: Internal Error"): the first navigation after sign-in
    # can end there when a script of the app fails to load. Seen with Chromium's
    # net::ERR_NETWORK_CHANGED: it drops requests in flight whenever an interface comes or
    # goes, and the Docker engine adds and removes bridges for other stacks (the suite's other
    # slices) all the time. A person reloads; so do we, up to RELOADS times, and say so.
    error_page = page.get_by_text(re.compile(r"^\s*5\d\d: "))
    reloads = 0
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not chat_input.is_visible():
        if reloads < RELOADS and error_page.count() and error_page.first.is_visible():
            print(
                f"[browser] WARNING: {error_page.first.inner_text().strip()!r} after sign-in at "
                f"{page.url}; reloading ({reloads + 1} of {RELOADS}). Page errors: {page_errors(page)[-5:] or 'none'}",
                flush=True,
            )
            reloads += 1
            page.goto(base_url.rstrip("/") + "/")
            deadline = time.monotonic() + TIMEOUT_MS / 1000
            continue
        if time.monotonic() > deadline:
            toasts = page.locator("[data-sonner-toast], .toast").all_inner_texts()
            raise AssertionError(
                f"sign-in as {email} did not reach the chat page within {TIMEOUT_MS // 1000}s; "
                f"url={page.url}, messages on screen: {toasts or 'none'}, "
                f"page errors: {page_errors(page)[-5:] or 'none'}"
            )
        page.wait_for_timeout(200)
    dismiss_dialogs(page)


def dismiss_dialogs(page: Page, settle_ms: int = 1_500) -> None:
    """Close the "what's new" (changelog) dialog or any other modal that covers the page.

    It opens a moment after the chat page appears, so wait a little for it before deciding
    there is none.
    """
    dialog = page.get_by_role("dialog")
    with contextlib.suppress(Exception):
        dialog.first.wait_for(state="visible", timeout=settle_ms)
    for _ in range(3):
        if not dialog.first.is_visible():
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    expect(dialog.first, "a dialog still covers the page after pressing Escape").to_be_hidden()


def select_or_check_model(page: Page, served_name: str) -> None:
    """Make sure the chat's model is ``served_name``: pick it from the selector if needed."""
    selected = page.get_by_role("button", name=re.compile(r"^Selected model", re.I))
    chooser = selected.or_(
        page.get_by_role("button", name=re.compile(r"^Select a model", re.I))
    ).first
    expect(chooser, "no model selector on the chat page").to_be_visible()
    if served_name in chooser.inner_text():
        return
    chooser.click()
    option = page.get_by_role("option", name=re.compile(rf"\b{re.escape(served_name)}\b"))
    try:
        expect(option.first).to_be_visible(timeout=10_000)
    except AssertionError:
        offered = page.get_by_role("option").all_inner_texts()
        raise AssertionError(
            f"the model selector does not offer {served_name!r}; it offers {offered or 'nothing'}"
        ) from None
    option.first.click()
    expect(selected.first, f"the model selector did not switch to {served_name!r}").to_contain_text(
        served_name
    )


def send_message(page: Page, text: str, timeout_s: float = ANSWER_TIMEOUT_S) -> str:
    """Type ``text`` into the chat input, send it, wait for the whole answer, return its text."""
    answers = page.locator(".chat-assistant")
    before = answers.count()
    chat_input = page.locator("#chat-input")
    expect(chat_input, "the chat input (#chat-input) is not visible").to_be_visible()
    chat_input.click()
    page.keyboard.type(text)
    page.keyboard.press("Enter")

    deadline = time.monotonic() + timeout_s
    while answers.count() <= before:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no assistant message appeared within {timeout_s:.0f}s of sending {text!r}"
            )
        page.wait_for_timeout(200)
    answer = answers.last
    # The message block (id="message-...") that holds the answer also holds its action buttons,
    # which appear when the answer is complete.
    block = page.locator("[id^='message-']").filter(has=answer).last
    done = block.get_by_role("button", name="Regenerate")
    # The action buttons come when the server says "done", but the text is still revealed word
    # by word for a moment after that: also wait until the text stops changing.
    last_text, stable_since = None, time.monotonic()
    while True:
        current = answer.inner_text().strip()
        if current != last_text:
            last_text, stable_since = current, time.monotonic()
        stable_for = time.monotonic() - stable_since
        if current and stable_for > 1.5 and done.count() and done.first.is_visible():
            return current
        if current and stable_for > 10:  # complete, but its action buttons are hidden or renamed
            return current
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the answer to {text!r} did not complete within {timeout_s:.0f}s; it reads: {current!r}"
            )
        page.wait_for_timeout(200)


def screenshot(page: Page, path: str | Path) -> Path:
    """Save a full-page PNG (parent folders created) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
