"""TensorBoard scalars as a tidy table, and the per-expert, per-term curves of training.

Each stage of a run writes its TensorBoard event files into its own folder (``pila demo``:
``<out>/stageA``, ``<out>/stageB``, ``<out>/stageC``). :func:`read_scalars` reads every
event file under a folder into a :class:`ScalarTable` with one row per (stage, tag, step).
A re-run or a resumed run writes a further event file into the same folder; as in
TensorBoard's purge of orphaned data, a later file supersedes the earlier files of its
folder from its first step on (a resumed run replaces the steps it redoes, a re-run from
scratch replaces the whole earlier run).

The pivots name the tags the stage modules log (``pila.stages.metrics``)::

    <split>/residual/<category>/<term>         mean m·r² of one residual term
    <split>/expert_loss/<category>             each expert's loss L_k
    <split>/router/selection_rate/<category>   share of samples that selected expert k
    <split>/router/mean_weight/<category>      mean routing weight π_k
    train/grad_norm/<part>/<group>             ‖∇ of one loss part‖ on one parameter group
    train/grad_ratio/<group>                   auxiliary over main part's norm (stages B, C)

Legend: N rows, S steps of one curve, K curves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from pila.adapter import PARAMETER_GROUPS
from pila.categories import CATEGORIES
from pila.stages.metrics import TERM_KEYS

log = logging.getLogger(__name__)

EVENT_FILE_MARKER = "tfevents"
"""Substring of every TensorBoard event file name."""

ExpertMetric = Literal["expert_loss", "router/selection_rate", "router/mean_weight"]
EXPERT_METRICS: tuple[str, ...] = ("expert_loss", "router/selection_rate", "router/mean_weight")
"""Per-expert tag families: ``<split>/<metric>/<category>``."""


class Series(NamedTuple):
    """One curve: steps (S,) int64 ascending and values (S,) float64."""

    steps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class ScalarTable:
    """Scalars in long form, one row per (stage, tag, step), sorted by stage, tag, step.

    Attributes:
        stage: (N,) stage of each row: the event folder relative to the folder read
            (its own name when the events lie directly in it).
        tag: (N,) TensorBoard tag.
        step: (N,) int64 global step.
        value: (N,) float64 value.
        wall_time: (N,) float64 seconds since the epoch when it was written.
    """

    stage: np.ndarray
    tag: np.ndarray
    step: np.ndarray
    value: np.ndarray
    wall_time: np.ndarray

    def __post_init__(self) -> None:
        columns = (self.stage, self.tag, self.step, self.value, self.wall_time)
        lengths = {len(column) for column in columns}
        if len(lengths) != 1:
            raise ValueError(
                f"ScalarTable columns must have one length, got lengths {sorted(lengths)}"
            )

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> ScalarTable:
        """Build from dicts with keys ``stage``, ``tag``, ``step``, ``value`` and, optionally,
        ``wall_time``.

        Rows are sorted by (stage, tag, step); for a repeated (stage, tag, step) the row
        with the latest ``wall_time`` is kept (the later one in input order on a tie).
        """
        latest: dict[tuple[str, str, int], tuple[float, float]] = {}
        for row in rows:
            key = (str(row["stage"]), str(row["tag"]), int(row["step"]))
            wall = float(row.get("wall_time", 0.0))
            if key not in latest or wall >= latest[key][1]:
                latest[key] = (float(row["value"]), wall)
        keys = sorted(latest)
        return cls(
            stage=np.array([k[0] for k in keys], dtype=object),
            tag=np.array([k[1] for k in keys], dtype=object),
            step=np.array([k[2] for k in keys], dtype=np.int64),
            value=np.array([latest[k][0] for k in keys], dtype=np.float64),
            wall_time=np.array([latest[k][1] for k in keys], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.step)

    @property
    def stages(self) -> list[str]:
        """The stages present, sorted."""
        return sorted(set(self.stage.tolist()))

    @property
    def tags(self) -> list[str]:
        """The tags present (in any stage), sorted."""
        return sorted(set(self.tag.tolist()))

    def rows(self) -> list[dict[str, Any]]:
        """The table as ``[{"stage", "tag", "step", "value", "wall_time"}, …]``."""
        return [
            {"stage": s, "tag": t, "step": int(n), "value": float(v), "wall_time": float(w)}
            for s, t, n, v, w in zip(
                self.stage, self.tag, self.step, self.value, self.wall_time, strict=True
            )
        ]

    def where(
        self,
        *,
        stage: str | None = None,
        tag: str | None = None,
        prefix: str | None = None,
    ) -> ScalarTable:
        """Rows of one stage, one tag and/or the tags starting with ``prefix``."""
        keep = np.ones(len(self), dtype=bool)
        if stage is not None:
            keep &= self.stage == stage
        if tag is not None:
            keep &= self.tag == tag
        if prefix is not None:
            keep &= np.array([t.startswith(prefix) for t in self.tag], dtype=bool)
        columns = (self.stage, self.tag, self.step, self.value, self.wall_time)
        return ScalarTable(*(column[keep] for column in columns))

    def series(self, tag: str, stage: str | None = None) -> Series:
        """The curve of ``tag`` in ``stage`` (which may be omitted when only one stage logs it).

        Raises:
            KeyError: no such tag (the message lists the tags that exist).
            ValueError: ``stage`` is None and several stages log ``tag``.
        """
        rows = self.where(tag=tag, stage=stage)
        if len(rows) == 0:
            where = f" in stage {stage!r}" if stage is not None else ""
            known = self.where(stage=stage).tags if stage is not None else self.tags
            raise KeyError(f"no scalar {tag!r}{where}; tags present: {', '.join(known) or 'none'}")
        if len(rows.stages) > 1:
            raise ValueError(
                f"{tag!r} is logged by stages {rows.stages}; pass stage= to choose one"
            )
        return Series(rows.step.copy(), rows.value.copy())


def event_files(logdir: str | os.PathLike) -> list[Path]:
    """Every TensorBoard event file under ``logdir`` (recursively), sorted by path."""
    root = Path(logdir)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(
            f"log folder {str(root)!r} does not exist; pass the output folder of a run "
            "(e.g. the --out of `pila demo`) or one stage's folder inside it"
        )
    return sorted(p for p in root.rglob(f"*{EVENT_FILE_MARKER}*") if p.is_file())


def _stage_of(path: Path, root: Path) -> str:
    """The stage name of an event file: its folder relative to ``root``, or ``root``'s name."""
    if root.is_file():
        return root.parent.name
    rel = path.parent.relative_to(root)
    return rel.as_posix() if rel.parts else root.resolve().name


