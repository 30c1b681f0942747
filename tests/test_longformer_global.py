"""Longformer's separate global projections (``--separate-global-qkv``,
``attention_impls.longformer_global``): outputs and gradients against the dense reference of the
formula, that formula written out here and checked against HuggingFace's LongformerSelfAttention
with matching weights, the kernels that follow it, its FLOPs and memory."""

from __future__ import annotations

import math

import pytest
import torch

from attention_impls.longformer import FlexLongformer, Longformer, LongformerParams
from attention_impls.longformer_global import global_projections, projection_flops
from harness.measure.inputs import Inputs
from harness.measure.reference import masked_attention
from tests.backend_checks import assert_matches_reference, largest_intermediate


def make(separate: bool = True, **params) -> Longformer:
    return Longformer(LongformerParams(**params, separate_global_qkv=separate))


# (n, window, dilation, global_tokens, causal): lengths the blocks do not divide (padding), a
# global token inside another's window, duplicates, dilation
CASES = [
    (17, 4, 1, (0,), False),
    (64, 8, 1, (0, -1), False),
    (100, 7, 3, (0, 50, -1), True),
    (257, 16, 2, (5, 5, -257), False),
    (257, 10, 1, (0, 3, 128), True),
]


@pytest.mark.parametrize(("n", "window", "dilation", "global_tokens", "causal"), CASES)
def test_matches_reference(n, window, dilation, global_tokens, causal):
    backend = make(window=window, dilation=dilation, global_tokens=global_tokens, causal=causal)
    assert_matches_reference(backend, Inputs(2, 2, n, 16, seed=n), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n", "window", "dilation", "global_tokens"), [(157, 6, 3, (5, -2))])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("q_len", "kv_heads", "documents"), [(None, 2, 1), (None, None, 4), (40, 2, 3), (1, None, 1)]
)
def test_shapes_of_todays_models(n, window, dilation, global_tokens, causal, q_len, kv_heads,
                                 documents):  # fmt: skip
    """Grouped-query attention, packed documents and decoding (the bands) with the option."""
    backend = make(window=window, dilation=dilation, global_tokens=global_tokens, causal=causal)
    inputs = Inputs(2, 4, n, 8, dtype=torch.float64, seed=n + documents, q_len=q_len,
                    kv_heads=kv_heads, documents=documents, causal=causal)  # fmt: skip
    assert backend.not_supported_reasons(inputs) == []
    assert_matches_reference(backend, inputs, atol=1e-9, rtol=1e-9)


def test_the_formula_written_out():
    """Global rows: softmax((q Wq)(k Wk)^T / sqrt(D)) (v Wv) over every key (causal: j <= i);
    other rows: the shared option's output, which reads q, k, v only. Written here from the
    definition, not with the module's helpers."""
    n, d, glob = 60, 8, (0, 30, -1)
    inputs = Inputs(1, 2, n, d, seed=4, causal=True)
    q, k, v = inputs.make_qkv()
    out = make(window=3, global_tokens=glob, causal=True).prepare(inputs)(q, k, v)
    shared = make(False, window=3, global_tokens=glob, causal=True).prepare(inputs)(q, k, v)
    gen = torch.Generator().manual_seed(inputs.seed ^ 0x4C6F6E67)
    wq, wk, wv = torch.randn(3, d, d, generator=gen) * d**-0.5
    for g in (0, 30, n - 1):
        scores = (q[:, :, g : g + 1] @ wq) @ (k @ wk).transpose(-1, -2) / math.sqrt(d)  # [.., 1, N]
        scores[..., g % n + 1 :] = float("-inf")
        expected = scores.softmax(dim=-1) @ (v @ wv)  # [B, H, 1, D]
        torch.testing.assert_close(out[:, :, g], expected[:, :, 0], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[:, :, g], shared[:, :, g], atol=1e-3)
    others = [i for i in range(n) if i not in (0, 30, n - 1)]
    torch.testing.assert_close(out[:, :, others], shared[:, :, others], atol=1e-6, rtol=1e-6)


