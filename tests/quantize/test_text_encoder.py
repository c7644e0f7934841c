"""The Qwen3 text path: prompt template, chat template without thinking, hidden layers stacked, trimmed."""
import torch

from quantize.model.text_encoder import Qwen3TextEncoder, format_prompt


def test_text_encoder_stacks_the_configured_layers(demo_checkpoint):
    base = demo_checkpoint / "base"
    enc = Qwen3TextEncoder(base / "text_encoder", base / "tokenizer", layers=(1, 2, 3), max_length=128)
    assert enc.model is None  # nothing loaded until the first encode
    emb = enc.encode("open the drawer")
    rendered = enc._rendered("open the drawer")
    assert format_prompt("open the drawer") in rendered
    assert rendered.endswith("<think>\n\n</think>\n\n")  # enable_thinking=False
    ids = enc.tokenizer(rendered, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hs = enc.model(input_ids=ids, output_hidden_states=True).hidden_states
    ref = torch.cat([hs[1], hs[2], hs[3]], dim=-1)[0].numpy()
    assert emb.shape == ref.shape == (ids.shape[1], enc.width)
    assert abs(emb - ref).max() <= 1e-5  # padded to max_length then trimmed == unpadded (causal, right padding)
    hidden, mask = enc.encode_padded("open the drawer")
    assert hidden.shape[1] == 128 and mask.sum().item() == ids.shape[1]


def test_identity_changes_with_layers(demo_checkpoint):
    base = demo_checkpoint / "base"
    a = Qwen3TextEncoder(base / "text_encoder", base / "tokenizer", layers=(1, 2, 3), max_length=128).identity
    b = Qwen3TextEncoder(base / "text_encoder", base / "tokenizer", layers=(1, 2, 4), max_length=128).identity
    assert a != b
