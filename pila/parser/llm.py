"""The LLM-assisted prompt parser (paper App. A.2, Figs. 8–9).

Two templates, each an editable text file (default: ``pila/parser/templates/``):

1. ``refine.txt`` (placeholder ``{prompt}``) rewrites the prompt into a concise
   physics-oriented description; the model must answer ``{"description": "…"}``.
2. ``categories.txt`` (placeholders ``{description}``, ``{categories}``) maps that
   description to the active categories; the model must answer ``{"categories": […]}``.

The model is a local ``transformers`` causal LM loaded from a folder with
``local_files_only=True`` and ``trust_remote_code=False``: nothing is downloaded and no
code from the folder runs. Decoding is greedy.

Answers are read strictly (:func:`parse_json_answer`): an optional Markdown code fence,
then one JSON object with the expected key and type (text after the object is ignored).
Category names are normalised (case, spaces, hyphens) and checked against the eight
categories; unknown names are dropped. A malformed answer is retried once with the note
of ``retry.txt`` appended; if it is malformed again the rule-based parser answers (its
labels; and its description too when step 1 failed).

Answers are cached by a hash of the prompt, the templates and the model: in memory, and
in ``cache_file`` (JSON, rewritten atomically after each new answer, merged with what is
already on disk) when one is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pila.categories import CATEGORIES
from pila.io import read_json, write_json_atomic
from pila.parser.base import ParsedPrompt, PromptParser, ordered_labels
from pila.parser.rules import RuleBasedParser

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = Path(__file__).with_name("templates")
TEMPLATE_FILES = {"refine": "refine.txt", "categories": "categories.txt", "retry": "retry.txt"}
TEMPLATE_PLACEHOLDERS = {
    "refine": ("{prompt}",),
    "categories": ("{description}", "{categories}"),
    "retry": (),
}

CompletionFn = Callable[[str], str]
"""Text in, the model's continuation out."""

