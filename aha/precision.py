"""Where a run's weight updates are accumulated, and whether they survive: the rule `aha check` applies, and the
measurement behind it.

A bfloat16 number keeps 8 significant bits: next to a weight of 0.02 the nearest other bf16 value is 1.2e-4 away
(2^-13), next to a norm weight of 1.0 it is 7.8e-3 away. AdamW moves each weight by about the learning rate per step
(its update is normalised to ~1 per element), so at lr 1e-6 the new weight rounds back to the old one and the step is
lost: a full fine-tune whose weights live in bf16 trains (nearly) nothing, while loss and rewards are still logged.

Updates survive when the optimizer adds them to fp32 weights ("master weights"):
- `dtype: float32` with `bf16: true`: weights and optimizer in fp32, matmuls in bf16 under autocast (DDP);
- DeepSpeed with `bf16: true` (zero2, zero3, zero3_offload): its bf16 optimizer keeps an fp32 copy of every weight;
- LoRA (`use_peft: true`): peft creates the adapter weights in fp32 beside a frozen bf16 base;
- an optimizer that carries the rounded-off bits itself (`adamw_anyprecision` with `use_kahan_summation=True`).

`training_precision(recipe)` says which of these a recipe uses; `lost_update_problem(recipe)` is the refusal of
`aha check`; `update_fidelity(...)` measures it: N AdamW steps on the tiny model against an fp32 reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

HALF_DTYPES = ("bfloat16", "float16")
# optimizers that keep the bits a 16-bit weight cannot hold (transformers' names), with the optim_args that turn it on
COMPENSATED_OPTIMIZERS = {"adamw_anyprecision": "use_kahan_summation=True"}
# tolerance of update_fidelity for settings that keep the updates (measured: docs/gpu-smoke.md, tests/test_precision)
MIN_KEPT = 0.9  # share of the fp32 reference update that arrived (projection)
MAX_RELATIVE_ERROR = 0.25  # |update - reference| / |reference|


@dataclass(frozen=True)
class TrainingPrecision:
    """How a recipe trains: the dtype the optimizer updates (`master`), the dtype matmuls run in (`compute`), and
    what provides the master copy (`how`)."""

    master: str  # float32 | bfloat16 | float16
    compute: str  # float32 | bfloat16 | float16
    how: str  # a few words for the plan and the error message

    @property
    def keeps_updates(self) -> bool:
        return self.master == "float32"


def is_deepspeed(accelerate_config: str) -> bool:
    from aha.recipe import accelerate_config_path

    path = accelerate_config_path(accelerate_config)
    if path is None:
        return False
    with open(path) as handle:
        return (yaml.safe_load(handle) or {}).get("distributed_type") == "DEEPSPEED"


def training_precision(recipe: Any) -> TrainingPrecision:
    """The recipe's precision, as the trainer will run it (one owner: check, plan and tests ask here)."""
    training, model = recipe.training, recipe.model
    weights = str(model.dtype or "float32").replace("torch.", "")
    weights = "float32" if weights == "auto" else weights  # auto: the checkpoint's dtype; aha's models are fp32
    compute = "bfloat16" if training.bf16 else "float16" if training.fp16 else "float32"
    if weights not in HALF_DTYPES:
        how = "fp32 weights" + (f", {compute} autocast" if compute != "float32" else "")
        return TrainingPrecision("float32", compute, how)
    if model.use_peft:
        return TrainingPrecision("float32", compute, f"LoRA adapters in fp32 on a frozen {weights} base")
    if is_deepspeed(recipe.launch.accelerate_config) and compute != "float32":
        return TrainingPrecision("float32", compute, "DeepSpeed bf16: fp32 master weights in the optimizer")
    kahan = COMPENSATED_OPTIMIZERS.get(str(training.optim).removeprefix("OptimizerNames.").lower())
    if kahan and kahan.replace(" ", "") in str(training.optim_args or "").replace(" ", ""):
        return TrainingPrecision("float32", compute, f"{training.optim} with Kahan summation")
    return TrainingPrecision(weights, compute, f"{weights} weights updated in place")


