"""The chat page (`aha chat MODEL --web`) driven in a real browser: Debian's chromium through Playwright.

The page runs as users start it (`python -m aha.cli chat ... --web`, a separate process) on a tiny model whose weights
make greedy decoding say a fixed reasoning and answer (see `streaming_model`), so what the page must show is known
word for word. The browser types a question, watches the reasoning stream into its own box word by word and the
answer into another, asks a second question, and gets a clear message for an empty question and for a
10,000-character paste; the page keeps answering afterwards. When the real model of `aha tiny`'s big brother is
present (artifacts/models/smollm2-135m-instruct), the same page is driven on it too.

Skips with the reason where gradio, playwright or chromium is missing. Set AHA_CHAT_SCREENSHOT=docs/images/chat.png to
refresh the README's screenshot (by default it goes into the test's tmp folder).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

pytest.importorskip("gradio", reason="gradio (the web extra) is not installed: pip install -e '.[web]'")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'"
)
CHROMIUM = os.environ.get("AHA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium installed (apt-get install chromium chromium-driver, or set AHA_CHROMIUM=/path/to/chromium)",
        allow_module_level=True,
    )

TINY_RECIPE = "recipes/tiny/grpo-arith.yaml"
REAL_MODEL = REPO / "artifacts" / "models" / "smollm2-135m-instruct"
# What the streaming model says after the assistant header ("\n"), token by token: words with spaces, so the
# streamer hands them out one at a time.
THOUGHT = [
    "<think>",
    " She",
    " starts",
    " with",
    " apples",
    " and",
    " gets",
    " more",
    " now",
    " the",
    " box",
    " has",
    " them",
]
SCRIPT = [*THOUGHT, "</think>", "<answer>", "7", "</answer>", "<|im_end|>"]
THINKING = "".join(THOUGHT[1:]).strip()
QUESTION = "She has 3 apples and gets 4 more. How many apples now?"
# chromium on a machine without network or display: no sandbox (root in CI), no GPU, no calls home
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Records every value the page writes into a text box, with the box's label: streaming is seen as the sequence of
# values, whatever the frame rate (a poll would miss updates that come within one frame).
RECORD_TEXTBOX_VALUES = """
window.__values = [];
const native = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value');
Object.defineProperty(HTMLTextAreaElement.prototype, 'value', {
  get() { return native.get.call(this); },
  set(v) {
    const label = this.closest('label')?.querySelector('[data-testid="block-info"]')?.textContent.trim();
    window.__values.push([label ?? '', String(v)]);
    native.set.call(this, v);
  },
});
"""
# The page is idle when no output shows gradio's pending (eta bar) or streaming (generating) state.
PAGE_IDLE = "document.querySelectorAll('.eta-bar, .progress-text, .wrap.generating').length === 0"
SERVER_START_S = 90
ANSWER_S = 30


def streaming_model(tiny_model: Path, out: Path) -> Path:
    """The tiny model with weights set so that greedy decoding is SCRIPT whatever the question: attention and MLP
    outputs are zeroed, so the last hidden state is the last token's embedding; the script's tokens get orthogonal
    embeddings and lm_head maps each to its successor. A real model through the real tokenizer, generate() and
    streamer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    chain = []
    for token in ["\n", *SCRIPT]:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{token!r} is not one token of the tiny tokenizer: {ids}"
        chain.append(ids[0])
    assert len(set(chain)) == len(chain), "a token may appear once in the script (it has one successor)"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        for dim, (token, successor) in enumerate(itertools.pairwise(chain)):
            model.model.embed_tokens.weight[token] = torch.nn.functional.one_hot(
                torch.tensor(dim), model.config.hidden_size
            ).float()
            model.lm_head.weight[successor, dim] = 1.0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def chat_page(model: Path, log: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`aha chat MODEL --web ARGS` in its own process; yields its URL and the process once it answers HTTP."""
    import urllib.request

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "aha.cli", "chat", str(model), *args, "--web", "--port", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert server.poll() is None, f"the chat page exited:\n{log.read_text()}"
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"no page after {SERVER_START_S} s:\n{log.read_text()}"
                time.sleep(0.5)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def scripted_page_model(tiny_model, tmp_path_factory) -> Path:
    return streaming_model(tiny_model, tmp_path_factory.mktemp("streaming") / "model")


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1000, "height": 1000})
    page.add_init_script(RECORD_TEXTBOX_VALUES)
    page.goto(url)
    page.get_by_label("question").wait_for()
    page.wait_for_load_state("networkidle")  # the app's scripts are wired up: a click now reaches the server
    return page


def ask(page, question: str, *, enter: bool = False) -> None:
    """Types the question as a user does (replacing what the box held) and sends it with Ask or Enter."""
    page.evaluate("window.__values = []")
    box = page.get_by_label("question")
    box.click()
    box.press("Control+a")
    if len(question) > 100:
        page.keyboard.insert_text(question)  # what a paste does: one input event with the whole text
    elif question:
        box.press_sequentially(question)
    else:
        box.press("Delete")
    if enter:
        box.press("Enter")
    else:
        page.get_by_role("button", name="Ask").click()


def values(page, label: str) -> list[str]:
    return [value for box, value in page.evaluate("window.__values") if box == label]


def wait_for_answer(page) -> None:
    """Until something was written to the answer or thinking box and the page is idle again."""
    page.wait_for_function(
        f"window.__values.some(([box, v]) => (box === 'answer' || box === 'thinking') && v.length > 0) && {PAGE_IDLE}",
        timeout=ANSWER_S * 1000,
    )


def save_screenshot(page, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000, "the screenshot is blank"
    return target


def assert_streamed(page) -> None:
    """The reasoning grew word by word in its own box, then the answer came in the answer box: no tags anywhere."""
    thinking = [v for v in values(page, "thinking") if v]
    answer = [v for v in values(page, "answer") if v]
    assert thinking and thinking[-1] == THINKING, thinking
    assert answer and answer[-1] == "7", answer
    # streamed: several growing values, each a prefix of the next
    assert len(set(thinking)) >= 4, f"the reasoning arrived in {len(set(thinking))} piece(s), not streamed: {thinking}"
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(thinking)), thinking
    # the answer box stayed empty until the reasoning was complete
    shown_thinking = ""
    for box, value in page.evaluate("window.__values"):
        if box == "answer" and value:
            assert shown_thinking == THINKING, f"the answer appeared while the reasoning read {shown_thinking!r}"
            break
        shown_thinking = value if box == "thinking" else shown_thinking
    assert not any("<" in value for value in thinking + answer), "a tag leaked into the page"


def test_chat_page_in_a_browser(scripted_page_model, browser, tmp_path):
    started = time.monotonic()
    with chat_page(scripted_page_model, tmp_path / "server.log", "--recipe", TINY_RECIPE) as (url, server):
        page = open_page(browser, url)
        assert f"recipe: {TINY_RECIPE}" in page.locator("body").inner_text()

        # first turn: the Ask button
        ask(page, QUESTION)
        wait_for_answer(page)
        assert_streamed(page)
        assert page.get_by_label("thinking").input_value() == THINKING
        assert page.get_by_label("answer").input_value() == "7"
        save_screenshot(page, Path(os.environ.get("AHA_CHAT_SCREENSHOT") or tmp_path / "chat.png"))

        # second turn: Enter; both boxes start over and stream again
        ask(page, "And if she has 5 and gets 2?", enter=True)
        wait_for_answer(page)
        assert_streamed(page)
        first_shown = next(value for value in values(page, "thinking") if value)
        assert len(first_shown) < len(THINKING), "the second turn did not start its reasoning afresh"

        # an empty question: a message, nothing generated
        ask(page, "")
        page.get_by_text("Type a question first").wait_for(timeout=ANSWER_S * 1000)
        assert values(page, "thinking") == [] and values(page, "answer") == []

        # a 10,000-character paste: longer than the tiny model's context, so a message that says so and what to do
        ask(page, "1234567890" * 1000)
        message = page.get_by_text("too long")
        message.wait_for(timeout=ANSWER_S * 1000)
        assert "1,024-token context" in message.inner_text() and "Shorten it" in message.inner_text()
        assert len(page.get_by_label("question").input_value()) == 10_000, "the pasted text must stay editable"

        # and the page still answers
        ask(page, QUESTION)
        wait_for_answer(page)
        assert_streamed(page)
        assert server.poll() is None
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log
    assert time.monotonic() - started < 60, "keep the browser test under a minute"


def real_model_recipe() -> str | None:
    """The recipe that trains the real model, for its prompt (None: the page sends questions as typed)."""
    for recipe in sorted((REPO / "recipes").glob("*/*.yaml")):
        config = yaml.safe_load(recipe.read_text()) or {}
        if "smollm2-135m-instruct" in str(config.get("model_name_or_path", "")):
            return str(recipe.relative_to(REPO))
    return None


@pytest.mark.skipif(not (REAL_MODEL / "config.json").is_file(), reason=f"the real model is not built ({REAL_MODEL})")
def test_chat_page_on_the_real_model(browser, tmp_path):
    """SmolLM2-135M-Instruct: what it says is not known in advance, but it streams into the page, the page never shows
    a tag, and a second question is answered too."""
    recipe = real_model_recipe()
    args = ["--max-new-tokens", "32", *(["--recipe", recipe] if recipe else [])]
    with chat_page(REAL_MODEL, tmp_path / "server.log", *args) as (url, server):
        page = open_page(browser, url)
        for question in ("What is 3 + 4?", "Tom has 5 apples and eats 2. How many are left?"):
            ask(page, question)
            wait_for_answer(page)
            shown = [v for box, v in page.evaluate("window.__values") if box in ("thinking", "answer") and v]
            assert len(set(shown)) >= 2, f"nothing streamed: {shown}"
            assert not any(f"<{tag}>" in v for v in shown for tag in ("think", "answer")), shown
        save_screenshot(page, tmp_path / "chat-real-model.png")
        assert server.poll() is None