def read_scalars(logdir: str | os.PathLike) -> ScalarTable:
    """Read every scalar of every event file under ``logdir`` into a :class:`ScalarTable`.

    Args:
        logdir: a run's output folder, one stage's folder, or a single event file.

    Returns:
        The table; the stage of a row is the event file's folder relative to ``logdir``
        (``stageA``, ``stageB``, ``stageC`` for the output folder of ``pila demo``).

    Raises:
        FileNotFoundError: ``logdir`` does not exist or holds no event file.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = Path(logdir)
    files = event_files(root)
    if not files:
        raise FileNotFoundError(
            f"no TensorBoard event files (*{EVENT_FILE_MARKER}*) under {str(root)!r}; "
            "training writes them into each stage's folder"
        )
    per_file: list[tuple[float, str, list[dict[str, Any]]]] = []
    for path in files:
        # size_guidance 0 keeps every event (the default samples scalars down to 10 000)
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        stage = _stage_of(path, root)
        rows = [
            {"stage": stage, "tag": tag, "step": e.step, "value": e.value, "wall_time": e.wall_time}
            for tag in accumulator.Tags()["scalars"]
            for e in accumulator.Scalars(tag)
        ]
        if rows:
            per_file.append((min(r["wall_time"] for r in rows), stage, rows))
    # Oldest file first; each file drops its folder's earlier rows from its first step on.
    kept: dict[str, list[dict[str, Any]]] = {}
    for _, stage, rows in sorted(per_file, key=lambda item: item[0]):
        first = min(r["step"] for r in rows)
        kept[stage] = [r for r in kept.get(stage, []) if r["step"] < first] + rows
    table = ScalarTable.from_rows(r for rows in kept.values() for r in rows)
    log.info("read %d scalars from %d event files under %s", len(table), len(files), root)
    return table


def residual_curves(
    table: ScalarTable, stage: str = "stageC", split: str = "train"
) -> dict[tuple[str, str], Series]:
    """Per-(category, term) residual curves ``<split>/residual/<category>/<term>`` of one stage.

    Returns:
        ``{(category, term): Series}`` in the fixed term order of
        :data:`pila.stages.metrics.TERM_KEYS`, for the terms that were logged (a term is
        only logged once an expert evaluating it was routed to).
    """
    stage_rows = table.where(stage=stage, prefix=f"{split}/residual/")
    present = set(stage_rows.tag.tolist())
    return {
        key: stage_rows.series(f"{split}/residual/{key[0]}/{key[1]}")
        for key in TERM_KEYS
        if f"{split}/residual/{key[0]}/{key[1]}" in present
    }


def expert_curves(
    table: ScalarTable,
    metric: ExpertMetric = "expert_loss",
    stage: str = "stageC",
    split: str = "train",
) -> dict[str, Series]:
    """Per-expert curves ``<split>/<metric>/<category>`` of one stage, in ``CATEGORIES`` order.

    Args:
        table: from :func:`read_scalars`.
        metric: ``"expert_loss"`` (L_k), ``"router/selection_rate"`` or ``"router/mean_weight"``.
        stage: the stage whose curves to take.
        split: ``"train"`` or ``"val"``.

    Returns:
        ``{category: Series}`` for the experts that were logged.
    """
    if metric not in EXPERT_METRICS:
        raise ValueError(f"metric must be one of {EXPERT_METRICS}, got {metric!r}")
    stage_rows = table.where(stage=stage, prefix=f"{split}/{metric}/")
    present = set(stage_rows.tag.tolist())
    return {
        name: stage_rows.series(f"{split}/{metric}/{name}")
        for name in CATEGORIES
        if f"{split}/{metric}/{name}" in present
    }


def gradient_curves(
    table: ScalarTable, stage: str = "stageC", part: str | None = None
) -> dict[str, Series]:
    """Per-group gradient curves of one stage (:mod:`pila.stages.gradients`), in
    :data:`~pila.adapter.PARAMETER_GROUPS` order.

    Args:
        table: from :func:`read_scalars`.
        stage: the stage whose curves to take (``"stageB"`` or ``"stageC"``).
        part: ``None`` for the ratios ``train/grad_ratio/<group>`` (the auxiliary part's
            norm over the main part's: λ_phys·L_res over flow matching in stage C,
            recovery over anchor in stage B), or a loss part (``"fm"``, ``"residual"``,
            ``"anchor"``, ``"recovery"``) for its norms ``train/grad_norm/<part>/<group>``.

    Returns:
        ``{group: Series}`` for the groups that were logged.
    """
    prefix = "train/grad_ratio/" if part is None else f"train/grad_norm/{part}/"
    stage_rows = table.where(stage=stage, prefix=prefix)
    present = set(stage_rows.tag.tolist())
    return {g: stage_rows.series(prefix + g) for g in PARAMETER_GROUPS if prefix + g in present}


class CurveMatrix(NamedTuple):
    """Curves aligned on the union of their steps.

    Attributes:
        keys: (K,) the curves' keys, in the order given.
        steps: (S,) every step any curve has, ascending.
        values: (K, S) float64, NaN where a curve has no value at a step.
    """

    keys: list[Any]
    steps: np.ndarray
    values: np.ndarray


def align_curves(curves: Mapping[Any, Series], keys: Sequence[Any] | None = None) -> CurveMatrix:
    """Put curves on a common step axis, e.g. for a (term × step) heat map.

    Args:
        curves: ``{key: Series}``, e.g. from :func:`residual_curves`.
        keys: the keys (rows) to keep and their order; default: all, in ``curves``' order.
    """
    keys = list(curves) if keys is None else list(keys)
    missing = [k for k in keys if k not in curves]
    if missing:
        raise KeyError(f"no curve for {missing}; curves present: {list(curves)}")
    if not keys:
        return CurveMatrix([], np.zeros(0, dtype=np.int64), np.zeros((0, 0)))
    steps = np.unique(np.concatenate([curves[k].steps for k in keys]))  # (S,)
    values = np.full((len(keys), len(steps)), np.nan)  # (K, S)
    for row, key in enumerate(keys):
        values[row, np.searchsorted(steps, curves[key].steps)] = curves[key].values
    return CurveMatrix(keys, steps, values)