def lost_update_problem(recipe: Any) -> str | None:
    """Why the recipe's optimizer steps would round away, with the fixes; None when they survive."""
    precision = training_precision(recipe)
    if precision.keeps_updates:
        return None
    lr = recipe.training.learning_rate
    optim = getattr(recipe.training.optim, "value", recipe.training.optim)  # transformers' OptimizerNames enum
    return (
        f"full fine-tuning with dtype: {precision.master} weights, no DeepSpeed (accelerate_config: "
        f"{recipe.launch.accelerate_config}) and optim: {optim} updates the {precision.master} weights "
        f"in place: an AdamW step of about the learning rate ({lr:g}) is below {precision.master}'s resolution "
        "(1.2e-4 next to a weight of 0.02) and rounds away. Keep fp32 master weights: set `dtype: float32` with "
        "`bf16: true` (bf16 autocast), or accelerate_config: zero2 / zero3 with `bf16: true` (DeepSpeed keeps fp32 "
        "master weights), or `use_peft: true` (fp32 LoRA adapters), or optim: adamw_anyprecision with optim_args: "
        "use_kahan_summation=True."
    )


# --------------------------------------------------------------------------------------------------------------------
# The measurement: the same AdamW steps in a given precision against an fp32 reference.


def _tiny_model(seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from aha.tiny import PRESETS

    preset = PRESETS["demo"]
    config = Qwen2Config(
        vocab_size=preset.vocab_size,
        hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        intermediate_size=preset.intermediate_size,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def _train(state: dict, batches: list, *, weights: str, compute: str, lr: float, device: str) -> dict:
    """AdamW steps on a copy of the model held in `weights` dtype, forward/backward under `compute` autocast."""
    import torch

    model = _tiny_model(0).to(device)
    model.load_state_dict(state)
    model.to(getattr(torch, weights))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    autocast = compute != "float32"
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    for batch in batches:
        with torch.autocast(device_type, dtype=getattr(torch, compute), enabled=autocast):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {name: tensor.detach().float().cpu() for name, tensor in model.state_dict().items()}


def update_fidelity(
    weights: str, compute: str, *, steps: int = 5, lr: float = 1e-6, device: str = "cpu", seed: int = 0
) -> dict[str, float]:
    """How much of an fp32 run's update survives `steps` AdamW steps at `lr` with `weights`-dtype weights and
    `compute` autocast, on the tiny model (about 4M parameters) and fixed random token batches (4 x 32).

    kept: projection of the update on the fp32 reference's, 1.0 = all of it arrived, ~0 = rounded away.
    relative_error: |update - reference| / |reference|. changed: share of weights that moved at all."""
    import torch

    torch.manual_seed(seed)
    start = {k: v.clone() for k, v in _tiny_model(seed).state_dict().items()}
    generator = torch.Generator().manual_seed(seed + 1)
    vocab = _tiny_model(seed).config.vocab_size
    batches = [torch.randint(0, vocab, (4, 32), generator=generator).to(device) for _ in range(steps)]
    reference = _train(start, batches, weights="float32", compute="float32", lr=lr, device=device)
    result = _train(start, batches, weights=weights, compute=compute, lr=lr, device=device)
    dot = ref_sq = err_sq = 0.0
    moved = total = 0
    for name, begin in start.items():
        begin32 = begin.float().to(getattr(torch, weights)).float()  # the start as the run held it
        ref_delta = reference[name] - begin.float()
        delta = result[name] - begin32
        dot += float((delta * ref_delta).sum())
        ref_sq += float((ref_delta * ref_delta).sum())
        err_sq += float(((delta - ref_delta) ** 2).sum())
        moved += int((delta != 0).sum())
        total += delta.numel()
    return {
        "weights": weights,
        "compute": compute,
        "steps": steps,
        "lr": lr,
        "device": device,
        "kept": dot / ref_sq,
        "relative_error": math.sqrt(err_sq / ref_sq),
        "changed": moved / total,
    }


def within_tolerance(fidelity: dict[str, float]) -> bool:
    return fidelity["kept"] >= MIN_KEPT and fidelity["relative_error"] <= MAX_RELATIVE_ERROR
