"""Prompt parsers: the rule-based table, the LLM parser's strict answers, retry, fallback, cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pila.categories import CATEGORIES
from pila.parser import (
    DEFAULT_TEMPLATES,
    LLMPromptParser,
    MalformedAnswer,
    ParsedPrompt,
    RuleBasedParser,
    Templates,
    default_parser,
    parse_json_answer,
    parse_with_given,
    validate_categories,
)
from pila.parser.category_map import CategoryMap

PROMPT = "A rubber ball falls onto a wooden floor and bounces twice."


class Scripted:
    """A completion function answering from a script, recording what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, text: str) -> str:
        self.asked.append(text)
        return self.answers.pop(0)


# ------------------------------------------------------------------------ rules
def test_given_parts_win_and_the_parser_answers_the_rest():
    class Counting(RuleBasedParser):
        calls = 0

        def parse(self, prompt: str) -> ParsedPrompt:
            Counting.calls += 1
            return super().parse(prompt)

    parser = Counting()
    assert parse_with_given(parser, PROMPT) == parser.parse(
        PROMPT
    )  # nothing given: the parser's answer
    Counting.calls = 0
    both = parse_with_given(parser, PROMPT, labels=("optical",), refined_prompt="light")
    assert (both.labels, both.refined_prompt, both.source, Counting.calls) == (
        ("optical",),
        "light",
        "given",
        0,
    )
    labels_only = parse_with_given(parser, PROMPT, labels=("fluid",))
    assert (
        labels_only.refined_prompt == PROMPT
        and labels_only.labels == ("fluid",)
        and labels_only.source == "given"
    )
    description_only = parse_with_given(parser, PROMPT, refined_prompt="a ball bounces")
    assert description_only.labels == RuleBasedParser().parse(PROMPT).labels
    with pytest.raises(ValueError, match="unknown categories"):
        parse_with_given(parser, PROMPT, labels=("magic",))
    assert isinstance(default_parser(), RuleBasedParser)


def test_rule_based_parser_is_the_relabeling_table_applied_to_the_prompt():
    table = CategoryMap.load()
    parser = RuleBasedParser()
    for text in (
        PROMPT,
        "Water boils in a pot.",
        "A laser beam passes through a prism.",
        "A quiet field.",
    ):
        parsed = parser.parse(text)
        assert list(parsed.labels) == table.labels_for_text(text)
        assert parsed.refined_prompt == text and parsed.source == "rules"
    assert parser.parse(PROMPT).labels == ("rigid_body", "elastic", "collision")


def test_rule_based_parser_reads_an_edited_table(tmp_path):
    path = tmp_path / "map.json"
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "phenomena": {},
                "keywords": [{"pattern": r"\bzap\w*", "categories": ["optical"]}],
            }
        )
    )
    parser = RuleBasedParser(category_map=str(path))
    assert parser.parse("A wizard zaps a ball.").labels == ("optical",)
    assert parser.parse(PROMPT).labels == ()
    assert parser.describe()["category_map"] == str(path)


# ------------------------------------------------------------------ strict answers
def test_parse_json_answer_is_strict_about_the_start_and_the_types():
    assert (
        parse_json_answer('{"description": "a ball"}\n</s> trailing', "description", str)
        == "a ball"
    )
    assert parse_json_answer('```json\n{"categories": ["fluid"]}\n```', "categories", list) == [
        "fluid"
    ]
    for bad in (
        'Sure! {"description": "x"}',
        '{"description": ""}',
        '{"desc": "x"}',
        '{"description": 3}',
        "{oops",
    ):
        with pytest.raises(MalformedAnswer):
            parse_json_answer(bad, "description", str)
    with pytest.raises(MalformedAnswer):
        parse_json_answer('{"categories": [1, 2]}', "categories", list)


def test_validate_categories_normalises_and_drops_unknown_names():
    known, dropped = validate_categories(
        ["Thermal", "rigid body", "phase-change", "plasma", "fluid", "fluid"]
    )
    assert known == ("rigid_body", "fluid", "phase_change", "thermal")  # CATEGORIES order
    assert dropped == ["plasma"]


