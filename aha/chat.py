"""`aha chat MODEL`: ask a model questions the way it was trained to answer them, and watch it think.

    aha chat runs/demo                              # the run's recipe: its system prompt and prefill
    aha chat runs/qwen2.5-3b-gsm8k-lora --recipe recipes/qwen2.5-3b-instruct/gsm8k-lora.yaml
    aha chat Qwen/Qwen2.5-1.5B-Instruct --recipe recipes/qwen2.5-1.5b-instruct/gsm8k-grpo.yaml --temperature 0.7
    aha chat runs/demo --web [--host 127.0.0.1] [--port 7860]    # a local web page (needs gradio)

MODEL: a full model folder (a run's output_dir, a checkpoint, an `aha export` folder), a LoRA adapter folder or a hub
id. The recipe (`--recipe`, else the one a run or exported folder used: recipe.resolved.yaml) gives the system prompt,
the user message template and the assistant prefill, applied by aha.data's formatting (the code training and `aha
eval` use), and the tag names of its format reward. Each question is a fresh conversation, as in training. A
template over one column (`{question}`) takes the typed line; one over several columns (Countdown's `{nums}` and
`{target}`) takes a JSON object, e.g. {"nums": [3, 4, 2], "target": 14}.

The answer streams as it is generated; the reasoning block (`<think>`, or the recipe's tag) is shown apart from the
answer block. Greedy by default (`--temperature` > 0 samples). The web page binds to 127.0.0.1 unless told otherwise:
it has no authentication.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import string
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from aha.errors import AhaUserError
from aha.recipe import PromptArguments
from aha.run_folder import RunFolder

DEFAULT_MAX_NEW_TOKENS = 512
DEFAULT_HOST = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
QUIT_WORDS = ("exit", "quit", ":q")
# Sections of an answer as the splitter labels them.
THINK, ANSWER, TEXT = "think", "answer", "text"
LABELS = {THINK: "thinking:", ANSWER: "answer:"}
WEB_EXTRA_MESSAGE = (
    "the web mode needs gradio, which is not installed. Install the web extra: pip install -e '.[web]' (or pip "
    "install gradio); the terminal mode (without --web) needs nothing more."
)


class ChatError(AhaUserError):
    """Bad input to `aha chat`; the message says what to do. Exit 2."""


# --------------------------------------------------------------------------------------------------------------------
# Settings from the recipe


@dataclass
class ChatSettings:
    prompt: PromptArguments | None  # None: no recipe, the typed line is the whole user message
    recipe_path: str | None
    think_tag: str
    answer_tag: str
    max_new_tokens: int
    temperature: float  # 0: greedy


def find_recipe(model: str, recipe: str | None) -> str | None:
    """`--recipe`, else the recipe the run (or exported) folder used (aha.run_folder.RunFolder.recipe_file)."""
    if recipe:
        if not os.path.isfile(recipe):
            raise ChatError(f"recipe {recipe!r} does not exist; pass a path such as recipes/tiny/grpo-arith.yaml.")
        return recipe
    found = RunFolder.of(model).recipe_file()
    return str(found) if found else None


def load_settings(recipe_path: str | None, max_new_tokens: int | None, temperature: float) -> ChatSettings:
    """The prompt section of the recipe (validated by PromptArguments itself) and its format reward's tag names. Only
    these keys are read: a GPU recipe's training section need not validate on the machine one chats on."""
    if recipe_path is None:
        return ChatSettings(None, None, "think", "answer", max_new_tokens or DEFAULT_MAX_NEW_TOKENS, temperature)
    config = yaml.safe_load(Path(recipe_path).read_text())
    if not isinstance(config, dict):
        raise ChatError(f"recipe {recipe_path!r} must be a YAML mapping of key: value.")
    keys = {f.name for f in dataclasses.fields(PromptArguments)}
    try:
        prompt = PromptArguments(**{key: value for key, value in config.items() if key in keys})
    except TypeError as err:  # a required prompt key is missing
        raise ChatError(f"recipe {recipe_path!r} has no complete prompt section: {err}") from err
    except ValueError as err:
        raise ChatError(f"recipe {recipe_path!r}: {err}") from err
    options = config.get("reward_options") or {}
    tags = {**(options.get("tag_count") or {}), **(options.get("think_format") or {})}
    budget = max_new_tokens or config.get("max_completion_length") or DEFAULT_MAX_NEW_TOKENS
    return ChatSettings(
        prompt, recipe_path, tags.get("think_tag", "think"), tags.get("answer_tag", "answer"), budget, temperature
    )


