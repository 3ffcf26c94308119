"""The lab vocabulary as a Hugging Face tokenizer (for exported lab models).

    tok = lab_hf_tokenizer()                    # tokenizers.Tokenizer
    tok.encode("add 12 + 35 ?").ids == LAB_VOCAB.encode("add 12 + 35 ?")

A WordLevel model over `LAB_VOCAB.tokens` (ids equal), with a whitespace split followed by a split
of every digit into its own piece, which is exactly how `LabVocab.split` reads text the lab can
encode. Two differences, both outside the lab's own texts: a word the lab lacks raises in
`tokenizers` (no unknown token) as it raises `LabTokenError` here, but a mixed piece such as "a1"
is split into "a", "1" instead of refused; and `decode` writes digits apart ("1 2" for the lab's
"12"; the ids re-encode to the same ids).
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from metareason.tokenize.lab import BOS, EOS, LAB_VOCAB, PAD, LabVocab

__all__ = ["lab_hf_tokenizer", "lab_tokenizer_config"]


def lab_hf_tokenizer(vocab: LabVocab = LAB_VOCAB) -> Tokenizer:
    """`vocab` as a `tokenizers.Tokenizer` (WordLevel, whitespace then single-digit pieces; pad, bos
    and eos are special tokens)."""
    tok = Tokenizer(models.WordLevel(dict(vocab.ids), unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (PAD, BOS, EOS)])
    return tok


def lab_tokenizer_config() -> dict:
    """The `tokenizer_config.json` that lets `transformers.AutoTokenizer` load `lab_hf_tokenizer`."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
            "model_max_length": 1 << 30, "clean_up_tokenization_spaces": False}
