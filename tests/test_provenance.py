"""Every default says where it comes from: the paper (with the place) or our choice (with a reason).

Convention, in docstrings (the ``Args:`` entry of the parameter) and in the paper YAMLs
(a trailing comment on every numeric value):

* ``[paper, <where>]`` / ``# paper, <where>``: the paper states it; ``<where>`` starts with
  ``Sec.``, ``App.``, ``Table``, ``Eq.`` or ``Fig.``;
* ``[ours: <why>]`` / ``# ours: <why>``: the paper does not (lost in extraction or never given).

The values the paper's text states (hidden 128, bank 32, top-4, λ_phys 0.30, warm-ups
2000/1000/300, encoder freeze 1000 steps, 3 × 3000 stage-A steps, 3 stage-C epochs,
81 frames, mask weights 0.55/0.25/0.20 and floor 0.08, 8 GPUs, bf16, ZeRO-2 with offload)
must be marked paper; the ones it lost must be marked ours.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import yaml

from pila.adapter import AdapterConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "lightning_configs"
PAPER_YAMLS = sorted(
    [
        *CONFIGS.glob("stage*.yaml"),
        *CONFIGS.glob("predict*.yaml"),
        *(CONFIGS / "ablations").glob("*.yaml"),
        *(CONFIGS / "readings").glob("*.yaml"),
    ]
)

WHERE = r"(?:Sec\.|App\.|Table|Eq\.|Fig\.)"
DOC_MARK = re.compile(rf"\[(?:paper, {WHERE}[^\]]*|ours: [^\]]+)\]")
YAML_MARK = re.compile(rf"#\s*(?:paper, {WHERE}|ours: \S)")


# ------------------------------------------------------------------------ docstrings
def args_section(doc: str) -> dict[str, str]:
    """The entries of a Google-style ``Args:`` section: name → its text (continuations joined)."""
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return {}
    base = len(lines[start]) - len(lines[start].lstrip())
    entries: dict[str, str] = {}
    name = None
    for line in lines[start + 1 :]:
        indent = len(line) - len(line.lstrip())
        if line.strip() and indent <= base:
            break
        match = re.match(r"\s*\**(\w+)(?: \([^)]*\))?: (.*)", line)
        if match and indent == base + 4:
            name = match.group(1)
            entries[name] = match.group(2)
        elif name is not None and line.strip():
            entries[name] += " " + line.strip()
    return entries


def mark_kind(text: str) -> str | None:
    """``"paper"`` or ``"ours"`` for the first mark in ``text``; None without one."""
    match = DOC_MARK.search(text)
    return None if match is None else match.group(0)[1:].split(",")[0].split(":")[0]


def dataclass_marks(cls: type, prefix: str = "") -> dict[str, str | None]:
    """Every field of a (nested) config dataclass → its mark kind."""
    entries = args_section(cls.__doc__ or "")
    marks: dict[str, str | None] = {}
    for field in dataclasses.fields(cls):
        marks[prefix + field.name] = mark_kind(entries.get(field.name, ""))
        default = (
            field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
        )
        if dataclasses.is_dataclass(default):
            marks.update(dataclass_marks(type(default), f"{prefix}{field.name}."))
    return marks


def test_the_args_parser_reads_entries_and_continuations():
    doc = """Summary.

    Args:
        alpha: first line
            continued. [ours: a reason]
        beta (int): plain.

    Returns:
        nothing: not an arg.
    """
    assert args_section(doc) == {
        "alpha": "first line continued. [ours: a reason]",
        "beta": "plain.",
    }
    assert (
        mark_kind("x [paper, App. B.3: 0.08]") == "paper" and mark_kind("x [ours: why]") == "ours"
    )
    assert mark_kind("x [paper: no place]") is None and mark_kind("x (paper: 4)") is None


def test_an_unmarked_field_of_a_nested_config_is_found():
    @dataclasses.dataclass
    class Inner:
        """Inner.

        Args:
            width: no mark here.
        """

        width: int = 3

    @dataclasses.dataclass
    class Outer:
        """Outer.

        Args:
            inner: nested. [ours: a test]
            size: marked. [paper, Table 1: 2]
        """

        inner: Inner = dataclasses.field(default_factory=Inner)
        size: int = 2

    assert dataclass_marks(Outer) == {"inner": "ours", "inner.width": None, "size": "paper"}


def test_every_adapter_config_field_has_a_provenance_mark():
    marks = dataclass_marks(AdapterConfig)
    assert {"afe.rho_min", "residual_scales.c", "hidden"} <= set(marks)  # nested configs are walked
    missing = sorted(name for name, kind in marks.items() if kind is None)
    assert not missing, f"AdapterConfig fields without [paper, <where>] or [ours: <why>]: {missing}"


PAPER_FIELDS = (
    "hidden",
    "top_k",
    "mask_weights",
    "mask_floor",
    "bank_slots",
    "categories",
    "residual_families",
)
OUR_FIELDS = (
    "beta",
    "tau",
    "g_min",
    "mask_quantile",
    "cond_dim",
    "encoder_depth",
    "decoder_depth",
    "kernel_size",
    "expert_width",
    "expert_depth",
    "loss_momentum",
    "afe.rho_min",
    "afe.kappa_p",
    "afe.kappa_eps",
    *(f"residual_scales.{f.name}" for f in dataclasses.fields(AdapterConfig().residual_scales)),
)


def test_stated_values_are_marked_paper_and_lost_ones_ours():
    marks = dataclass_marks(AdapterConfig)
    assert {name: marks[name] for name in PAPER_FIELDS} == dict.fromkeys(PAPER_FIELDS, "paper")
    assert {name: marks[name] for name in OUR_FIELDS} == dict.fromkeys(OUR_FIELDS, "ours")
    config = AdapterConfig()
    assert (config.hidden, config.top_k, config.bank_channels) == (128, 4, 32)
    assert (config.mask_weights, config.mask_floor) == ((0.55, 0.25, 0.20), 0.08)


def _numeric(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, (tuple, list)) and bool(value) and all(_numeric(v) for v in value)


def _default_classes():
    from pila.callbacks.schedules import (
        ConditioningWarmup,
        EncoderFreeze,
        MaskBlend,
        PhysicsWarmup,
        RecoveryPhases,
        SigmaRangePhases,
    )
    from pila.datamodules.clips import ClipConfig
    from pila.datamodules.flow_targets import FlowConfig
    from pila.datamodules.records import FilterConfig
    from pila.flow import SigmaSampler
    from pila.physics.loss import ResidualLoss
    from pila.stages import StageA, StageB, StageC
    from pila.stages.module import PILAModule
    from pila.stages.stages import ObservableAnchorLoss

    return [
        PhysicsWarmup,
        ConditioningWarmup,
        MaskBlend,
        EncoderFreeze,
        SigmaRangePhases,
        RecoveryPhases,
        ClipConfig,
        FlowConfig,
        FilterConfig,
        SigmaSampler,
        ResidualLoss,
        ObservableAnchorLoss,
        PILAModule,
        StageA,
        StageB,
        StageC,
    ]


@pytest.mark.parametrize("cls", _default_classes(), ids=lambda c: c.__name__)
def test_every_numeric_default_of_the_training_code_has_a_mark(cls):
    if dataclasses.is_dataclass(cls):
        params = {f.name: f.default for f in dataclasses.fields(cls)}
    else:
        params = {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items()}
    numeric = [name for name, default in params.items() if _numeric(default)]
    assert numeric, f"{cls.__name__} has no numeric default to check"
    entries = args_section(cls.__doc__ or "")
    missing = [name for name in numeric if mark_kind(entries.get(name, "")) is None]
    assert not missing, f"{cls.__name__}: defaults without a provenance mark: {missing}"


def test_schedule_defaults_the_paper_states_are_marked_paper():
    from pila.callbacks.schedules import EncoderFreeze, PhysicsWarmup, SigmaRangePhases

    def kinds(cls):
        return {name: mark_kind(text) for name, text in args_section(cls.__doc__).items()}

    assert kinds(PhysicsWarmup) == {"target": "paper", "steps": "paper"}
    assert kinds(EncoderFreeze)["steps"] == "paper" and kinds(EncoderFreeze)["lr_scale"] == "ours"
    assert kinds(SigmaRangePhases) == {
        "sigma_max": "ours",
        "steps_per_phase": "paper",
        "sigma_min": "ours",
    }


# ------------------------------------------------------------------------------ YAML
def numeric_leaves(node) -> int:
    """Number of numeric leaves (a flow list of numbers counts once, as one line)."""
    if isinstance(node, dict):
        return sum(numeric_leaves(v) for v in node.values())
    if isinstance(node, list):
        if node and all(_numeric(v) for v in node):
            return 1
        return sum(numeric_leaves(v) for v in node)
    return int(_numeric(node))


def numeric_lines(text: str) -> list[tuple[int, str, str, str]]:
    """(line number, key, value, comment) of every line whose value is a number or a flow
    list of numbers."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = re.match(r"^\s*(?:- )?([\w.]+):\s+([^#]+?)\s*(#.*)?$", line)
        if not match:
            continue
        key, raw, comment = match.group(1), match.group(2), match.group(3) or ""
        if _numeric(yaml.safe_load(raw)):
            found.append((number, key, raw, comment))
    return found


@pytest.mark.parametrize("path", PAPER_YAMLS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_number_of_a_paper_yaml_has_a_provenance_comment(path):
    text = path.read_text()
    lines = numeric_lines(text)
    assert len(lines) == numeric_leaves(yaml.safe_load(text))  # no number hides from the line scan
    missing = [
        f"line {n}: {key}: {value}"
        for n, key, value, comment in lines
        if not YAML_MARK.search(comment)
    ]
    assert not missing, (
        f"{path.name}: numbers without `# paper, <where>` or `# ours: <why>`: {missing}"
    )


# (file, key, value) → the mark it must carry
YAML_KINDS = {
    **{
        (f"stage{s}.yaml", k, v): "paper"
        for s in "ABC"
        for k, v in [
            ("devices", "8"),
            ("num_nodes", "1"),
            ("stage", "2"),
            ("hidden", "128"),
            ("top_k", "4"),
            ("num_frames", "81"),
        ]
    },
    **{
        (f"stage{s}.yaml", k, v): "ours"
        for s in "ABC"
        for k, v in [
            ("lr", "1.0e-4"),
            ("beta", "2.0"),
            ("tau", "1.0"),
            ("sigma_shift", "3.0"),
            ("gradient_clip_val", "1.0"),
            ("batch_size", "1"),
            ("height", "480"),
            ("width", "832"),
            ("fps", "16.0"),
        ]
    },
    ("stageA.yaml", "max_steps", "9000"): "paper",
    ("stageA.yaml", "steps_per_phase", "3000"): "paper",
    ("stageA.yaml", "sigma_max", "[0.25, 0.5, 1.0]"): "ours",
    ("stageB.yaml", "steps_per_phase", "1000"): "ours",
    ("stageB.yaml", "max_steps", "5000"): "ours",
    ("stageB.yaml", "anchor_weight", "0.1"): "ours",
    ("stageB.yaml", "num_phases", "5"): "paper",
    ("stageC.yaml", "max_epochs", "3"): "paper",
    ("stageC.yaml", "target", "0.30"): "paper",
    ("stageC.yaml", "steps", "2000"): "paper",
    ("stageC.yaml", "steps", "1000"): "paper",  # conditioning warm-up and encoder freeze
    ("stageC.yaml", "steps", "300"): "paper",
    ("stageC.yaml", "lr_scale", "0.1"): "ours",
    ("stageC.yaml", "encoder_lr_scale", "0.1"): "ours",
    ("predict.yaml", "num_inference_steps", "50"): "paper",
    ("predict.yaml", "shift", "3.0"): "ours",
    ("predict.yaml", "guidance_scale", "5.0"): "ours",
    ("predict_wan22.yaml", "shift", "12.0"): "ours",
    ("predict_wan22.yaml", "num_inference_steps", "40"): "ours",
}


def test_the_yaml_marks_say_paper_exactly_where_the_paper_states_the_value():
    seen = set()
    for path in PAPER_YAMLS:
        for _, key, value, comment in numeric_lines(path.read_text()):
            expected = YAML_KINDS.get((path.name, key, value))
            if expected is None:
                continue
            seen.add((path.name, key, value))
            kind = "paper" if comment.lstrip("# ").startswith("paper") else "ours"
            assert kind == expected, (
                f"{path.name}: {key}: {value} is marked {comment!r}, expected {expected}"
            )
    assert seen == set(YAML_KINDS)
    for path in CONFIGS.glob("stage*.yaml"):
        text = path.read_text()
        assert (
            "precision: bf16-mixed             # paper" in text
            and "offload_optimizer: true       # paper" in text
        )
        assert "paper's run" not in text