# ------------------------------------------------------------------- LLM parser
def test_unknown_labels_from_the_model_are_dropped():
    script = Scripted(
        '{"description": "A ball hits the floor and rebounds."}',
        '{"categories": ["collision", "Rigid Body", "plasma", "gravity"]}',
    )
    parser = LLMPromptParser(completion_fn=script)
    parsed = parser.parse(PROMPT)
    assert parsed.labels == ("rigid_body", "collision") and parsed.source == "llm"
    assert parsed.refined_prompt == "A ball hits the floor and rebounds."
    assert parser.stats["dropped_labels"] == 2 and parser.stats["retries"] == 0
    assert PROMPT in script.asked[0]
    assert "A ball hits the floor and rebounds." in script.asked[1]
    assert all(name in script.asked[1] for name in CATEGORIES)


def test_a_malformed_answer_is_retried_once_with_the_note():
    script = Scripted(
        "I think it is", '{"description": "a ball rebounds"}', '{"categories": ["collision"]}'
    )
    parser = LLMPromptParser(completion_fn=script)
    parsed = parser.parse(PROMPT)
    assert parsed.source == "llm" and parsed.labels == ("collision",)
    assert parser.stats == {**parser.stats, "completions": 3, "retries": 1, "fallbacks": 0}
    assert script.asked[1].startswith(script.asked[0]) and script.asked[1].endswith(
        parser.templates.retry
    )


def test_two_malformed_category_answers_fall_back_to_the_rule_labels():
    script = Scripted(
        '{"description": "a ball rebounds"}', "fluid, thermal", '{"labels": ["fluid"]}'
    )
    parser = LLMPromptParser(completion_fn=script)
    parsed = parser.parse(PROMPT)
    assert parsed.source == "llm+rules" and parsed.refined_prompt == "a ball rebounds"
    assert parsed.labels == RuleBasedParser().parse(PROMPT).labels
    assert parser.stats["fallbacks"] == 1 and script.answers == []


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A random 2-layer GPT-2 with the byte-level tokenizer, saved like any local model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from pila.backbone import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = build_tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=2048,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_tiny_random_lm_goes_through_retry_and_fallback(tiny_lm_dir, monkeypatch):
    import transformers

    calls = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    parser = LLMPromptParser(str(tiny_lm_dir), max_new_tokens=6, device="cpu")
    parsed = parser.parse(PROMPT)
    assert calls and calls[0]["trust_remote_code"] is False and calls[0]["local_files_only"] is True
    assert (
        parser.stats["completions"] == 2
        and parser.stats["retries"] == 1
        and parser.stats["fallbacks"] == 1
    )
    assert parsed.source == "rules-fallback"
    assert parsed.labels == RuleBasedParser().parse(PROMPT).labels


def test_answers_are_cached_by_prompt_in_memory_and_on_disk(tmp_path):
    cache = tmp_path / "cache.json"
    script = Scripted('{"description": "ice turns to water"}', '{"categories": ["phase_change"]}')
    first = LLMPromptParser(completion_fn=script, cache_file=str(cache))
    a = first.parse("Ice melts.")
    assert (
        first.parse("Ice melts.") == a
        and first.stats["completions"] == 2
        and first.stats["cache_hits"] == 1
    )
    assert list(json.loads(cache.read_text()).values())[0]["labels"] == ["phase_change"]
    # a new process with the same cache file asks nothing
    silent = Scripted()
    second = LLMPromptParser(completion_fn=silent, cache_file=str(cache))
    assert second.parse("Ice melts.") == a and silent.asked == []
    # edited templates are another parser: the cache does not answer for them
    edited = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES, edited)
    (edited / "refine.txt").write_text((edited / "refine.txt").read_text() + "\nBe brief.\n")
    script3 = Scripted('{"description": "melting ice"}', '{"categories": ["thermal"]}')
    third = LLMPromptParser(completion_fn=script3, cache_file=str(cache), templates_dir=str(edited))
    assert third.parse("Ice melts.").labels == ("thermal",) and len(script3.asked) == 2
    assert len(json.loads(cache.read_text())) == 2  # merged, not overwritten


def test_templates_are_checked(tmp_path):
    shutil.copytree(DEFAULT_TEMPLATES, tmp_path / "t")
    (tmp_path / "t" / "categories.txt").write_text("no placeholders here")
    with pytest.raises(ValueError, match=r"categories.txt.*\{description\}"):
        Templates.load(tmp_path / "t")
    (tmp_path / "t" / "refine.txt").unlink()
    with pytest.raises(FileNotFoundError, match="refine.txt.*missing"):
        Templates.load(tmp_path / "t")


def test_parser_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="exactly one of model_path"):
        LLMPromptParser()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLMPromptParser(str(tmp_path / "no_model"))
