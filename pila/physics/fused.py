"""The residual objective's inner sums, eager or fused by ``torch.compile``.

Training needs, per residual term, the masked mean of its square per sample,
``mean(m · r_{k,j}(F)²)`` (the inner sums of Eq. 6), and their gradients. This module
computes them from the fields in one shared pass (:func:`masked_residual_means`) and
offers two executions of that same function (:class:`ResidualPass`):

* eager (default): every finite difference and every residual is a separate PyTorch
  operation writing its result to memory. Sharing derivatives saves the repeated
  stencils, but the pointwise algebra of the 29 terms dominates the memory traffic, so
  the shared pass is only about 1.2× faster than evaluating each term on its own.
* compiled: the same Python function under ``torch.compile(fullgraph=True)``. The
  stencils are shifted views and their adjoints are functional under the compiler, so
  it fuses the whole pass, the masked means and the backward pass into a few loops. On
  the full-size latent (16 × 21 × 60 × 104; CPU, one thread), all 29 terms in one call,
  this runs about 4× faster forward and 5× faster forward + backward than the eager naive per-term
  evaluation (2.7× when called once per category, as stage C does); the naive evaluation
  compiled the same way comes within 1.2×, because the compiler also removes repeated
  derivatives: the gain is fusion (``benchmarks/results/physics_residuals.md``).

A compiled graph is specialised to the category set, the residual families and scales,
the dtype, the device, grad mode and the batch size (static first; a second size makes
it dynamic); each combination compiles once on first use (tens of seconds on a CPU,
where Inductor needs a C++ compiler; Triton kernels on a GPU). Stage C evaluates each
expert's category separately, so a run compiles a few graphs per category; the
recompile limit is raised to allow that. Inputs (categories, families, scales, fields,
mask) are checked eagerly before the compiled call, so bad input gets the same errors in
both executions. If the compiler toolchain fails while building the forward graph (no
C++ compiler, for instance), the pass logs why and stays eager for the rest of the run;
the backward graph is built at the first backward pass, where a failure is raised.

Shapes: B batch, K components, T latent frames, H, W latent height and width.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from pila.physics.loss import masked_means
from pila.physics.residuals import (
    ResidualScales,
    check_residual_inputs,
    residuals_for_categories,
)

log = logging.getLogger(__name__)

Means = dict[str, dict[str, Tensor]]


def masked_residual_means(
    categories: Iterable[str],
    fields: Mapping[str, Tensor],
    mask: Tensor,
    scales: ResidualScales | Mapping[str, float] | None = None,
    families: Iterable[str] | None = None,
) -> Means:
    """mean(m·r²) per sample of every residual of ``categories``, from one shared pass.

    Args:
        categories: category names (any subset of ``CATEGORIES``).
        fields: slot name → component tensor (B, K, T, H, W).
        mask: spatial mask (B, 1, T, H, W), uncropped; used detached.
        scales: latent-scale normalisers; ``None`` for the defaults.
        families: residual families kept; ``None`` keeps all four.

    Returns:
        category → term → (B,) float32 means, terms in table order.
    """
    residuals = residuals_for_categories(categories, fields, scales, families)
    return masked_means(residuals, mask)


class ResidualPass:
    """Computes :func:`masked_residual_means` eagerly or as a compiled, fused graph.

    Args:
        compile: fuse the pass with ``torch.compile`` (see the module docstring).
        recompile_limit: graphs allowed per process for this function (one per category
            set, families, scales, dtype and device; shape changes add a dynamic one).
    """

    def __init__(self, compile: bool = False, *, recompile_limit: int = 64) -> None:
        if recompile_limit < 1:
            raise ValueError(f"recompile_limit must be >= 1, got {recompile_limit}")
        self.compile = bool(compile)
        self.recompile_limit = recompile_limit
        self._compiled = (
            torch.compile(masked_residual_means, fullgraph=True) if self.compile else None
        )

    def __repr__(self) -> str:
        return f"ResidualPass(compile={self.compile})"

    # A compiled function does not pickle (spawned DDP workers receive the module by
    # pickle); the copy compiles its own on first use.
    def __getstate__(self) -> dict[str, object]:
        return {"compile": self.compile, "recompile_limit": self.recompile_limit}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(bool(state["compile"]), recompile_limit=int(state["recompile_limit"]))

    def __call__(
        self,
        categories: Iterable[str],
        fields: Mapping[str, Tensor],
        mask: Tensor,
        scales: ResidualScales | Mapping[str, float] | None = None,
        families: Iterable[str] | None = None,
    ) -> Means:
        """category → term → mean(m·r²) per sample (B,); same arguments as
        :func:`masked_residual_means`."""
        categories = (categories,) if isinstance(categories, str) else tuple(categories)
        families = None if families is None else tuple(families)
        if self._compiled is None:
            return masked_residual_means(categories, fields, mask, scales, families)
        scales = check_residual_inputs(categories, fields, families, scales)
        _check_mask(mask, fields)
        # The graph is guarded on the category tuple; each set needs its own entry.
        limit = max(self.recompile_limit, torch._dynamo.config.recompile_limit)
        try:
            with torch._dynamo.config.patch(recompile_limit=limit):
                return self._compiled(categories, dict(fields), mask, scales, families)
        except Exception as error:
            if not _is_compiler_failure(error):
                raise
            log.warning(
                "torch.compile could not build the fused residual pass (%s: %s); the "
                "residual objective runs eagerly for the rest of this run",
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            self._compiled = None
            self.compile = False
            return masked_residual_means(categories, fields, mask, scales, families)


def _check_mask(mask: Tensor, fields: Mapping[str, Tensor]) -> None:
    """The mask must be a floating (B, 1, T, H, W) tensor on the fields' grid."""
    if not isinstance(mask, Tensor) or mask.ndim != 5 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise ValueError(f"mask must have shape (B, 1, T, H, W), got {shape}")
    if not mask.is_floating_point():
        raise ValueError(f"mask must be a floating-point tensor, got dtype {mask.dtype}")
    for name, field in fields.items():
        grid = (field.shape[0], *field.shape[2:])
        if (mask.shape[0], *mask.shape[2:]) != grid:
            raise ValueError(
                f"mask has (B, T, H, W) = {(mask.shape[0], *mask.shape[2:])} but field {name!r} "
                f"has {grid}; the mask must cover the fields' grid"
            )
        break


def _is_compiler_failure(error: BaseException) -> bool:
    """Whether an exception from the compiled call comes from the compiler toolchain
    (not from the inputs, nor from code the compiler cannot trace, which is a bug)."""
    names = {"BackendCompilerFailed", "InductorError", "CppCompileError", "InvalidCxxCompiler"}
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__name__ in names:
            return True
        seen = seen.__cause__
    return False
