"""Counting a prompt's tokens the way the pipeline feeds them to the text encoder (torch-free).

The pipeline wraps the prompt in the chat template and pads or cuts it to 512 tokens; a longer prompt
would be cut silently, so the farm refuses it unless the request asks for truncation.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from tokenizers import Tokenizer

from core.settings import TINY_MODEL as TINY
from core.tiny_tokenizer import build_raw_tokenizer

MAX_TOKENS = 512


def chat_wrapped(prompt: str) -> str:
    # What Qwen3's chat template makes of one user message plus the generation prompt (thinking on).
    return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"


@lru_cache(maxsize=4)
def load_tokenizer(model: str, revision: str | None = None) -> Tokenizer | None:
    """The model's tokenizer if it is on this machine; None means the worker checks instead."""
    if model == TINY:
        return build_raw_tokenizer()
    local = Path(model).expanduser() / "tokenizer" / "tokenizer.json"
    if local.is_file():
        return Tokenizer.from_file(str(local))
    try:
        cached = try_to_load_from_cache(model, "tokenizer/tokenizer.json", revision=revision)
    except Exception:  # a malformed repo id or cache: no early check, the worker's check still holds
        return None
    return Tokenizer.from_file(cached) if isinstance(cached, str) else None


def count_tokens(tokenizer: Tokenizer, prompt: str) -> int:
    return len(tokenizer.encode(chat_wrapped(prompt), add_special_tokens=False).ids)
