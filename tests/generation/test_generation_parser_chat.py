"""The LLM prompt parser on an instruct-style model: the tokenizer's chat template wraps
every template, answers are read from the new tokens only, and a random model falls back.

The model is a random 2-layer ``LlamaForCausalLM`` with a byte-level tokenizer that has
ChatML special tokens and a Jinja ``chat_template`` (the layout of Qwen2.5-Instruct),
saved with ``save_pretrained`` and loaded back through the parser (local files only, no
remote code).
"""

from __future__ import annotations

import pytest
import torch

from pila.parser import LLMPromptParser, RuleBasedParser, Templates

PROMPT = "A rubber ball falls onto a wooden floor and bounces twice."

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, as Qwen2.5-Instruct's tokenizer_config.json has it (without the system default)."""


def chatml(user: str) -> str:
    """What :data:`CHAT_TEMPLATE` renders for one user message and a generation prompt."""
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def chat_lm_dir(tmp_path_factory):
    """A random tiny Llama and a chat-template tokenizer, saved like any local instruct model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pila.backbone import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("chat_lm")
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    assert not (
        path / "modeling_llama.py"
    ).exists()  # nothing to trust: the class is transformers' own
    return path


class AnswerSpy:
    """Stands in for ``model.generate``: records the input ids and appends a scripted answer
    (then ``<|im_end|>``) to them, as a model's ``generate`` returns prompt + new tokens."""

    def __init__(self, tokenizer, *answers: str) -> None:
        self.tokenizer = tokenizer
        self.answers = list(answers)
        self.inputs: list[torch.Tensor] = []
        self.kwargs: list[dict] = []

    def __call__(self, input_ids, **kwargs):
        self.inputs.append(input_ids)
        self.kwargs.append(kwargs)
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        answer = self.tokenizer(
            self.answers.pop(0), add_special_tokens=False, return_tensors="pt"
        ).input_ids
        return torch.cat([input_ids, answer, torch.tensor([[end]])], dim=1)

    def text(self, i: int) -> str:
        return self.tokenizer.decode(self.inputs[i][0], skip_special_tokens=False)


def test_the_chat_template_wraps_both_templates_and_the_answers_parse(chat_lm_dir):
    parser = LLMPromptParser(str(chat_lm_dir), max_new_tokens=64, device="cpu")
    parser.load()
    tokenizer = parser._tokenizer
    assert tokenizer.chat_template == CHAT_TEMPLATE  # read back from the saved folder
    spy = AnswerSpy(
        tokenizer,
        '{"description": "A rubber ball falls, hits the floor and rebounds elastically."}',
        '{"categories": ["Rigid Body", "elastic", "collision"]}',
    )
    parser._model.generate = spy
    parsed = parser.parse(PROMPT)

    templates = Templates.load()
    description = "A rubber ball falls, hits the floor and rebounds elastically."
    # each template is the user turn of the chat, followed by the assistant's generation prompt
    assert spy.text(0) == chatml(templates.refine_prompt(PROMPT))
    assert spy.text(1) == chatml(templates.categories_prompt(description))
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert spy.inputs[0][0, 0].item() == start  # the marker is one special token, not its bytes
    assert (spy.inputs[0][0] == start).sum() == 2
    assert spy.kwargs[0]["do_sample"] is False and "attention_mask" in spy.kwargs[0]
    # only the new tokens are read as the answer
    assert parsed.source == "llm"
    assert parsed.refined_prompt == description
    assert parsed.labels == ("rigid_body", "elastic", "collision")
    assert parser.stats == {
        "completions": 2,
        "retries": 0,
        "fallbacks": 0,
        "dropped_labels": 0,
        "cache_hits": 0,
    }


def test_without_the_chat_template_the_template_text_is_the_input(chat_lm_dir):
    parser = LLMPromptParser(
        str(chat_lm_dir), max_new_tokens=64, device="cpu", use_chat_template=False
    )
    parser.load()
    spy = AnswerSpy(
        parser._tokenizer, '{"description": "a ball bounces"}', '{"categories": ["collision"]}'
    )
    parser._model.generate = spy
    parsed = parser.parse(PROMPT)
    assert spy.text(0).startswith(Templates.load().refine_prompt(PROMPT))
    assert "<|im_start|>" not in spy.text(0)
    assert (parsed.source, parsed.labels) == ("llm", ("collision",))


def test_the_random_chat_model_itself_falls_back_to_the_rules(chat_lm_dir, monkeypatch):
    import transformers

    loads = []
    original = transformers.AutoTokenizer.from_pretrained

    def spy(*args, **kwargs):
        loads.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy)
    parser = LLMPromptParser(str(chat_lm_dir), max_new_tokens=6, device="cpu")
    parsed = parser.parse(PROMPT)
    assert loads and loads[0]["trust_remote_code"] is False and loads[0]["local_files_only"] is True
    assert (
        parser.stats["completions"] == 2
        and parser.stats["retries"] == 1
        and parser.stats["fallbacks"] == 1
    )
    assert parsed.source == "rules-fallback"
    assert parsed.labels == RuleBasedParser().parse(PROMPT).labels