def test_equals_huggingface_global_rows():
    """HF's LongformerSelfAttention (transformers) with ``query_global``, ``key_global`` and
    ``value_global`` set to the ordinary projections followed by our ``Wq, Wk, Wv`` per head: its
    global rows are ours, to float32 rounding."""
    modeling = pytest.importorskip("transformers.models.longformer.modeling_longformer")
    from transformers import LongformerConfig

    heads, d, n, window = 2, 8, 64, 4
    config = LongformerConfig(
        hidden_size=heads * d,
        num_attention_heads=heads,
        attention_window=[2 * window],
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    layer = modeling.LongformerSelfAttention(config, layer_id=0).eval()
    inputs = Inputs(1, heads, n, d, seed=2)
    w = dict(zip("qkv", global_projections(inputs), strict=True))
    block = {name: torch.block_diag(*[w[name]] * heads) for name in "qkv"}  # [H*D, H*D] each
    with torch.no_grad():
        for name, local, glob in [("q", layer.query, layer.query_global),
                                  ("k", layer.key, layer.key_global),
                                  ("v", layer.value, layer.value_global)]:  # fmt: skip
            glob.weight.copy_(block[name].T @ local.weight)  # x -> local(x) per head @ W
            glob.bias.copy_(local.bias @ block[name])
        x = torch.randn(1, n, heads * d)
        global_tokens = (0, 17, n - 1)
        mask = torch.zeros(1, n)
        mask[0, list(global_tokens)] = 10000.0  # HF's internal mask: +10000 global, 0 local
        hf = layer(x, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0,
                   is_global_attn=True)[0]  # fmt: skip
        locals_ = (layer.query, layer.key, layer.value)
        q, k, v = (proj(x).view(1, n, heads, d).transpose(1, 2) for proj in locals_)  # [B, H, N, D]
        ours = make(window=window, global_tokens=global_tokens).prepare(inputs)(q, k, v)
    ours = ours.transpose(1, 2).reshape(1, n, heads * d)  # [B, N, H*D] as HF's
    rows = list(global_tokens)
    torch.testing.assert_close(ours[:, rows], hf[:, rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("n", "global_tokens", "causal", "q_len"),
    [(300, (0, -1, 7), True, None), (256, (0, 100), False, None), (300, (5, 290), False, 64)],
)
def test_flex_longformer_follows(n, global_tokens, causal, q_len):
    params = LongformerParams(5, 1, global_tokens, causal, separate_global_qkv=True)
    flex, plain = FlexLongformer(params), Longformer(params)
    inputs = Inputs(1, 2, n, 16, seed=3, causal=causal, q_len=q_len)
    assert flex.not_supported_reasons(inputs) == []
    assert_matches_reference(flex, inputs, atol=1e-5, rtol=1e-5, grads=False)
    q, k, v = inputs.make_qkv()
    torch.testing.assert_close(flex.prepare(inputs)(q, k, v), plain.prepare(inputs)(q, k, v),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def test_projections_are_seeded_and_their_own_stream():
    a, b, c = (global_projections(Inputs(1, 1, 8, 4, seed=s)) for s in (0, 0, 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])
    q, _, _ = Inputs(1, 1, 8, 4, seed=0).make_qkv()
    assert not torch.equal(a[0].flatten(), q.flatten()[:16]), "not the inputs' own draws"


def test_flops_count_the_projections():
    inputs = Inputs(2, 4, 1024, 64, kv_heads=2)
    shared, separate = (
        make(False, window=64, global_tokens=(0, -1)),
        make(window=64, global_tokens=(0, -1)),
    )
    extra = 2 * 64 * 64 * 2 * (4 * 2 + 2 * 2 * 1024)  # 2 D^2 per projected vector
    assert separate.forward_flops(inputs) == shared.forward_flops(inputs) + extra
    assert projection_flops(inputs, 2) == extra
    # nothing to project without global tokens; decoding: only the global rows among the queries
    assert make(window=64).forward_flops(inputs) == make(False, window=64).forward_flops(inputs)
    decode = Inputs(2, 4, 1024, 64, kv_heads=2, q_len=8)
    gap = separate.forward_flops(decode) - shared.forward_flops(decode)
    assert gap == 2 * 64 * 64 * 2 * (4 * 1 + 2 * 2 * 1024)  # the last position only


def test_memory_stays_linear_and_is_counted():
    n = 2048
    backend = make(window=16, global_tokens=(0, 700, -1))
    for grad in (False, True):
        inputs = Inputs(1, 2, n, 16, requires_grad=grad)
        assert 0 < largest_intermediate(backend, inputs) < n * n // 4
        kv = 1 * 2 * n * 16 * 4
        added = backend.estimate_bytes(inputs) - make(False, **_same(backend)).estimate_bytes(
            inputs
        )
        assert added == 2 * kv * (2 if grad else 1)


def _same(backend: Longformer) -> dict:
    p = backend.params
    return {"window": p.window, "dilation": p.dilation, "global_tokens": p.global_tokens}


def test_reference_is_not_one_mask():
    """The separate reference differs from softmax under the mask exactly on the global rows."""
    inputs = Inputs(1, 2, 40, 8, seed=1)
    q, k, v = inputs.make_qkv()
    backend = make(window=3, global_tokens=(2, 20))
    rows = torch.arange(40)
    ref = backend.reference(inputs, q, k, v, rows)
    plain = masked_attention(q, k, v, backend.mask(inputs, q, k), rows)
    differ = (ref - plain).abs().amax(dim=(0, 1, 3)) > 1e-6  # [N]
    assert differ.nonzero().flatten().tolist() == [2, 20]
