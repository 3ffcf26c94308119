"""HFTokenizer against `transformers`' own tokenizer and chat-template rendering, on a small
BPE tokenizer trained here (no hub access) with ChatML and Llama-3-style templates."""

import pytest

from metareason.tokenize import HFTokenizer, TokenizerError
from reference import CHATML, CORPUS, LLAMA3, torch_and_transformers
from reference import write_tiny_tokenizer as _write

CHAT = [{"role": "user", "content": "What is 12 + 35?"},
        {"role": "assistant", "content": "Let me think. Wait, the sum is 47."},
        {"role": "user", "content": "  Therefore?  "}]


@pytest.mark.parametrize("template,bos", [(CHATML, None), (LLAMA3, "<|begin_of_text|>")])
def test_chat_template_and_ids_match_transformers(tmp_path, template, bos):
    _, transformers = torch_and_transformers()
    path = _write(tmp_path / "tok", template, bos)
    ours = HFTokenizer.from_dir(path)
    ref = transformers.AutoTokenizer.from_pretrained(str(path))
    for gen in (True, False):
        text = ours.apply_chat_template(CHAT, add_generation_prompt=gen)
        assert text == ref.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=gen)
        ref_ids = ref.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=gen)
        if isinstance(ref_ids, dict) or hasattr(ref_ids, "input_ids"):
            ref_ids = ref_ids["input_ids"]
        assert ours.encode_chat(CHAT, add_generation_prompt=gen) == list(ref_ids)
    assert ours.encode(CORPUS[1]) == ref.encode(CORPUS[1], add_special_tokens=False)
    assert ours.decode(ours.encode(CORPUS[2])) == CORPUS[2]


def test_template_kwargs_reach_the_template(tmp_path):
    ours = HFTokenizer.from_dir(_write(tmp_path / "tok", CHATML, None))
    text = ours.apply_chat_template(CHAT[:1], enable_thinking=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert ours.token_id("<think>") == ours.encode("<think>")[0]


def test_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        HFTokenizer.from_dir(tmp_path)
    ours = HFTokenizer.from_dir(_write(tmp_path / "tok", LLAMA3, "<|begin_of_text|>"))
    with pytest.raises(TokenizerError, match="chat template: bad role tool"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(TokenizerError, match="not a token"):
        ours.token_id("<|not_a_token|>")
    with pytest.raises(TokenizerError, match="must be a mapping with a 'role'"):
        ours.apply_chat_template(["hello"])
