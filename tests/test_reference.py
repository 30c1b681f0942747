from __future__ import annotations

import torch

from harness.measure.inputs import Inputs
from harness.measure.reference import check_rows, masked_attention


def test_unmasked_reference_is_sdpa():
    q, k, v = Inputs(2, 3, 50, 8, seed=1).make_qkv()
    ref = masked_attention(q, k, v, compute_dtype=torch.float32)
    torch.testing.assert_close(ref, torch.nn.functional.scaled_dot_product_attention(q, k, v))


def test_rows_and_mask_select_the_same_as_the_full_matrix():
    q, k, v = Inputs(1, 2, 40, 8, seed=2).make_qkv()
    mask = torch.rand(1, 2, 40, 40, generator=torch.Generator().manual_seed(0)) > 0.5
    mask[..., 0] = True
    rows = torch.tensor([0, 7, 39])
    full = masked_attention(q, k, v, mask)
    part = masked_attention(q, k, v, mask[:, :, rows], rows)
    torch.testing.assert_close(part, full[:, :, rows])
    assert full.dtype == torch.float64  # the reference is more precise than float32 inputs


def test_check_rows():
    rows = check_rows(1000, 16, seed=0, must=(-1, 500))
    assert rows.numel() == 16 and rows.unique().numel() == 16
    assert {0, 500, 999} <= set(rows.tolist())
    assert check_rows(10, 16, seed=0).tolist() == list(range(10))


def test_inputs_are_random_and_reproducible():
    a = Inputs(1, 2, 16, 8, seed=5).make_qkv()
    b = Inputs(1, 2, 16, 8, seed=5).make_qkv()
    c = Inputs(1, 2, 16, 8, seed=6).make_qkv()
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # q, k and v differ
    assert a[0].std() > 0.5


def test_grouped_query_reference_shares_each_kv_head() -> None:
    """Query head h reads key/value head h // (H / Hkv): the same as repeating k and v."""
    from harness.measure.inputs import Inputs

    inputs = Inputs(2, 6, 10, 4, kv_heads=2, seed=3)
    q, k, v = inputs.make_qkv()
    assert k.shape == (2, 2, 10, 4) and q.shape == (2, 6, 10, 4)
    grouped = masked_attention(q, k, v)
    for h in range(6):
        alone = masked_attention(
            q[:, h : h + 1], k[:, h // 3 : h // 3 + 1], v[:, h // 3 : h // 3 + 1]
        )
        torch.testing.assert_close(grouped[:, h : h + 1], alone)


def test_reference_mask_places_decoding_queries_last_and_keeps_documents() -> None:
    from harness.measure.inputs import Inputs
    from harness.measure.reference import reference_mask
    from harness.measure.registry import get_backend_class

    full = get_backend_class("full-naive")
    causal = full(full.Params(causal=True))
    n, m = 40, 5
    inputs = Inputs(1, 1, n, 4, q_len=m, documents=3, seed=2, causal=True)
    q, k, _ = inputs.make_qkv()
    mask = reference_mask(causal, inputs, q, k, torch.arange(m))[0, 0]  # [M, N]
    doc = inputs.document_ids()
    for r in range(m):
        p = n - m + r
        expected = (torch.arange(n) <= p) & (doc == doc[p])
        assert torch.equal(mask[r], expected)


def test_err_vs_full_compares_with_exact_attention_of_the_same_problem():
    """A causal full-attention backend is exact: its err_vs_full is rounding, not the distance
    to attention over the future keys; the same within packed documents."""
    from attention_impls.full import FullNaive, FullParams
    from harness.measure.case import Case
    from harness.measure.timing import TimingSettings
    from harness.measure.worker import check_output

    for inputs in (
        Inputs(1, 2, 96, 16, causal=True, seed=3),
        Inputs(1, 2, 96, 16, documents=3, seed=3),
        Inputs(1, 2, 96, 16, q_len=8, causal=True, seed=3),
    ):
        backend = FullNaive(FullParams(causal=inputs.causal))
        q, k, v = inputs.make_qkv()
        out = backend.prepare(inputs)(q, k, v)
        case = Case(backend, inputs, "fwd", TimingSettings(), check_rows=200)
        check = check_output(case, out, q, k, v)
        assert check["check_ok"] and check["err_vs_full"] < 1e-5, (inputs, check)
