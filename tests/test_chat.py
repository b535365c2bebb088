"""`aha chat`: prompts formatted as in training, answers streamed with the reasoning shown apart from the answer."""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from aha import chat, cli
from tests.helpers import REPO, write_recipe

TINY_RECIPE = "recipes/tiny/grpo-arith.yaml"
COUNTDOWN_RECIPE = "recipes/qwen2.5-3b-instruct/countdown-grpo.yaml"
# What the scripted model says after the assistant header ("\n"), token by token.
SCRIPT = ["<think>", "3", "+", "4", "</think>", "<answer>", "7", "</answer>", "<|im_end|>"]


@pytest.fixture(scope="module")
def scripted_model(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with weights set so that greedy decoding is SCRIPT whatever the question: attention and MLP
    outputs are zeroed, so the last hidden state is the last token's embedding; chain tokens get orthogonal embeddings
    and lm_head maps each to its successor. A real model through the real tokenizer, generate() and streamer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    chain = []
    for token in ["\n", *SCRIPT]:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1, f"{token!r} is not one token of the tiny tokenizer: {ids}"
        chain.append(ids[0])
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
    folder = tmp_path_factory.mktemp("scripted") / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run_session(model: Path, lines: list[str], *extra: str) -> str:
    stdout = io.StringIO()
    code = chat.main([str(model), *extra], stdin=io.StringIO("".join(f"{line}\n" for line in lines)), stdout=stdout)
    assert code == 0
    return stdout.getvalue()


def test_terminal_session_streams_thinking_apart_from_the_answer(scripted_model):
    output = run_session(scripted_model, ["What is 3 + 4?", "quit", "never asked"], "--recipe", TINY_RECIPE)
    banner, _, exchange = output.partition("> What is 3 + 4?\n")
    assert "system prompt: " in banner and TINY_RECIPE in banner
    assert exchange == "thinking:\n3+4\nanswer:\n7\n"  # tags removed, one labelled block each
    assert "never asked" not in output  # "quit" ended the session


def test_each_line_is_a_fresh_question(scripted_model):
    output = run_session(scripted_model, ["first?", "second?"], "--recipe", TINY_RECIPE)
    assert output.count("answer:\n7\n") == 2


def test_prefill_recipe_starts_the_turn_inside_the_think_block(scripted_model, tmp_path):
    recipe = write_recipe(
        tmp_path,
        "tiny/grpo-arith.yaml",
        assistant_prefill="<think>",
        reward_options={"think_format": {"prefill": "<think>"}},
    )
    settings = chat.load_settings(str(recipe), None, 0.0)
    from transformers import AutoTokenizer

    prompt = chat.prompt_text("What is 3 + 4?", settings, AutoTokenizer.from_pretrained(scripted_model))
    assert prompt.endswith("<|im_start|>assistant\n<think>")
    # the scripted model continues after <think> with "3+4</think><answer>7</answer>"
    output = run_session(scripted_model, ["What is 3 + 4?"], "--recipe", str(recipe))
    assert output.endswith("thinking:\n3+4\nanswer:\n7\n")


def test_prompt_carries_the_recipe_system_prompt_and_template(scripted_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(scripted_model)
    settings = chat.load_settings(TINY_RECIPE, None, 0.0)
    prompt = chat.prompt_text("How many?", settings, tokenizer)
    assert prompt.startswith("<|im_start|>system\nSolve the problem. Think inside <think> </think>")
    assert prompt.endswith("<|im_start|>user\nHow many?<|im_end|>\n<|im_start|>assistant\n")
    recipe = yaml.safe_load(Path(TINY_RECIPE).read_text())
    assert settings.max_new_tokens == recipe["max_completion_length"]


# (behaviour, typed line, what the user message must contain)
COUNTDOWN_LINES = [
    ("a JSON row fills every column", '{"nums": [3, 4, 2], "target": 14}', "Using the numbers [3, 4, 2], create an"),
    ("other text goes as typed", "make 14 from 3, 4 and 2", "<|im_start|>user\nmake 14 from 3, 4 and 2<|im_end|>"),
]


@pytest.mark.parametrize(("line", "expected"), [c[1:] for c in COUNTDOWN_LINES], ids=[c[0] for c in COUNTDOWN_LINES])
def test_several_column_template(scripted_model, line, expected):
    from transformers import AutoTokenizer

    settings = chat.load_settings(COUNTDOWN_RECIPE, None, 0.0)
    prompt = chat.prompt_text(line, settings, AutoTokenizer.from_pretrained(scripted_model))
    assert expected in prompt
    assert prompt.endswith("<|im_start|>assistant\nLet me solve this step by step.\n<think>")
    assert settings.max_new_tokens == 1024


SPLIT_TEXT = "Sure. <think>\n2 < 3, so\n</think>\n<answer> 7 </answer> done"


@pytest.mark.parametrize("cut", range(len(SPLIT_TEXT) + 1))
def test_splitter_gives_the_same_sections_wherever_the_stream_is_cut(cut):
    sections = chat.split_sections([SPLIT_TEXT[:cut], SPLIT_TEXT[cut:]])
    assert sections == {"think": "\n2 < 3, so\n", "answer": " 7 ", "text": "Sure. \n done"}


def test_splitter_uses_the_recipe_tag_names():
    chunks = list("<reasoning>a</reasoning><answer>1</answer>")  # one character per chunk
    assert chat.split_sections(chunks, think_tag="reasoning") == {"think": "a", "answer": "1", "text": ""}


def test_recipe_is_found_from_an_exported_folder_or_a_run_summary(tmp_path):
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "recipe.yaml").write_text("x: 1\n")
    assert chat.find_recipe(str(exported), None) == str(exported / "recipe.yaml")
    checkpoint = tmp_path / "run" / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (tmp_path / "run" / "summary.json").write_text(json.dumps({"recipe": TINY_RECIPE}))
    assert chat.find_recipe(str(checkpoint), None) == TINY_RECIPE
    assert chat.find_recipe(str(tmp_path), None) is None
    # a run that wrote its resolved recipe: that one, the recipe as the run used it
    resolved = tmp_path / "run" / "recipe.resolved.yaml"
    resolved.write_text(Path(TINY_RECIPE).read_text())
    assert chat.find_recipe(str(checkpoint), None) == str(resolved)
    assert chat.load_settings(str(resolved), None, 0.0).prompt == chat.load_settings(TINY_RECIPE, None, 0.0).prompt


def test_web_mode_without_gradio_names_the_extra_before_loading(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real_find_spec(name)
    )

    def never_load(*args):
        raise AssertionError("the model loaded before the missing extra was reported")

    with pytest.raises(chat.ChatError) as raised:
        chat.main(["some/model", "--web"], load_model=never_load)
    assert cli.main(["chat", "some/model", "--web"]) == 2  # `aha chat` turns it into a message and exit 2
    err = capsys.readouterr().err
    assert str(raised.value) in err
    assert "gradio" in err and "'.[web]'" in err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="gradio (the web extra) is not installed")
def test_web_page_answers_a_question_over_http(scripted_model, tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "aha.cli", "chat", str(scripted_model), "--recipe", TINY_RECIPE, "--web"]
    with open(log, "w") as out:
        server = subprocess.Popen([*command, "--port", str(port)], cwd=REPO, env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log.read_text()
            try:
                urllib.request.urlopen(base, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        request = urllib.request.Request(
            f"{base}/gradio_api/call/ask",
            data=json.dumps({"data": ["What is 3 + 4?"]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            event_id = json.load(response)["event_id"]
        with urllib.request.urlopen(f"{base}/gradio_api/call/ask/{event_id}", timeout=30) as response:
            events = response.read().decode()
        # server-sent events; the last data line holds the final outputs [thinking, answer]
        final = [line for line in events.splitlines() if line.startswith("data:")][-1]
        assert json.loads(final.removeprefix("data:")) == ["3+4", "7"], events
        # bound to this machine only
        assert "127.0.0.1" in log.read_text()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