def template_fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def user_row(line: str, prompt: PromptArguments) -> tuple[dict[str, Any], PromptArguments]:
    """The dataset row a typed line stands for, and the prompt settings to format it with. A one-column template takes
    the line; a several-column one takes a JSON object with those columns; anything else is sent as typed."""
    fields = template_fields(prompt.user_template)
    if len(set(fields)) == 1:
        return {fields[0]: line}, prompt
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        row = None
    if isinstance(row, dict) and all(name in row for name in fields):
        return row, prompt
    return {"question": line}, dataclasses.replace(prompt, user_template="{question}")


def prompt_text(line: str, settings: ChatSettings, tokenizer) -> str:
    """The rendered prompt for one question: system prompt, user message and (if any) the assistant prefill, through
    aha.data.format_prompt, the function that formats training and evaluation prompts."""
    from aha.data import format_prompt

    if settings.prompt is None:
        conversation: list[dict[str, str]] | str = [{"role": "user", "content": line}]
    else:
        row, prompt = user_row(line, settings.prompt)
        conversation = format_prompt(row, prompt, tokenizer)
    if isinstance(conversation, str):  # pre-filled: already rendered, ends in the prefill
        return conversation
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------------------------------------------------
# Splitting the stream into reasoning and answer


class SectionSplitter:
    """Labels streamed text as reasoning, answer or other text, by the tags around it; the tags themselves are dropped.
    A tag split across chunks is held back until it is complete."""

    def __init__(self, think_tag: str = "think", answer_tag: str = "answer"):
        self.tags = {
            f"<{think_tag}>": THINK,
            f"</{think_tag}>": TEXT,
            f"<{answer_tag}>": ANSWER,
            f"</{answer_tag}>": TEXT,
        }
        self.section = TEXT
        self.pending = ""

    def _held_back(self, text: str) -> int:
        """Length of the longest end of `text` that could still become a tag."""
        for size in range(min(len(text), max(map(len, self.tags)) - 1), 0, -1):
            if any(tag.startswith(text[-size:]) for tag in self.tags):
                return size
        return 0

    def feed(self, chunk: str) -> list[tuple[str, str]]:
        """(section, text) pieces of `chunk` that are certain; section changes appear as empty pieces."""
        text = self.pending + chunk
        pieces: list[tuple[str, str]] = []
        while True:
            found = [(text.find(tag), tag) for tag in self.tags if tag in text]
            if not found:
                break
            start, tag = min(found)
            if start:
                pieces.append((self.section, text[:start]))
            self.section = self.tags[tag]
            pieces.append((self.section, ""))
            text = text[start + len(tag) :]
        keep = self._held_back(text)
        self.pending = text[len(text) - keep :] if keep else ""
        if text[: len(text) - keep]:
            pieces.append((self.section, text[: len(text) - keep]))
        return pieces

    def flush(self) -> list[tuple[str, str]]:
        pending, self.pending = self.pending, ""
        return [(self.section, pending)] if pending else []


def split_sections(chunks: Iterable[str], think_tag: str = "think", answer_tag: str = "answer") -> dict[str, str]:
    """The whole text of each section of a completion (e.g. for tests and the web page)."""
    splitter = SectionSplitter(think_tag, answer_tag)
    sections = {THINK: "", ANSWER: "", TEXT: ""}
    for chunk in chunks:
        for section, text in splitter.feed(chunk):
            sections[section] += text
    for section, text in splitter.flush():
        sections[section] += text
    return sections


class TerminalRenderer:
    """Writes sections as they stream: a label line when a reasoning or answer block starts, the reasoning dimmed on a
    terminal. Leading whitespace of each block is dropped (the line breaks around the tags)."""

    DIM, BOLD, RESET = "\x1b[2m", "\x1b[1m", "\x1b[0m"

    def __init__(self, out: TextIO, color: bool):
        self.out = out
        self.color = color
        self.section: str | None = None
        self.block_start = True
        self.line_start = True

    def _emit(self, text: str) -> None:
        self.out.write(text)
        self.line_start = text.endswith("\n")

    def write(self, section: str, text: str) -> None:
        if section != self.section:
            self.section, self.block_start = section, True
        if self.block_start:
            text = text.lstrip()
            if not text:
                return
            if not self.line_start:
                self._emit("\n")
            if section in LABELS:
                self._emit(LABELS[section] + "\n")
            self.block_start = False
        style = self.DIM if section == THINK else self.BOLD if section == ANSWER else ""
        self._emit(f"{style}{text}{self.RESET}" if self.color and style else text)
        self.out.flush()

    def close(self) -> None:
        if not self.line_start:
            self._emit("\n")
        self.out.flush()
        self.section = None


