"""The text encoder as an engine (off the control path, no torch): fills the prompt cache on the device.

`export --text-encoder` writes text_encoder.onnx, tokenizer.json and text_encoder_prompt.json (the exact chat
format, prompt template, padding and the encoder identity that keys the prompt cache)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, MissingDependencyError
from .files import read_json_object, require_keys


class OnnxTextEncoder:
    def __init__(self, engines: str | Path):
        engines = Path(engines)
        meta_path = engines / "text_encoder_prompt.json"
        if not (engines / "text_encoder.onnx").exists() or not meta_path.exists():
            raise ConfigError(f"{engines} has no text encoder engine; export it with `imagewam-edge export "
                              "--text-encoder`, or add prompts on the workstation with `prompts add --checkpoint`")
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError(f"the text encoder engine needs onnxruntime and tokenizers ({exc}): "
                                         "pip install onnxruntime tokenizers") from exc
        fix = "export the text encoder again with `imagewam-edge export --text-encoder`"
        self.meta = read_json_object(meta_path, fix)
        require_keys(self.meta, ["identity", "prompt_template", "task_marker", "chat_format", "content_marker",
                                 "max_length", "pad_token_id"], meta_path, fix)
        self.identity = self.meta["identity"]
        self.tokenizer = Tokenizer.from_file(str(engines / "tokenizer.json"))
        self.tokenizer.no_padding()  # the saved tokenizer may carry the exporter's padding settings: we pad here
        self.tokenizer.no_truncation()
        self.session = ort.InferenceSession(str(engines / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
        self.loads = 1

    def render(self, instruction: str) -> str:
        m = self.meta
        content = m["prompt_template"].replace(m["task_marker"], instruction.strip())
        return m["chat_format"].replace(m["content_marker"], content)

    def tokenize(self, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """-> (input_ids, attention_mask), each [1, max_length] int64, right-padded as the training tokenizer."""
        length = int(self.meta["max_length"])
        ids = self.tokenizer.encode(self.render(instruction)).ids[:length]
        mask = np.zeros((1, length), np.int64)
        mask[0, : len(ids)] = 1
        padded = np.full((1, length), int(self.meta["pad_token_id"]), np.int64)
        padded[0, : len(ids)] = ids
        return padded, mask

    def __call__(self, instruction: str) -> np.ndarray:
        """Valid tokens only: [T, width] float32 (what the prompt cache stores)."""
        ids, mask = self.tokenize(instruction)
        hidden = self.session.run(["hidden"], {"input_ids": ids, "attention_mask": mask})[0]
        return np.ascontiguousarray(hidden[0][mask[0].astype(bool)], dtype=np.float32)
