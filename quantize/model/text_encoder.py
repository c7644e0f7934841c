"""Qwen3 text encoder of FLUX.2 klein (transformers): the instruction in the robot prompt template, Qwen3 chat
template without thinking, padded to `max_length`; hidden states of layers 9, 18, 27 concatenated on the
feature axis -> [L, 3*d] (7680 for Qwen3-4B). Only the valid (unpadded) tokens are returned: trimming is exact."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from edge.errors import CheckpointError
from edge.files import read_json_object, require_keys

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = "A video recorded from a robot's point of view executing the following instruction: {task}"
DEFAULT_LAYERS = (9, 18, 27)

# A Qwen3-style chat template for the tiny demo tokenizer (the real release ships Qwen3's own template).
DEMO_CHAT_TEMPLATE = (
    "{%- for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def format_prompt(instruction: str) -> str:
    return PROMPT_TEMPLATE.format(task=instruction.strip())


def uncached_error(instruction: str, missing: list[Path], checkpoint: Path | None, prompt_cache: Path | None,
                   ship: str, what: str = "text encoder") -> CheckpointError:
    """The error for an instruction that is in no prompt cache while the files of the `what` that would compute it
    (the FLUX.2 text encoder, the Ovis-U1 prompt tokenizer) are not here."""
    ckpt = str(checkpoint) if checkpoint is not None else "CHECKPOINT"
    cache = str(prompt_cache) if prompt_cache is not None else f"{ckpt}/prompts.npz"
    quoted = instruction.strip().replace("'", "'\\''")
    return CheckpointError(
        f"instruction {instruction.strip()!r} is not in the prompt cache ({cache}) and the {what} that would compute "
        f"it is not here: {' and '.join(str(m) for m in missing)} not found (needed only for instructions that are "
        "not cached). Fix, either: (1) add it to the cache where the full base release is, `imagewam-edge prompts "
        f"add --checkpoint {ckpt} --prompt-cache {cache} --instruction '{quoted}'` (pass --base DIR if the release is "
        f"elsewhere; every command that loads the checkpoint reads {ckpt}/prompts.npz), and copy the cache here; or "
        f"(2) ship the {what}: {ship}")


class Qwen3TextEncoder:
    def __init__(self, model_dir: str | Path, tokenizer_dir: str | Path, layers=DEFAULT_LAYERS,
                 max_length: int = 512, dtype: torch.dtype | None = None, checkpoint: str | Path | None = None,
                 prompt_cache: str | Path | None = None):
        """Checks the folders that are here now; loads the weights on the first `encode` (a prompt-cache hit never
        loads them). Without `text_encoder/` or `tokenizer/` (`available` False) only `encode` & co. fail, naming
        the instruction, the missing folders and the fixes (`checkpoint`/`prompt_cache` go into that message)."""
        self.model_dir, self.tokenizer_dir = Path(model_dir), Path(tokenizer_dir)
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.prompt_cache = Path(prompt_cache) if prompt_cache is not None else None
        self.missing = [path for path, marker in ((self.model_dir, "config.json"),
                                                  (self.tokenizer_dir, "tokenizer_config.json"))
                        if not (path / marker).exists()]
        self.layers, self.max_length, self.dtype = tuple(int(i) for i in layers), int(max_length), dtype
        self.width = None  # known once text_encoder/config.json is here
        if (self.model_dir / "config.json").exists():
            config = read_json_object(self.model_dir / "config.json", "copy the `text_encoder/` folder of the FLUX.2 "
                                      "klein base release again (diffusers layout)", CheckpointError)
            require_keys(config, ["hidden_size", "num_hidden_layers"], self.model_dir / "config.json",
                         "copy the `text_encoder/` folder of the FLUX.2 klein base release again", CheckpointError)
            n_layers = int(config.get("num_hidden_layers", 0))
            if max(self.layers) > n_layers:
                raise CheckpointError(f"{self.model_dir}: text layers {self.layers} exceed the model's {n_layers} layers")
            self.width = len(self.layers) * int(config["hidden_size"])
        self.model = self.tokenizer = None
        self.loads = 0

    @property
    def available(self) -> bool:
        return not self.missing

    def _require(self, instruction: str | None = None) -> None:
        if not self.missing:
            return
        if instruction is not None:
            raise uncached_error(instruction, self.missing, self.checkpoint, self.prompt_cache, self.ship)
        raise CheckpointError(f"{' and '.join(str(m) for m in self.missing)} not found: this needs the Qwen3 text "
                              f"encoder and its tokenizer; {self.ship}")

    @property
    def ship(self) -> str:
        return (f"copy `text_encoder/` and `tokenizer/` of the FLUX.2 klein base release (diffusers layout) to "
                f"{self.model_dir.parent}/, or pass --base DIR pointing at the release")

    def _load(self) -> None:
        self._require()
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from quantize.hf import quiet

        quiet()
        log.info("loading the Qwen3 text encoder from %s", self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.tokenizer_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=self.dtype or "auto").eval()
        self.loads += 1

    def release(self) -> None:
        """Drop the weights (the tokenizer stays); the next `encode` loads them again."""
        if self.model is not None:
            from quantize.streaming import release_memory

            self.model = None
            release_memory()

    @property
    def identity(self) -> str:
        """Stable id of (weights, tokenizer, layers, length, template): keys the prompt cache."""
        self._require()
        h = hashlib.sha256()
        h.update((self.model_dir / "config.json").read_bytes())
        for f in sorted(self.model_dir.glob("*.safetensors")) + sorted(self.model_dir.glob("*.bin")):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "vocab.json", "merges.txt"):
            f = self.tokenizer_dir / name
            if f.exists():
                h.update(f.read_bytes())
        h.update(json.dumps([self.layers, self.max_length, PROMPT_TEMPLATE]).encode())
        return "qwen3-" + h.hexdigest()[:16]

    def _rendered(self, instruction: str) -> str:
        messages = [{"role": "user", "content": format_prompt(instruction)}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=False)

    @torch.no_grad()
    def encode_padded(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The official path: ([1, max_length, width] hidden, [1, max_length] bool mask)."""
        self._require()  # (bench --compare reference encodes every step: a prompt cache is no fix there)
        if self.model is None:
            self._load()
        batch = self.tokenizer(self._rendered(instruction), return_tensors="pt", padding="max_length",
                               truncation=True, max_length=self.max_length)
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         output_hidden_states=True, use_cache=False)
        hidden = torch.cat([out.hidden_states[k] for k in self.layers], dim=-1)  # [1, L, 3*d], order h9|h18|h27
        return hidden, batch["attention_mask"].to(torch.bool)

    def __call__(self, instruction: str) -> np.ndarray:
        return self.encode(instruction)

    def encode(self, instruction: str) -> np.ndarray:
        """Valid tokens only: [T, width] float32."""
        self._require(instruction)
        hidden, mask = self.encode_padded(instruction)
        return hidden[0][mask[0]].float().numpy()


def write_demo_tokenizer(out_dir: Path):
    """A byte-level BPE tokenizer (400 tokens) with a Qwen3-style chat template at out_dir; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [format_prompt(t) for t in ("pick up the red block and place it on the plate", "open the top drawer",
                                         "move to the blue cube", "push the green block left", "stack the bowls")]
    tok.train_from_iterator(corpus * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   padding_side="right")
    fast.chat_template = DEMO_CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def make_demo_text_encoder(out_dir: Path, hidden: int = 32, layers: int = 4, seed: int = 0) -> None:
    """Writes a tiny Qwen3 (`text_encoder/`) and a byte-level BPE tokenizer with a Qwen3-style chat template
    (`tokenizer/`) under out_dir, in the diffusers release layout."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    fast = write_demo_tokenizer(out_dir / "tokenizer")
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id)
    Qwen3ForCausalLM(cfg).eval().save_pretrained(str(out_dir / "text_encoder"))
