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