# --------------------------------------------------------------------------------------------------------------------
# The model


class ChatModel:
    """A model and tokenizer loaded for generation; `stream(prompt)` yields decoded text as it is generated."""

    def __init__(self, name: str, dtype: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        from aha.evaluation import EvalError
        from aha.evaluation.generation import resolve_model

        transformers_logging.disable_progress_bar()  # "Loading weights" bars would interleave with the chat

        try:
            source = resolve_model(name)
        except EvalError as err:
            raise ChatError(str(err)) from err
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        # on CPU, float32: bfloat16 matmuls are slow there and a demo must not wait on them
        torch_dtype = getattr(torch, dtype) if dtype != "auto" else ("auto" if self.device == "cuda" else torch.float32)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch_dtype)
        if source.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload()  # one matmul per layer
        self.model = model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(source.tokenizer)
        self.name, self.kind = name, source.kind

    def stream(self, prompt: str, max_new_tokens: int, temperature: float) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        kwargs = {**inputs, **sampling, "max_new_tokens": max_new_tokens, "streamer": streamer, "pad_token_id": pad}
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                self.model.generate(**kwargs)
            except BaseException as err:  # re-raised in the caller's thread; the streamer must still end
                errors.append(err)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        yield from streamer
        worker.join()
        if errors:
            raise errors[0]


