"""Real tokenizers: a Hugging Face `tokenizer.json` through the `tokenizers` library, with the
model's chat template (from `tokenizer_config.json` or `chat_template.jinja`) rendered by a
sandboxed Jinja environment configured as `transformers` configures its own."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.sandbox
from tokenizers import Tokenizer

__all__ = ["HFTokenizer", "TokenizerError"]


class TokenizerError(ValueError):
    """A tokenizer directory or chat that cannot be used (one line, names the culprit)."""


def _token_str(value) -> str | None:
    if isinstance(value, Mapping):  # AddedToken serialised as a dict
        return value.get("content")
    return value


def _raise(message):
    raise TokenizerError(f"chat template: {message}")


def _compile_template(source: str) -> jinja2.Template:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False, ensure_ascii=False: json.dumps(
        x, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    if not isinstance(source, str):
        raise TokenizerError(f"chat template must be a string, got {type(source).__name__}")
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TokenizerError(f"chat template, line {err.lineno}: {' '.join(str(err.message).split())}") from None


class HFTokenizer:
    """A `tokenizers.Tokenizer` plus the special tokens and chat template of its model.

    >>> tok = HFTokenizer.from_dir("path/to/Qwen2.5-0.5B-Instruct")
    >>> ids = tok.encode_chat([{"role": "user", "content": "1+1?"}])   # list[int]
    """

    def __init__(self, tokenizer: Tokenizer, *, chat_template: str | None = None,
                 special_tokens: Mapping[str, str | None] | None = None):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        self._template = _compile_template(chat_template) if chat_template else None

    @classmethod
    def from_dir(cls, path: str | os.PathLike, template_name: str = "default") -> "HFTokenizer":
        """Loads `tokenizer.json`, `tokenizer_config.json` and, if present, `chat_template.jinja`."""
        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.exists():
            raise TokenizerError(f"{path} has no tokenizer.json (only fast tokenizers are supported)")
        try:
            tokenizer = Tokenizer.from_file(str(tok_file))
        except Exception as err:  # the library's message is one line; keep it
            raise TokenizerError(f"{tok_file}: cannot be read by the tokenizers library ({err})") from None
        cfg = {}
        cfg_file = path / "tokenizer_config.json"
        if cfg_file.exists():
            try:
                cfg = json.loads(cfg_file.read_text())
            except (json.JSONDecodeError, RecursionError, UnicodeDecodeError) as err:
                raise TokenizerError(f"{cfg_file}: invalid JSON ({type(err).__name__}: {err})") from None
            if not isinstance(cfg, Mapping):
                raise TokenizerError(f"{cfg_file}: expected a JSON object, got {type(cfg).__name__}")
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            if not all(isinstance(t, Mapping) and {"name", "template"} <= set(t) for t in template):
                raise TokenizerError(f"{cfg_file}: chat_template list entries need 'name' and 'template'")
            named = {t["name"]: t["template"] for t in template}
            if template_name not in named:
                raise TokenizerError(f"{cfg_file}: no chat template named {template_name!r} (has {sorted(named)})")
            template = named[template_name]
        jinja_file = path / "chat_template.jinja"
        if template is None and jinja_file.exists():
            template = jinja_file.read_text()
        specials = {k: _token_str(cfg.get(k)) for k in
                    ("bos_token", "eos_token", "pad_token", "unk_token")}
        tok = cls(tokenizer, chat_template=template, special_tokens=specials)
        if tok.chat_template:  # a template that cannot render one question fails now, not mid-run
            tok.apply_chat_template([{"role": "user", "content": "What is 1 + 1?"}])
        return tok

    # -- plain text --------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int:
        """The id of a single token (e.g. "<|im_end|>"); raises if it is not one token."""
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise TokenizerError(f"{token!r} is not a token of this vocabulary")
        return tid

    # -- chat --------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = True, **kwargs) -> str:
        """Renders `messages` ([{"role": ..., "content": ...}, ...]) with the model's template.
        Extra keyword arguments (e.g. `enable_thinking=False`, `tools=[...]`) reach the template."""
        if self._template is None:
            raise TokenizerError("this tokenizer has no chat template (tokenizer_config.json has no chat_template)")
        for i, m in enumerate(messages):
            if not isinstance(m, Mapping) or "role" not in m:
                raise TokenizerError(f"chat message {i} must be a mapping with a 'role', got {m!r}")
        try:
            return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         **self.special_tokens, **kwargs)
        except jinja2.TemplateError as err:  # SecurityError, UndefinedError, a runtime TemplateSyntaxError
            raise TokenizerError(f"chat template cannot render: {type(err).__name__}: "
                                 f"{' '.join(str(err).split())}") from None
        except RecursionError:
            raise TokenizerError("chat template cannot render: it recurses too deeply") from None

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                    **kwargs) -> list[int]:
        """Token ids of the rendered chat (special tokens come from the template text itself)."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs))
