"""What an attention backend is: declared data plus a few methods.

Every backend computes softmax attention ``softmax(q k^T / sqrt(D) + mask) v`` on tensors laid
out ``[B, H, N, D]`` (batch, heads, sequence, head dim); the output has the shape of ``q``.
A backend declares what it supports as class attributes and answers
``not_supported_reasons(inputs)``: an empty list means it can run, otherwise the reasons become a
skipped row.

``prepare(inputs)`` does what a model would do once per shape (sampling random blocks, building
index tensors) and returns a closure ``fn(q, k, v) -> out``; the harness times only the closure.

``mask(inputs, q, k, rows)`` is the contract for correctness: the boolean matrix of the
(query, key) pairs the backend attends. Its output must equal dense softmax attention restricted
to that mask (see ``harness.measure.reference``), with the keys given by ``reference_keys``.
Families that approximate softmax attention by another formula (low-rank projections, random
features, kernel feature maps, landmarks) are no mask: they override ``reference`` with a dense
computation of their own formula, with the same random features or projections, so that the
check is still to rounding; ``err_vs_full`` then says how far the formula is from exact
attention. They count their FLOPs themselves (``forward_flops``).

A family's plain backend defines its pattern; a ``Kernel`` computes that pattern another way (a
fused library kernel) and holds an instance of the plain backend, to which it leaves the pattern.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from harness.measure.flops import MODE_FACTORS, useful_flops
from harness.measure.inputs import Inputs, dtype_name
from harness.measure.params import pattern_values
from harness.store.facts import Promise

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

ALL_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})


@dataclass(frozen=True)
class NoParams:
    """Parameters of a backend that has none."""


class AttentionBackend:
    """Base class: subclasses set the class attributes and implement ``prepare``."""

    name: ClassVar[str]
    family: ClassVar[str]
    description: ClassVar[str] = ""
    devices: ClassVar[frozenset[str]] = frozenset({"cpu", "cuda"})
    dtypes: ClassVar[frozenset[torch.dtype]] = ALL_DTYPES
    supports_backward: ClassVar[bool] = True
    is_sparse: ClassVar[bool] = False
    # The family's promised cost as n grows, stored in every row for the scaling analysis.
    promise: ClassVar[Promise | None] = None
    # A full-attention backend every report measures the others against (speedup, savings).
    yardstick: ClassVar[bool] = False
    # Whose implementation this is: "ours", or for a peer the package it drives (e.g.
    # "transformers"), so that reports can set ours beside the implementations people run.
    implementation: ClassVar[str] = "ours"
    # A peer's values for its family's parameters that it takes no field for (lucidrains'
    # blocks: no global and no random blocks), where they differ from the family's defaults
    fixed_pattern: ClassVar[dict[str, Any]] = {}
    # Modules the case processes should import before forking (once per sweep), so that one-off
    # imports such as torch.compile's do not land in the first case's prepare time.
    preload: ClassVar[tuple[str, ...]] = ()
    Params: ClassVar[type] = NoParams
    # The shapes of today's models this backend computes (``harness.measure.inputs``); the others
    # are refused with a reason: grouped-query attention (kv_heads < heads), decoding (q_len <
    # seq_len: the queries are the last positions), packed documents (block-diagonal).
    supports_gqa: ClassVar[bool] = False
    supports_decoding: ClassVar[bool] = False
    supports_documents: ClassVar[bool] = False
    # Why, in a few words, for an axis it does not compute ("gqa", "decoding", "documents"),
    # added to that reason
    why_not: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Any = None) -> None:
        self.params = self.Params() if params is None else params

    # -- capability -------------------------------------------------------------------------
    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        """Why this backend cannot run ``inputs`` here; empty when it can."""
        reasons = []
        device_type = torch.device(inputs.device).type
        if device_type not in self.devices:
            reasons.append(f"device {device_type} not supported (supports {sorted(self.devices)})")
        if inputs.dtype not in self.dtypes:
            names = sorted(dtype_name(d) for d in self.dtypes)
            reasons.append(f"dtype {dtype_name(inputs.dtype)} not supported (supports {names})")
        if inputs.requires_grad and not self.supports_backward:
            reasons.append("no backward pass")
        return reasons + self.shape_reasons(inputs)

    def shape_reasons(self, inputs: Inputs) -> list[str]:
        """Which of the inputs' axes (causal, kv_heads, q_len, documents) this backend does not
        compute, from its declarations (``supports_*``, a ``causal`` parameter)."""
        reasons = []
        why = {k: f": {v}" for k, v in self.why_not.items()}
        if inputs.causal and not hasattr(self.params, "causal"):
            reasons.append(f"{self.family} has no causal variant")
        if inputs.grouped and not self.supports_gqa:
            reasons.append(
                f"no grouped-query attention (kv_heads {inputs.kv_heads_count} < heads "
                f"{inputs.heads}){why.get('gqa', '')}"
            )
        if inputs.decoding and not self.supports_decoding:
            reasons.append(
                f"no query length other than the key length (q_len {inputs.q_len})"
                f"{why.get('decoding', '')}"
            )
        if inputs.documents > 1 and not self.supports_documents:
            reasons.append(
                f"no packed documents ({inputs.documents} documents){why.get('documents', '')}"
            )
        return reasons

    def param_errors(self, seq_len: int) -> list[str]:
        """Parameter values that make no sense at ``seq_len`` (the command line refuses them)."""
        return []

    # -- computation ------------------------------------------------------------------------
    def prepare(self, inputs: Inputs) -> AttentionFn:
        raise NotImplementedError

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Boolean mask ``[B, H, M, N]`` (or broadcastable to it) of the attended pairs.

        ``rows`` selects M query positions (all N when None). Full attention attends everything.
        """
        n = inputs.seq_len
        m = n if rows is None else rows.numel()
        return torch.ones(1, 1, m, n, dtype=torch.bool, device=q.device)

    def reference_keys(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The keys the backend really uses (shared-QK schemes derive them from ``q``)."""
        return k

    def reference(
        self,
        inputs: Inputs,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        compute_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """What the backend must output for query rows ``rows`` (of q's M), ``[B, H, rows, D]``,
        computed densely in ``compute_dtype`` (``masked_attention``'s default when None), and
        differentiable: softmax attention under the case's mask (``reference_mask``) with the
        keys of ``reference_keys``. An approximation overrides it with its own formula."""
        from harness.measure.reference import masked_attention, reference_mask

        mask = reference_mask(self, inputs, q.detach(), k.detach(), rows)
        keys = self.reference_keys(q, k)
        return masked_attention(q, keys, v, mask, rows, compute_dtype)

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Predicted peak memory of one call beyond its inputs (what ``peak_mem_bytes`` measures,
        the output and gradients included), so that a case that cannot fit is skipped before it
        runs. This default counts what a fused kernel without a score matrix holds: the output
        ``[B, H, N, D]``, and with a backward pass dq, dk and dv too. Backends that keep more
        intermediates count them in their override."""
        return inputs.qkv_bytes() // 3 * (4 if inputs.requires_grad else 1)

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float | None:
        """(query, key) pairs per (batch, head) among the ``seq_len`` real positions, as the
        family counts them (``harness.measure.flops``); None where the family has no count."""
        return None

    def case_pairs(self, inputs: Inputs) -> float | None:
        """(query, key) pairs per (batch, head) of the case: the family's count
        (``attended_pairs``), or where the queries are not all positions or documents cut the
        pattern, the pairs of the reference mask counted (``harness.measure.pairs``)."""
        if not (inputs.decoding or inputs.documents > 1):
            return self.attended_pairs(inputs.seq_len, inputs.seed)
        if self.not_supported_reasons(inputs):
            return None
        from harness.measure.pairs import counted_pairs

        return counted_pairs(self, inputs)

    def forward_flops(self, inputs: Inputs) -> float | None:
        """Useful FLOPs of one forward call: ``4 B H D`` per attended pair
        (``harness.measure.flops``). A family that is not a pattern of pairs (an approximation)
        counts the matmuls of its own formula instead; None where unknown."""
        pairs = self.case_pairs(inputs)
        return useful_flops(pairs, inputs.batch, inputs.heads, inputs.head_dim, "fwd")

    def row_facts(self, inputs: Inputs, pass_: str) -> dict[str, Any]:
        """The family's facts a results row stores (``records.FACT_COLUMNS``), so that analysis
        needs no backend: useful FLOPs of one call, promise, sparse, yardstick, and whose
        implementation it is."""
        forward = self.forward_flops(inputs)
        return {
            "flops": None if forward is None else forward * MODE_FACTORS[pass_],
            "promise": self.promise.text if self.promise else "",
            "sparse": self.is_sparse,
            "yardstick": self.yardstick,
            "implementation": self.implementation,
            "pattern": self.pattern_json(),
        }

    # -- description ------------------------------------------------------------------------
    def params_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def params_json(self) -> str:
        return json.dumps(self.params_dict(), sort_keys=True, separators=(",", ":"))

    def pattern_json(self) -> str:
        """What this backend computes: its family and the values of all the family's parameters
        (``params.pattern_values``: ``fixed_pattern`` where it has no field, defaults else,
        kernel choices left out), as JSON. Backends with the same text compute the same thing,
        so reports set them side by side (format 6)."""
        values = {"family": self.family, **pattern_values(self.params, self.fixed_pattern)}
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    def label(self) -> str:
        """Name and key parameters, for legends and tables."""
        items = [_item(k, v) for k, v in self.params_dict().items()]
        items = [i for i in items if i]
        return self.name if not items else f"{self.name}({', '.join(items)})"


class Kernel(AttentionBackend):
    """A backend that computes another backend's pattern by composition: ``pattern`` names the
    family's plain backend, from which the class takes ``family``, ``Params`` (unless it declares
    its own), ``promise`` and ``is_sparse``; each instance holds ``self.plain``, a ``pattern``
    built with the same parameters, and leaves the pattern to it (``mask``, ``reference_keys``,
    ``attended_pairs``, ``param_errors``). A kernel adds only how to compute: ``prepare``, its
    declarations and reasons, its memory estimate.

    A kernel that takes only some of the family's parameters declares them as its ``Params``
    (``harness.measure.params.narrowed``); its ``self.plain`` gets the family's ``Params`` made
    from them, the others at their defaults.
    """

    pattern: ClassVar[type[AttentionBackend]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "pattern" not in cls.__dict__:
            return  # a base of kernels, or a subclass of a kernel: nothing new to take
        p = cls.pattern
        cls.family, cls.promise, cls.is_sparse = p.family, p.promise, p.is_sparse
        if "Params" not in cls.__dict__:
            cls.Params = p.Params

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        family_params = self.params
        if not isinstance(family_params, self.pattern.Params):
            values = {
                f.name: getattr(family_params, f.name) for f in dataclasses.fields(self.Params)
            }
            family_params = self.pattern.Params(**values)
        self.plain = self.pattern(family_params)  # the pattern this kernel computes

    def param_errors(self, seq_len: int) -> list[str]:
        return self.plain.param_errors(seq_len)

    def mask(
        self, inputs: Inputs, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.plain.mask(inputs, q, k, rows)

    def reference_keys(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.plain.reference_keys(q, k)

    def reference(
        self,
        inputs: Inputs,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rows: torch.Tensor,
        compute_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        return self.plain.reference(inputs, q, k, v, rows, compute_dtype)

    def forward_flops(self, inputs: Inputs) -> float | None:
        return self.plain.forward_flops(inputs)

    def attended_pairs(self, seq_len: int, seed: int = 0) -> float | None:
        return self.plain.attended_pairs(seq_len, seed)


def _item(key: str, value: Any) -> str:
    """``key=value``; a flag by its name when set and not at all when unset, as are empty lists."""
    if value is True:
        return key
    if value is False or value is None or value == () or value == []:
        return ""
    if isinstance(value, (list, tuple)):
        return f"{key}=[{' '.join(str(v) for v in value)}]"
    return f"{key}={value}"
