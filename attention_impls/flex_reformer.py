"""flex-reformer: Reformer's LSH attention (Kitaev, Kaiser and Levskaya, 2020, "Reformer: The
Efficient Transformer", ICLR, arXiv:2001.04451, sec. 3) as compiled FlexAttention (Dong et al.,
2024, arXiv:2412.05496; the machinery is ``attention_impls.flex``). Layout ``[B, H, N, D]`` as in
``harness.measure.backend``.

The kernel holds the plain ``Reformer`` (same ``Params``, ``mask``, parameter checks, hashing
and sort). Hashing and sorting depend on the values: they stay in the closure
(``Reformer.sort_qk``). In sorted coordinates the pattern is static: query slot i attends key
slot j iff their chunks ``meets`` (``attention_impls.reformer``), less padded keys and, with
shared QK, the token itself unless it is alone. The rounds are folded into the head dimension
(``[B, H * R, Np, D]``, one call), pairs met in several rounds count once through a
``score_mod`` subtracting log(count), and the rounds are merged by the softmax of their
log-sum-exps. Compiled FlexAttention on CPU has neither backward nor log-sum-exp in torch 2.13:
on CPU this backend runs forward only, and one round only.

The family's conventions (``attention_impls.reformer``): the bucket count and ``--unscaled-logits``
(flex's ``scale=1``) are followed; ``--count-per-round`` drops the count ``score_mod``, so that
the merge by log-sum-exps weighs each round's softmax as HF does. ``--look-back-across-rounds``
with several rounds is refused: each round is a head of one call over its own sorted slots, so
chunk 0 cannot reach another round's last chunk (one BlockMask per round's slots), and the self
mask would need the token in both chunks; with one round it is the same pattern and runs.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from attention_impls import flex
from attention_impls.flex import FlexKernel, Mod
from attention_impls.footprint import rows_bytes
from attention_impls.lsh import rotations, unit_keys
from attention_impls.reformer import Reformer, meets
from harness.measure.backend import AttentionFn, Kernel
from harness.measure.inputs import Inputs
from harness.measure.registry import register


@register
class FlexReformer(FlexKernel):
    name = "flex-reformer"
    description = "Reformer LSH rounds as compiled FlexAttention over sorted chunks"
    pattern = Reformer
    # Not the shapes of ``FlexMaskBackend`` (supports_* left False, refused with those reasons):
    # the buckets sort q and the keys of the same N positions (shared QK derives the keys from
    # q), so M queries of N keys, key heads other than the query heads, and documents cutting
    # the sorted chunks have no meaning here yet.
    why_not: ClassVar[dict[str, str]] = {
        "gqa": "the buckets sort q and keys of the same heads",
        "decoding": "the buckets sort q and keys of the same N positions",
        "documents": "a bucket's chunks ignore document boundaries",
    }

    def not_supported_reasons(self, inputs: Inputs) -> list[str]:
        # In the plain Reformer's order: the declared checks and its parameter checks (its
        # reasons), then Flex's, then the rounds that compiled CPU Flex cannot merge.
        reasons = Kernel.not_supported_reasons(self, inputs) + self.param_errors(inputs.seq_len)
        reasons += flex.flex_reasons(inputs)
        if torch.device(inputs.device).type == "cpu" and self.params.n_hashes > 1:
            reasons.append(
                f"n_hashes {self.params.n_hashes} > 1 needs the log-sum-exp of each round to "
                f"merge them, and compiled FlexAttention on CPU does not return it in torch "
                f"{torch.__version__} (return_lse unsupported): n_hashes=1 only on CPU"
            )
        if self.params.look_back_across_rounds and self.params.n_hashes > 1:
            reasons.append(
                "look_back_across_rounds is not computed: flex-reformer folds the rounds into "
                "heads, each over its own round's sorted slots, so chunk 0 cannot look back to "
                "the previous round's last chunk (the plain reformer computes it)"
            )
        return reasons

    def tile(self, inputs: Inputs) -> int:
        return flex.tile_for(self.params.chunk_size, inputs.device)

    def mask_mod(self, inputs: Inputs) -> Mod:
        """The pattern in sorted coordinates (the slots of one round), over the padded length."""
        n, c, dev = inputs.seq_len, self.params.chunk_size, torch.device(inputs.device)
        nc = -(-n // c)
        # Padded tokens sort after every real one: slots >= n are the padded keys.
        real = (n - torch.arange(nc, device=dev) * c).clamp(0, c)  # [nc] real keys per chunk
        # [nc] real keys in the chunks that meets() gives a query: its own and the previous
        window = real + real.roll(1) if nc > 1 else real
        slots = torch.arange(flex.table_len(nc * c, self.tile(inputs)), device=dev)  # [Np+]
        chunk = (slots // c).clamp(max=nc - 1)  # [Np+]
        # shared-QK drops self unless it is the only real key (the rule of Reformer.mask)
        alone = window[chunk] - (slots < n).long() == 0  # [Np+]
        if not self.params.shared_qk:
            alone.fill_(True)
        size, chunks, length = (flex.scalar(x, dev) for x in (c, nc, n))

        def mask_mod(b, h, i, j):
            return meets(i // size, j // size, chunks) & (j < length) & ((i != j) | alone[i])

        return mask_mod

    def prepare(self, inputs: Inputs) -> AttentionFn:
        b, h, n, d = inputs.shape
        c, rounds, shared = self.params.chunk_size, self.params.n_hashes, self.params.shared_qk
        n_pad, dev, tile = -(-n // c) * c, torch.device(inputs.device), self.tile(inputs)
        nc, slots = n_pad // c, flex.table_len(n_pad, tile)
        rot = rotations(inputs, self.params)  # [H, D, R, n_buckets / 2]
        block_mask = flex.build_block_mask(self.mask_mod(inputs), n_pad, dev, tile)
        scale = 1.0 if self.params.unscaled_logits else inputs.scale
        attention, chunks = flex.compiled_flex(), flex.scalar(nc, dev)
        offset_bh = (torch.arange(b * h, device=dev) * n_pad).view(b, h, 1, 1)
        offset_bhr = (torch.arange(b * h * rounds, device=dev) * n_pad).view(b, h, rounds, 1)
        # with one or two chunks every pair meets in every round: a constant count cancels
        counted = rounds > 1 and nc > 2 and not self.params.count_per_round
        # log(count), count 0 (never attended) at 0; float32 at least: log 2 in bf16 is 2e-3 off
        log_dtype = torch.float64 if inputs.dtype == torch.float64 else torch.float32
        log_count = torch.arange(rounds + 1, device=dev).clamp(min=1).to(log_dtype).log()
        lse_request = {"return_aux": flex.AuxRequest(lse=True)} if rounds > 1 else {}

        def to_sorted(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
            """Rows of ``x`` ``[B, H, N, D]`` in each round's order: ``[B, H * R, Np, D]``."""
            x = F.pad(x, (0, 0, 0, n_pad - n))  # [B, H, Np, D]
            flat = (perm + offset_bh).flatten()  # [B * H * R * Np]
            return x.reshape(-1, d).index_select(0, flat).view(b, h * rounds, n_pad, d)

        def chunk_table(slot: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
            """Chunk in every round r' of the token at each slot of round r: [B, H*R, Np+, R']."""
            chunk = (slot // c).int().transpose(2, 3)  # [B, H, Np, R'] token -> chunk
            src = chunk.unsqueeze(2).expand(b, h, rounds, n_pad, rounds)  # [B, H, R, Np, R']
            idx = perm.unsqueeze(-1).expand(b, h, rounds, n_pad, rounds)  # [B, H, R, Np, R']
            table = src.gather(3, idx).view(b, h * rounds, n_pad, rounds)  # [B, H*R, Np, R']
            return F.pad(table, (0, 0, 0, slots - n_pad))  # [B, H*R, Np+, R']

        def count_mod(perm_q, slot_q, perm_k, slot_k) -> Mod:
            cq = chunk_table(slot_q, perm_q)
            ck = cq if shared else chunk_table(slot_k, perm_k)

            def score_mod(score, bi, hr, i, j):
                # rounds in which both tokens meet
                count = meets(cq[bi, hr, i, 0], ck[bi, hr, j, 0], chunks).int()
                for r in range(1, rounds):  # unrolled at trace time
                    count = count + meets(cq[bi, hr, i, r], ck[bi, hr, j, r], chunks)
                return score - log_count[count]

            return score_mod

        def fn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            perm_q, slot_q, perm_k, slot_k = self.plain.sort_qk(inputs, q, k, rot)  # [B, H, R, Np]
            qs = to_sorted(q, perm_q)  # [B, H * R, Np, D]
            ks = to_sorted(unit_keys(q) if shared else k, perm_k)  # [B, H * R, Np, D]
            vs = to_sorted(v, perm_k)  # [B, H * R, Np, D]
            extra = dict(lse_request)
            if counted:
                with torch.no_grad():
                    extra["score_mod"] = count_mod(perm_q, slot_q, perm_k, slot_k)
            out = attention(qs, ks, vs, block_mask=block_mask, scale=scale, **extra)
            out, aux = out if rounds > 1 else (out, None)
            # back to token order, real query rows only
            idx = (slot_q[..., :n] + offset_bhr).flatten()  # [B * H * R * N]
            out = out.reshape(-1, d).index_select(0, idx).view(b, h, rounds, n, d)
            if aux is None:
                return out[:, :, 0]  # [B, H, N, D]
            lse = aux.lse.reshape(-1).index_select(0, idx)  # [B * H * R * N]
            weights = lse.view(b, h, rounds, n, 1).softmax(dim=2).to(out.dtype)
            return (out * weights).sum(dim=2)  # [B, H, N, D]

        return fn

    def estimate_bytes(self, inputs: Inputs) -> int:
        """Forward, measured on CPU (one round): q, the keys and v in each round's sorted order
        ``[B, H * R, Np, D]`` and the output in sorted and in token order (five such), and the
        int64 sort, slot and chunk tables. With a backward pass (CUDA only, unmeasured) the five
        rows twice, for their gradients."""
        b, h, n, _ = inputs.shape
        c, rounds = self.params.chunk_size, self.params.n_hashes
        n_pad = -(-n // c) * c
        copies = 5 * (2 if inputs.requires_grad else 1)
        tables = b * h * rounds * n_pad * 8 * (4 + 2 * rounds)
        return copies * rows_bytes(inputs, rounds * n_pad) + tables
