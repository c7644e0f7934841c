"""Ovis-U1 VLM conditioning (reads the prompt AND the current image, so it runs every control step):

  canvas [1, 3, H, W] in [-1, 1] -> [0, 1] -> bicubic antialiased resize to `smart_resize` size (multiples of
  patch*stride = 28, pixel count in [min_pixels, max_pixels]) -> CLIP mean/std -> patches in 2x2-merge order
  -> visual tokenizer (AIMv2 tower + head, softmax) -> `vte` (probabilities @ visual embedding table)
  token ids = [<|im_start|>user\\n, IMG_START] + ATOM + [IMG_END, \\n{prompt}<|im_end|>\\n] (the official online
  condition path); ATOM is replaced by the visual embeddings, indicator ids (negative) by the last 5 `vte` rows
  -> Qwen3 (transformers `Qwen3Model`) -> concat(hidden_states[-1], hidden_states[-2]) -> [1, T, 2 * 2048 = 4096].

The resize is a fixed linear map for a fixed canvas: it is applied as two matrices (rows, columns) computed once
from torch's own bicubic-antialias kernel, so the exported graph needs no Resize op."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edge.model_configs import CLIP_MEAN, CLIP_STD, ImagePreprocess  # noqa: F401  (re-exported)

from .vision_tower import VisualTokenizer, VisualTokenizerConfig

IMAGE_ATOM_ID = -300
IMAGE_INDICATOR_IDS = (-301, -302, -303, -304, -305)
IMAGE_PLACEHOLDERS = (IMAGE_INDICATOR_IDS[0], IMAGE_ATOM_ID, IMAGE_INDICATOR_IDS[1])


@lru_cache(maxsize=32)
def resize_matrix(src: int, dst: int, axis: str) -> np.ndarray:
    """[dst, src] float32: torch's bicubic antialiased resize along `axis` ("rows" or "cols") as a matrix (the
    kernel is separable). Built by resizing basis images whose other side (4 px) is kept: torch takes another code
    path when a side is 1 px, so the basis images must not be 1 px wide."""
    eye = torch.eye(src, dtype=torch.float64)
    if axis == "rows":
        basis = eye.reshape(1, src, src, 1).expand(1, src, src, 4).contiguous()  # channels = basis vectors
        out = F.interpolate(basis, size=(dst, 4), mode="bicubic", align_corners=False, antialias=True)[0, :, :, 0]
    else:
        basis = eye.reshape(1, src, 1, src).expand(1, src, 4, src).contiguous()
        out = F.interpolate(basis, size=(4, dst), mode="bicubic", align_corners=False, antialias=True)[0, :, 0, :]
    return out.T.contiguous().float().numpy()  # [dst, src]


class OvisConditioner(nn.Module):
    """Visual tokenizer + `vte` + the LLM. `llm` is a transformers `Qwen3Model` (the `llm.model.*` weights)."""

    def __init__(self, tokenizer_cfg: VisualTokenizerConfig, llm, preprocess: ImagePreprocess = ImagePreprocess()):
        super().__init__()
        self.pre = preprocess
        self.visual_tokenizer = VisualTokenizer(tokenizer_cfg)
        self.vte = nn.Embedding(tokenizer_cfg.vocab_size, llm.config.hidden_size)
        self.llm = llm
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    @property
    def width(self) -> int:
        return 2 * int(self.llm.config.hidden_size)

    def pixels_to_patches(self, pixels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """pixels [1, 3, H, W] in [-1, 1] -> (patches [rows*cols, 3*p*p] in merge-block order, rows, cols)."""
        _, c, height, width = pixels.shape
        rh, rw = self.pre.resized(height, width)
        ah = torch.from_numpy(resize_matrix(height, rh, "rows")).to(pixels.device)  # [rh, H]
        aw = torch.from_numpy(resize_matrix(width, rw, "cols")).to(pixels.device)  # [rw, W]
        img = ((pixels.float() + 1.0) * 0.5).clamp(0, 1)
        img = torch.matmul(torch.matmul(ah, img), aw.T).clamp(0, 1)  # [1, 3, rh, rw]
        img = (img - self.mean) / self.std
        p, hs = self.pre.patch_size, self.pre.hidden_stride
        rows, cols = rh // p, rw // p
        x = img.reshape(c, rows // hs, hs, p, cols // hs, hs, p)  # [C, R/hs, hs, p, C/hs, hs, p]
        x = x.permute(1, 4, 2, 5, 0, 3, 6)  # [R/hs, C/hs, hs, hs, C, p, p]
        return x.reshape(rows * cols, c * p * p), rows, cols

    def visual_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """-> [n_visual, llm_hidden]: probabilities over the visual vocabulary times the embedding table."""
        patches, rows, cols = self.pixels_to_patches(pixels)
        dtype = self.vte.weight.dtype
        probs = self.visual_tokenizer(patches.to(dtype), rows, cols)  # [n, vocab-5]
        return torch.matmul(probs, self.vte.weight[: probs.shape[-1]])  # the 5 indicator columns are zero

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [1, T] int64 with negative indicator ids -> [1, T, llm_hidden]."""
        emb = self.llm.embed_tokens(ids.clamp(min=0))
        vocab = self.vte.weight.shape[0]
        for i, ind in enumerate(IMAGE_INDICATOR_IDS):
            row = self.vte.weight[vocab - len(IMAGE_INDICATOR_IDS) + i].to(emb.dtype)
            emb = torch.where((ids == ind)[..., None], row, emb)
        return emb

    def forward(self, pixels: torch.Tensor, prefix_ids: torch.Tensor, suffix_ids: torch.Tensor) -> torch.Tensor:
        """pixels [1, 3, H, W] in [-1, 1]; prefix_ids / suffix_ids [1, *] int64 (the prompt ids before / after the
        image atom) -> context [1, Tp + n_visual + Ts, 2 * llm_hidden]."""
        visual = self.visual_embeddings(pixels)[None]  # [1, n, d]
        embeds = torch.cat([self.embed_ids(prefix_ids), visual.to(self.llm.embed_tokens.weight.dtype),
                            self.embed_ids(suffix_ids)], dim=1)
        out = self.llm(inputs_embeds=embeds, output_hidden_states=True, use_cache=False)
        return torch.cat([out.hidden_states[-1], out.hidden_states[-2]], dim=-1)


def split_prompt_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cached prompt ids [T] (exactly one image atom) -> (prefix [1, Tp], suffix [1, Ts]) int64."""
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    where = np.flatnonzero(ids == IMAGE_ATOM_ID)
    if where.size != 1:
        raise ValueError(f"prompt ids must hold exactly one image atom ({IMAGE_ATOM_ID}), found {where.size}")
    i = int(where[0])
    return ids[None, :i], ids[None, i + 1 :]


def prompt_ids(tokenizer, instruction: str) -> np.ndarray:
    """The official online condition ids: "<|im_start|>user\\n" + image placeholders + "\\n{prompt}<|im_end|>\\n",
    with the robot prompt template (as the ImageWAM datasets format the task) -> int64 [T]."""
    from ..text_encoder import format_prompt

    head = tokenizer("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
    tail = tokenizer("\n" + format_prompt(instruction) + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
    return np.asarray(list(head) + list(IMAGE_PLACEHOLDERS) + list(tail), dtype=np.int64)