class ChatSession:
    """One model plus the recipe's settings: a question in, (section, text) pieces out as they stream."""

    def __init__(self, model: ChatModel, settings: ChatSettings):
        self.model, self.settings = model, settings

    def context_length(self) -> int | None:
        """Tokens the model reads at most (config.max_position_embeddings), None when its config does not say."""
        return getattr(self.model.model.config, "max_position_embeddings", None)

    def checked_prompt(self, line: str) -> str:
        """The rendered prompt, or ChatError when it leaves no room for the answer in the model's context (a long
        paste would otherwise fail inside generate() or read positions the model never learned)."""
        prompt = prompt_text(line, self.settings, self.model.tokenizer)
        context = self.context_length()
        if context is not None:
            tokens = len(self.model.tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"])
            room = context - self.settings.max_new_tokens
            if tokens > room:
                raise ChatError(
                    f"the question is too long: with the prompt it is {tokens:,} tokens, and this model reads at most "
                    f"{max(room, 0):,} (its {context:,}-token context less the {self.settings.max_new_tokens} kept "
                    "for the answer). Shorten it."
                )
        return prompt

    def ask(self, line: str) -> Iterator[tuple[str, str]]:
        """Raises ChatError (before generating) for a question that does not fit the model's context."""
        settings = self.settings
        prompt = self.checked_prompt(line)
        splitter = SectionSplitter(settings.think_tag, settings.answer_tag)
        prefill = settings.prompt.assistant_prefill if settings.prompt else None
        if prefill:  # the model's turn starts with it (e.g. "...<think>"): show it, and enter the block it opens
            yield from splitter.feed(prefill)
        for chunk in self.model.stream(prompt, settings.max_new_tokens, settings.temperature):
            yield from splitter.feed(chunk)
        yield from splitter.flush()

    def describe(self, terminal: bool = True) -> str:
        settings = self.settings
        lines = [f"aha chat: {self.model.name} ({self.model.kind}, {self.model.device})"]
        if settings.prompt is None:
            lines.append("  no recipe: questions go to the model as typed (pass --recipe for its system prompt)")
        else:
            lines.append(f"  recipe: {settings.recipe_path}")
            lines.append(f"  system prompt: {json.dumps(settings.prompt.system_prompt)}")
            if settings.prompt.assistant_prefill:
                lines.append(f"  prefill: {json.dumps(settings.prompt.assistant_prefill)}")
        mode = "greedy" if settings.temperature <= 0 else f"temperature {settings.temperature}"
        ending = "; an empty line, 'quit' or Ctrl-D ends" if terminal else ""
        lines.append(f"  {mode}, up to {settings.max_new_tokens} new tokens{ending}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Front ends


def terminal(session: ChatSession, stdin: TextIO, stdout: TextIO) -> int:
    interactive = stdin.isatty()
    print(session.describe(), file=stdout, flush=True)
    while True:
        if interactive:
            stdout.write("\n> ")
            stdout.flush()
        line = stdin.readline()
        if not line or line.strip() in ("", *QUIT_WORDS):
            return 0
        question = line.strip()
        if not interactive:
            stdout.write(f"\n> {question}\n")
        renderer = TerminalRenderer(stdout, color=stdout.isatty())
        try:
            for section, text in session.ask(question):
                renderer.write(section, text)
        except ChatError as err:  # this question only; the session goes on
            stdout.write(f"aha chat: {err}\n")
        renderer.close()


def web_app(session: ChatSession):
    """The gradio page: a question box, the reasoning and the answer streaming into separate boxes. API name `ask`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo
    try:
        import gradio as gr
    except ImportError as err:
        raise ChatError(WEB_EXTRA_MESSAGE) from err

    def ask(question: str) -> Iterator[tuple[str, str]]:
        """(thinking, answer) as they grow. The answer box shows the answer block once one starts, else the text
        outside the tags (a model that does not use them still answers). Bad input: a message, nothing generated."""
        if not question.strip():
            raise gr.Error("Type a question first: the question box is empty.", print_exception=False)
        sections = {THINK: "", ANSWER: "", TEXT: ""}
        answer_started = False
        try:
            for section, text in session.ask(question.strip()):
                sections[section] += text
                answer_started = answer_started or section == ANSWER
                yield sections[THINK].strip(), sections[ANSWER if answer_started else TEXT].strip()
        except ChatError as err:
            raise gr.Error(str(err)[0].upper() + str(err)[1:], print_exception=False) from err

    with gr.Blocks(title="aha chat") as app:
        gr.Markdown(f"### aha chat\n```\n{session.describe(terminal=False)}\n```")
        # one line to start (it grows): Enter submits only a one-line box; with lines > 1 it adds a newline
        question = gr.Textbox(label="question", lines=1, max_lines=8, placeholder="Type a question, then Enter or Ask")
        button = gr.Button("Ask", variant="primary")
        thinking = gr.Textbox(label="thinking", lines=10)
        answer = gr.Textbox(label="answer", lines=2)
        button.click(ask, inputs=question, outputs=[thinking, answer], api_name="ask")
        question.submit(ask, inputs=question, outputs=[thinking, answer], api_name=False)
    return app


def web(session: ChatSession, host: str, port: int | None) -> int:
    app = web_app(session)
    if host not in LOOPBACK_HOSTS:
        print(f"aha chat: warning: serving on {host}: anyone who reaches this machine can use the page.", flush=True)
    app.queue().launch(server_name=host, server_port=port, share=False, inbrowser=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aha chat", description="Chat with a model as its recipe prompts it.")
    parser.add_argument("model", help="model folder, LoRA adapter folder or hub id")
    parser.add_argument("--recipe", help="recipe for the prompt (default: the one the model folder names)")
    parser.add_argument("--max-new-tokens", type=int, help="default: the recipe's max_completion_length, else 512")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy; > 0 samples")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    parser.add_argument("--web", action="store_true", help="serve a local web page instead (needs gradio)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="web: address to bind (default %(default)s: this machine)")
    parser.add_argument("--port", type=int, help="web: port (default: gradio's, 7860 or the next free one)")
    return parser


def main(
    argv: list[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    load_model: Callable[[str, str], ChatModel] = ChatModel,
) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.web:  # before the model loads: a missing extra should not cost a minute of loading first
        import importlib.util

        if importlib.util.find_spec("gradio") is None:
            raise ChatError(WEB_EXTRA_MESSAGE)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ChatError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    settings = load_settings(find_recipe(args.model, args.recipe), args.max_new_tokens, args.temperature)
    session = ChatSession(load_model(args.model, args.dtype), settings)
    if args.web:
        return web(session, args.host, args.port)
    return terminal(session, stdin or sys.stdin, stdout or sys.stdout)


if __name__ == "__main__":
    from aha.cli import main as aha_main  # bad input -> message and exit 2, as for `aha chat`

    sys.exit(aha_main(["chat", *sys.argv[1:]]))
