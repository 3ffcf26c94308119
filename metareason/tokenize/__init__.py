"""Tokenizers: Hugging Face `tokenizer.json` with chat templates (the lab vocabulary joins later)."""

from metareason.tokenize.hf import HFTokenizer, TokenizerError

__all__ = ["HFTokenizer", "TokenizerError"]
