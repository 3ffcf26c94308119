"""HFTokenizer against `transformers`' own tokenizer and chat-template rendering, on a small
BPE tokenizer trained here (no hub access) with ChatML and Llama-3-style templates."""

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers

from metareason.tokenize import HFTokenizer, TokenizerError
from reference import torch_and_transformers

CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and not enable_thinking %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + message['role']) }}{% endif %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>", "<think>", "</think>"]
CORPUS = ["What is 12 + 35? Let me think step by step.", "Wait, the carry is 1, so the sum is 47.",
          "Therefore the answer is \\boxed{47}.", "system user assistant You are helpful."] * 20
CHAT = [{"role": "user", "content": "What is 12 + 35?"},
        {"role": "assistant", "content": "Let me think. Wait, the sum is 47."},
        {"role": "user", "content": "  Therefore?  "}]


def _write(path, template, bos):
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": template,
        "bos_token": bos, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}))
    return path


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
