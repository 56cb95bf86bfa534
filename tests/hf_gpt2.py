"""A small random GPT-2 in Hugging Face format, built here (nothing downloaded): the oracle model of the
interop tests. 2 layers, 4 heads, 64 wide, 128 positions, a byte-level BPE trained on a fixed text with
<|endoftext|> last and no pad token, as GPT-2's own tokenizer has it."""

from __future__ import annotations

from pathlib import Path

import torch

TEXT = ("The cat sat on the mat. The dog sat on the log. A cat and a dog met on the mat, and then "
        "they went home together; the end. Numbers 0123456789 and symbols {}[]() = + - * / appear too.\n") * 40
VOCAB = 320  # 256 bytes, merges, and <|endoftext|> last: GPT-2's layout (no pad token, eos = vocab - 1)


def bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([TEXT], trainer=trainer)
    tk.add_special_tokens(["<|endoftext|>"])
    assert tk.get_vocab_size() == VOCAB and tk.token_to_id("<|endoftext|>") == VOCAB - 1
    return tk


def hf_model(seed: int = 0):
    """A random GPT2LMHeadModel, 2 layers, 4 heads, 64 wide, 128 positions, every tensor randomised (biases
    and LayerNorms too, so a wrongly mapped one shows)."""
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
                                  bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "ln_" in name else 0.05))
    return model


def save_tiny_gpt2(folder: Path) -> Path:
    """The model saved with safetensors and tokenizer.json, as `huggingface-cli download` leaves a folder."""
    hf_model().save_pretrained(folder, safe_serialization=True)
    bpe_tokenizer().save(str(folder / "tokenizer.json"))
    return folder