_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```", re.DOTALL)


class MalformedAnswer(ValueError):
    """The model's answer is not the JSON object the template asks for."""


def parse_json_answer(text: str, key: str, kind: type) -> Any:
    """Read ``{"<key>": <kind>}`` from a model answer.

    The answer (whitespace stripped, an optional Markdown code fence removed) must start
    with a JSON object; anything after the object is ignored.

    Raises:
        MalformedAnswer: no JSON object at the start, the key is missing, or its value has
            the wrong type (or is an empty string).
    """
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body.startswith("{"):
        raise MalformedAnswer(f"the answer does not start with a JSON object: {text[:80]!r}")
    try:
        obj, _ = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as err:
        raise MalformedAnswer(f"the answer is not valid JSON ({err.msg}): {text[:80]!r}") from err
    if not isinstance(obj, dict) or key not in obj:
        raise MalformedAnswer(f"the answer has no {key!r} field: {text[:80]!r}")
    value = obj[key]
    if not isinstance(value, kind):
        raise MalformedAnswer(f"{key!r} must be a {kind.__name__}, got {type(value).__name__}")
    if kind is str and not value.strip():
        raise MalformedAnswer(f"{key!r} is empty")
    if kind is list and not all(isinstance(v, str) for v in value):
        raise MalformedAnswer(f"{key!r} must be a list of strings")
    return value


def normalise_category(name: str) -> str:
    """``"Rigid Body"``, ``"rigid-body"`` → ``"rigid_body"``."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def validate_categories(names: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """Split names into (known categories in ``CATEGORIES`` order, dropped unknown names)."""
    known, dropped = [], []
    for name in names:
        norm = normalise_category(name)
        (known if norm in CATEGORIES else dropped).append(norm if norm in CATEGORIES else name)
    return ordered_labels(known), dropped


@dataclass(frozen=True)
class Templates:
    """The parser's three template texts and a hash of them (part of the cache key)."""

    refine: str
    categories: str
    retry: str
    folder: str

    @classmethod
    def load(cls, folder: str | os.PathLike | None = None) -> Templates:
        """Read ``refine.txt``, ``categories.txt`` and ``retry.txt`` from ``folder``.

        Raises:
            FileNotFoundError: a template file is missing (the message lists the expected files).
            ValueError: a template lacks a placeholder it needs.
        """
        root = Path(folder) if folder is not None else DEFAULT_TEMPLATES
        texts = {}
        for name, filename in TEMPLATE_FILES.items():
            path = root / filename
            if not path.is_file():
                raise FileNotFoundError(
                    f"prompt-parser template {str(path)!r} is missing; a templates folder holds "
                    f"{', '.join(TEMPLATE_FILES.values())} (copy them from {DEFAULT_TEMPLATES})"
                )
            text = path.read_text(encoding="utf-8")
            missing = [p for p in TEMPLATE_PLACEHOLDERS[name] if p not in text]
            if missing:
                raise ValueError(
                    f"prompt-parser template {str(path)!r} lacks the placeholder(s) "
                    f"{', '.join(missing)}"
                )
            texts[name] = text
        return cls(folder=str(root), **texts)

    @property
    def sha256(self) -> str:
        joined = "\0".join((self.refine, self.categories, self.retry))
        return hashlib.sha256(joined.encode()).hexdigest()

    def refine_prompt(self, prompt: str) -> str:
        return self.refine.replace("{prompt}", prompt)

    def categories_prompt(self, description: str) -> str:
        text = self.categories.replace("{categories}", ", ".join(CATEGORIES))
        return text.replace("{description}", description)


class LLMPromptParser(PromptParser):
    """Two-template LLM parser with strict answers, one retry, rule-based fallback and a cache.

    Args:
        model_path: folder of a local ``transformers`` causal LM (weights, config,
            tokenizer). Required unless ``completion_fn`` is given.
        completion_fn: text → continuation, used instead of a model (tests, or a model
            served by other means).
        templates_dir: folder holding ``refine.txt``, ``categories.txt`` and ``retry.txt``
            (default: the package's ``pila/parser/templates``).
        max_new_tokens: longest answer generated per template.
        retries: how many times a malformed answer is asked again before falling back.
        device: where the model runs (None: CUDA if available, else CPU).
        dtype: model dtype; ``"auto"`` is bf16 on CUDA, float32 elsewhere.
        use_chat_template: wrap the template in the tokenizer's chat template (None: when
            the tokenizer has one).
        cache_file: JSON file of cached answers (None: memory only).
        category_map: category-map file of the rule-based fallback (default: the shipped one).
    """

    def __init__(
        self,
        model_path: str | None = None,
        *,
        completion_fn: CompletionFn | None = None,
        templates_dir: str | None = None,
        max_new_tokens: int = 160,
        retries: int = 1,
        device: str | None = None,
        dtype: str = "auto",
        use_chat_template: bool | None = None,
        cache_file: str | None = None,
        category_map: str | None = None,
    ) -> None:
        if (model_path is None) == (completion_fn is None):
            raise ValueError(
                "LLMPromptParser needs exactly one of model_path (a local model folder) "
                "or completion_fn"
            )
        if model_path is not None and not Path(model_path).expanduser().is_dir():
            raise FileNotFoundError(
                f"prompt-parser model folder {model_path!r} does not exist; pass a local folder "
                "holding a transformers causal LM (config.json, weights, tokenizer files)"
            )
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        if retries < 0:
            raise ValueError(f"retries must be non-negative, got {retries}")
        self.model_path = None if model_path is None else str(Path(model_path).expanduser())
        self.templates = Templates.load(templates_dir)
        self.max_new_tokens = max_new_tokens
        self.retries = retries
        self.device = device
        self.dtype = dtype
        self.use_chat_template = use_chat_template
        self.cache_file = None if cache_file is None else Path(cache_file).expanduser()
        self.fallback = RuleBasedParser(category_map)
        self._complete = completion_fn
        self._model = None
        self._tokenizer = None
        self.cache: dict[str, dict[str, Any]] = self._read_cache()
        self.stats = {
            "completions": 0,
            "retries": 0,
            "fallbacks": 0,
            "dropped_labels": 0,
            "cache_hits": 0,
        }

    # --------------------------------------------------------------------- model
    def load(self, device: str | None = None) -> None:
        """Load the model and tokenizer (done on first use otherwise)."""
        if self.model_path is None or self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from pila.backbone import resolve_dtype

        target = device or self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        log.info("loading the prompt-parser model from %s on %s", self.model_path, target)
        self._tokenizer = AutoTokenizer.from_pretrained(
            self.model_path, local_files_only=True, trust_remote_code=False
        )
        self._model = AutoModelForCausalLM.from_pretrained(
            self.model_path,
            local_files_only=True,
            trust_remote_code=False,
            dtype=resolve_dtype(self.dtype, target),
        ).to(target)
        self._model.eval()
        self._complete = self._generate

    def _generate(self, text: str) -> str:
        import torch

        tok, model = self._tokenizer, self._model
        chat = self.use_chat_template
        if chat is None:
            chat = bool(getattr(tok, "chat_template", None))
        if chat:
            ids = tok.apply_chat_template(
                [{"role": "user", "content": text}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
        else:
            ids = tok(text, return_tensors="pt")
        ids = {k: v.to(model.device) for k, v in ids.items()}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.no_grad():
            out = model.generate(
                **ids, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad
            )
        return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    def _ask(self, text: str, key: str, kind: type) -> Any:
        """One template: ask, parse strictly, retry with the note; raise after the last try."""
        if self._complete is None:
            self.load()
        query = text
        last: MalformedAnswer | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
                query = text + self.templates.retry
            self.stats["completions"] += 1
            answer = self._complete(query)
            try:
                return parse_json_answer(answer, key, kind)
            except MalformedAnswer as err:
                log.debug("prompt parser: malformed answer (attempt %d): %s", attempt + 1, err)
                last = err
        assert last is not None
        raise last

    # --------------------------------------------------------------------- cache
    def _key(self, prompt: str) -> str:
        identity = self.model_path or "completion_fn"
        return hashlib.sha256(f"{self.templates.sha256}\0{identity}\0{prompt}".encode()).hexdigest()

    def _read_cache(self) -> dict[str, dict[str, Any]]:
        if self.cache_file is None or not self.cache_file.is_file():
            return {}
        try:
            data = read_json(self.cache_file)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            log.warning(
                "prompt-parser cache %s is unreadable (%s); starting an empty cache",
                self.cache_file,
                err,
            )
            return {}
        return data if isinstance(data, dict) else {}

    def _store(self, key: str, parsed: ParsedPrompt) -> None:
        self.cache[key] = parsed.to_json()
        if self.cache_file is not None:
            merged = {**self._read_cache(), **self.cache}
            write_json_atomic(self.cache_file, merged)

    # --------------------------------------------------------------------- parse
    def parse(self, prompt: str) -> ParsedPrompt:
        key = self._key(prompt)
        hit = self.cache.get(key)
        if hit is not None and hit.get("prompt") == prompt:
            self.stats["cache_hits"] += 1
            return ParsedPrompt(prompt, hit["refined_prompt"], tuple(hit["labels"]), hit["source"])
        parsed = self._parse_uncached(prompt)
        self._store(key, parsed)
        return parsed

    def _parse_uncached(self, prompt: str) -> ParsedPrompt:
        # 1. rewrite into a physics-oriented description
        try:
            answer = self._ask(self.templates.refine_prompt(prompt), "description", str)
            description = " ".join(answer.split())
        except MalformedAnswer:
            self.stats["fallbacks"] += 1
            log.warning(
                "prompt parser: no usable description for %r; using the rule-based parser",
                prompt[:60],
            )
            rules = self.fallback.parse(prompt)
            return ParsedPrompt(prompt, rules.refined_prompt, rules.labels, "rules-fallback")
        # 2. description → active categories
        try:
            names = self._ask(self.templates.categories_prompt(description), "categories", list)
        except MalformedAnswer:
            self.stats["fallbacks"] += 1
            log.warning(
                "prompt parser: no usable categories for %r; using the rule-based labels",
                prompt[:60],
            )
            return ParsedPrompt(prompt, description, self.fallback.labels(prompt), "llm+rules")
        labels, dropped = validate_categories(names)
        if dropped:
            self.stats["dropped_labels"] += len(dropped)
            log.warning("prompt parser: dropped unknown categories %s for %r", dropped, prompt[:60])
        return ParsedPrompt(prompt, description, labels, "llm")

    def describe(self) -> dict[str, Any]:
        return {
            "type": "llm",
            "model_path": self.model_path,
            "templates": self.templates.folder,
            "templates_sha256": self.templates.sha256,
            "max_new_tokens": self.max_new_tokens,
            "retries": self.retries,
            "fallback": self.fallback.describe(),
        }
