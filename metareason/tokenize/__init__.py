"""Tokenizers: the synthetic lab's word-level vocabulary, and Hugging Face `tokenizer.json`
with chat templates."""

from metareason.tokenize.hf import HFTokenizer, TokenizerError
from metareason.tokenize.lab import (ANSWER_CLOSE, ANSWER_TEMPLATE, CONNECTIVE_WORDS, END_THINK, LAB_VOCAB,
                                     REFLECTION_WORDS, THINK, LabTokenError, LabVocab)

__all__ = ["HFTokenizer", "TokenizerError", "LabVocab", "LAB_VOCAB", "LabTokenError", "REFLECTION_WORDS",
           "CONNECTIVE_WORDS", "THINK", "END_THINK", "ANSWER_TEMPLATE", "ANSWER_CLOSE"]
