"""The lab vocabulary as a `tokenizers` WordLevel tokenizer encodes every lab text (questions,
trajectories of every style and family, the answer template) to exactly `LAB_VOCAB`'s ids, and
refuses a word the lab lacks."""

import numpy as np
import pytest

from metareason.tasks import FAMILIES, STYLES, render
from metareason.tasks.lab import answer_suffix_tokens, prompt_tokens
from metareason.tokenize import LAB_VOCAB
from metareason.tokenize.lab_hf import lab_hf_tokenizer


def test_every_lab_text_encodes_to_the_lab_ids():
    tok = lab_hf_tokenizer()
    rng = np.random.default_rng(0)
    n = 0
    for name, fam in sorted(FAMILIES.items()):
        for style in STYLES:
            for difficulty in (1, 2, 3):
                problem = fam.sample(rng, difficulty=difficulty)
                traj = render(fam, problem, style, rng).text
                ids = prompt_tokens(problem.question) + LAB_VOCAB.encode(traj) + answer_suffix_tokens(problem.answer)
                text = LAB_VOCAB.decode(ids)  # the lab's own text form (numbers written together)
                assert tok.encode(text).ids == ids, (name, style, text)
                assert tok.encode(text).ids == LAB_VOCAB.encode(text)
                n += 1
    assert n == len(FAMILIES) * len(STYLES) * 3
    assert tok.get_vocab_size() == LAB_VOCAB.size and tok.get_vocab() == LAB_VOCAB.ids


def test_words_outside_the_lab_are_refused():
    with pytest.raises(Exception, match="Missing \\[UNK\\] token"):
        lab_hf_tokenizer().encode("compute banana ?")
