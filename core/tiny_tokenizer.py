"""The tiny test model's tokenizer, torch-free so the API can count tokens with it too."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_raw_tokenizer() -> Tokenizer:
    # Byte-level with no merges: every prompt maps to distinct ids, so different prompts give
    # different (noise) images, and any UTF-8 text is accepted as the real tokenizer accepts it.
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    return tok
