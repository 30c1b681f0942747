"""FlexAttention backends: outputs against the dense masked reference and the plain backends, their
mask_mods against the plain ``mask``, the BlockMask built without an N x N tensor, and the reasons
they give where they cannot run.

Compiled FlexAttention costs seconds per new shape on CPU, so the compiled tests share few shapes
(B=1, H=2, D=16; one length per backend that is a multiple of 128, one that is not). Reformer's
n_hashes > 1 needs the log-sum-exp that compiled CPU flex lacks: its merge is checked here with
the uncompiled flex_attention (forward, float64), and compiled with gradients on CUDA.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import warnings

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, create_mask, flex_attention

import attention_impls.flex as fx
from attention_impls.bigbird import BigBird, BigBirdParams, FlexBigBird
from attention_impls.flex_reformer import FlexReformer
from attention_impls.longformer import FlexLongformer, Longformer, LongformerParams
from attention_impls.lsh import rotations
from attention_impls.reformer import Reformer, ReformerParams
from harness.measure.inputs import Inputs
from harness.measure.registry import get_backend_class
from tests.backend_checks import LargestTensor, assert_matches_reference


@pytest.fixture(autouse=True)
def _many_shapes():
    # dynamo gives up compiling (and runs flex eagerly) after 8 shapes of one function
    with torch._dynamo.config.patch(recompile_limit=64):
        yield


@pytest.fixture
def eager_flex(monkeypatch):
    """Uncompiled flex_attention in place of the compiled one: log-sum-exp on CPU, float64."""
    monkeypatch.setattr(fx, "compiled_flex", lambda: flex_attention)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(without torch.compile|deprecated).*")
        yield


def check_forward(flex, plain, inputs: Inputs, atol: float = 1e-5) -> None:
    """The flex backend against the dense masked reference and the plain backend, same inputs."""
    assert_matches_reference(flex, inputs, atol=atol, rtol=atol, grads=False)
    q, k, v = inputs.make_qkv()
    out = flex.prepare(inputs)(q, k, v)
    torch.testing.assert_close(out, plain.prepare(inputs)(q, k, v), atol=atol, rtol=atol)


def full_mask(mod, n: int, heads: int | None = None) -> torch.Tensor:
    """``[N, N]``, or ``[H, N, N]`` for ``heads``."""
    mask = create_mask(mod, 1, heads or 1, n, n, "cpu")[0]  # [H, N, N]
    return mask[0] if heads is None else mask


# -- Longformer ----------------------------------------------------------------------------------

LONGFORMER = [  # (N, window, dilation, global_tokens, causal)
    (300, 5, 1, (), False),
    (300, 4, 2, (0, -1, 7), True),
    (300, 7, 3, (150,), False),
    (300, 16, 1, (0, 0, -300), True),
    (256, 8, 1, (0, -1), False),
    (256, 3, 2, (), True),
]


@pytest.mark.parametrize(("n", "window", "dilation", "global_tokens", "causal"), LONGFORMER)
def test_longformer_forward(n, window, dilation, global_tokens, causal):
    params = LongformerParams(window, dilation, global_tokens, causal)
    check_forward(FlexLongformer(params), Longformer(params), Inputs(1, 2, n, 16, seed=n))


@pytest.mark.parametrize("seed", range(3))
def test_longformer_mask_mod_is_the_mask(seed):
    gen = torch.Generator().manual_seed(seed)

    def pick(high: int) -> int:
        return int(torch.randint(high, (), generator=gen))

    for _ in range(10):
        n = 2 + pick(150)
        globals_ = tuple(pick(2 * n) - n for _ in range(pick(4)))
        dilation = [1, 2, 3, n, n + 5][pick(5)]
        params = LongformerParams(1 + pick(n - 1), dilation, globals_, bool(pick(2)))
        backend, inputs = FlexLongformer(params), Inputs(1, 1, n, 4)
        q, k, _ = inputs.make_qkv()
        assert torch.equal(full_mask(backend.mask_mod(inputs), n), backend.mask(inputs, q, k)[0, 0])


# -- BigBird -------------------------------------------------------------------------------------

BIGBIRD = [  # (N, block_size, global_blocks, random_blocks): tile 128 for b = 16, 64 for b = 64
    (300, 16, 1, 3),
    (300, 16, 0, 3),
    (300, 16, 0, 0),
    (300, 16, 1, 0),
    (256, 64, 1, 3),
    (256, 64, 0, 3),
]


@pytest.mark.parametrize(("n", "b", "g", "r"), BIGBIRD)
@pytest.mark.parametrize("shared", [False, True])
def test_bigbird_forward(n, b, g, r, shared):
    params = BigBirdParams(b, g, r, shared_plan=shared)
    check_forward(FlexBigBird(params), BigBird(params), Inputs(1, 2, n, 16, seed=7))


@pytest.mark.parametrize(
    ("n", "b", "g", "r"),
    [*BIGBIRD, (100, 16, 1, 20), (40, 16, 2, 1), (37, 5, 0, 2), (17, 16, 0, 3)],
)
@pytest.mark.parametrize("shared", [False, True])
def test_bigbird_mask_mod_is_the_mask(n, b, g, r, shared):
    """Each head's plan (one for all with ``shared_plan``), as the BlockMask's heads see it."""
    backend = FlexBigBird(BigBirdParams(b, g, r, shared_plan=shared))
    inputs = Inputs(1, 3, n, 4, seed=3)
    q, k, _ = inputs.make_qkv()
    assert backend.mask_heads(inputs) == (None if shared else 3)
    mask = backend.mask(inputs, q, k).expand(1, 3, n, n)[0]  # [H, N, N]
    assert torch.equal(full_mask(backend.mask_mod(inputs), n, heads=3), mask)


# -- Reformer ------------------------------------------------------------------------------------

REFORMER_CPU = [  # (N, chunk_size, shared_qk), one round: padded to 304 (tile 128) and exact
    (300, 16, True),
    (300, 16, False),
    (256, 64, True),
    (256, 64, False),
]


@pytest.mark.parametrize(("n", "c", "shared"), REFORMER_CPU)
def test_reformer_forward(n, c, shared):
    params = ReformerParams(n_hashes=1, chunk_size=c, shared_qk=shared)
    check_forward(FlexReformer(params), Reformer(params), Inputs(1, 2, n, 16, seed=n))


@pytest.mark.parametrize(
    "conventions",
    [dict(unscaled_logits=True), dict(buckets_per_chunk=1), dict(look_back_across_rounds=True)],
)
def test_reformer_conventions_one_round(conventions):
    """The conventions flex-reformer follows, compiled on CPU (one round: the look-back across
    rounds is the same pattern there, and runs)."""
    params = ReformerParams(n_hashes=1, chunk_size=16, **conventions)
    inputs = Inputs(1, 2, 300, 16, seed=1)
    assert FlexReformer(params).not_supported_reasons(inputs) == []
    check_forward(FlexReformer(params), Reformer(params), inputs)


@pytest.mark.parametrize(
    "conventions",
    [
        dict(unscaled_logits=True),
        dict(count_per_round=True),
        dict(unscaled_logits=True, count_per_round=True),
    ],
)
@pytest.mark.parametrize(("n", "c"), [(300, 16), (45, 8)])
def test_reformer_conventions_rounds_uncompiled(eager_flex, conventions, n, c):
    """Several rounds, merged with flex_attention's unfused implementation: logits unscaled, and
    pairs weighed per round (no count score_mod)."""
    params = ReformerParams(n_hashes=3, chunk_size=c, **conventions)
    inputs = Inputs(2, 2, n, 16, dtype=torch.float64, seed=n)
    check_forward(FlexReformer(params), Reformer(params), inputs, atol=1e-12)


def test_reformer_look_back_across_rounds_refused():
    params = ReformerParams(n_hashes=2, look_back_across_rounds=True)
    reasons = FlexReformer(params).not_supported_reasons(Inputs(1, 2, 1024, 16, device="cuda"))
    assert any("look_back_across_rounds is not computed" in r for r in reasons)
    one_round = ReformerParams(n_hashes=1, look_back_across_rounds=True)
    assert FlexReformer(one_round).not_supported_reasons(Inputs(1, 2, 1024, 16)) == []


@pytest.mark.parametrize(
    ("n", "params"),
    [
        (300, dict(n_hashes=4, chunk_size=16)),
        (300, dict(n_hashes=4, chunk_size=16, shared_qk=False)),
        (45, dict(n_hashes=3, chunk_size=8, n_buckets=4)),  # few buckets: many repeated pairs
        (13, dict(n_hashes=2, chunk_size=8)),  # two chunks: no count needed
        (1, dict(n_hashes=4, chunk_size=4)),  # a single token attends itself
        (100, dict(n_hashes=2, chunk_size=8, shared_qk=False)),
    ],
)
def test_reformer_rounds_merged_uncompiled(eager_flex, n, params):
    """The round merge and the count score_mod, with flex_attention's unfused implementation."""
    params = ReformerParams(**params)
    inputs = Inputs(2, 2, n, 16, dtype=torch.float64, seed=n)
    check_forward(FlexReformer(params), Reformer(params), inputs, atol=1e-12)


@pytest.mark.parametrize(
    ("n", "c", "shared"),
    [*REFORMER_CPU, (1, 4, True), (13, 8, True), (45, 8, False), (40, 8, True)],
)
def test_reformer_sorted_mask_mod_is_the_mask(n, c, shared):
    """Read through one round's sort, the sorted-coordinate mask_mod is ``Reformer.mask``."""
    backend = FlexReformer(ReformerParams(n_hashes=1, chunk_size=c, shared_qk=shared))
    inputs = Inputs(1, 2, n, 8, seed=5)
    q, k, _ = inputs.make_qkv()
    sorted_mask = full_mask(backend.mask_mod(inputs), -(-n // c) * c)  # [Np, Np]
    _, slot_q, _, slot_k = backend.plain.sort_qk(inputs, q, k, rotations(inputs, backend.params))
    for h in range(2):
        rows, cols = slot_q[0, h, 0, :n], slot_k[0, h, 0, :n]
        token_mask = sorted_mask[rows][:, cols]  # [N, N]
        assert torch.equal(token_mask, backend.mask(inputs, q, k)[0, h])


# -- BlockMask, memory, compilation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "heads"),
    [(FlexLongformer(LongformerParams(9, 2, (3,))), 1), (FlexBigBird(), 1), (FlexBigBird(), 3)],
)
def test_block_mask_in_slabs_is_create_block_mask(monkeypatch, backend, heads):
    inputs = Inputs(1, heads, 700, 4)
    mod, tile, h = backend.mask_mod(inputs), backend.tile(inputs), backend.mask_heads(inputs)
    whole = create_block_mask(mod, None, h, 700, 700, device="cpu", BLOCK_SIZE=tile)
    monkeypatch.setattr(fx, "MASK_SLAB_ELEMENTS", 1)  # one tile of rows per slab
    slabs = fx.build_block_mask(mod, 700, "cpu", tile, heads=h)
    assert torch.equal(slabs.to_dense(), whole.to_dense())
    for name in ("kv_num_blocks", "full_kv_num_blocks", "q_num_blocks", "full_q_num_blocks"):
        assert torch.equal(getattr(slabs, name), getattr(whole, name)), name
    assert slabs.seq_lengths == (700, 700) and slabs.BLOCK_SIZE == whole.BLOCK_SIZE


@pytest.mark.parametrize(
    ("n", "b", "g", "r", "tile"),
    [(700, 64, 1, 3, 64), (700, 64, 1, 3, 128), (1024, 16, 0, 2, 128), (300, 16, 2, 1, 64),
     (256, 64, 2, 3, 64), (100, 50, 0, 1, 100)],
)  # fmt: skip
@pytest.mark.parametrize("shared", [False, True])
def test_bigbird_block_mask_from_its_blocks(n, b, g, r, tile, shared):
    """flex-bigbird's BlockMask made from the pattern on blocks (no mask_mod call per pair) is
    create_block_mask's: the same partial and full tiles, per head where the plans differ."""
    backend, inputs = FlexBigBird(BigBirdParams(b, g, r, shared_plan=shared)), Inputs(1, 3, n, 4)
    mod, heads = backend.mask_mod(inputs), backend.mask_heads(inputs)
    made = backend.block_mask(inputs, mod, tile)
    whole = create_block_mask(mod, None, heads, n, n, device="cpu", BLOCK_SIZE=tile)
    assert torch.equal(made.to_dense(), whole.to_dense())
    for name in ("kv_num_blocks", "full_kv_num_blocks", "q_num_blocks", "full_q_num_blocks"):
        assert torch.equal(getattr(made, name), getattr(whole, name)), name
    for name in ("kv", "full_kv"):  # the attended tiles, in create_block_mask's order
        count, idx = getattr(made, f"{name}_num_blocks"), getattr(made, f"{name}_indices")
        ref = getattr(whole, f"{name}_indices")
        keep = torch.arange(idx.shape[-1]) < count[..., None]
        assert torch.equal(idx[keep], ref[keep]), name
    assert made.seq_lengths == (n, n) and made.BLOCK_SIZE == whole.BLOCK_SIZE


def test_bigbird_block_mask_elsewhere_by_mask_mod():
    """Tiles that cut blocks, decoding and documents: create_block_mask's way."""
    backend = FlexBigBird(BigBirdParams(48, 1, 3))
    inputs = Inputs(1, 2, 700, 4)
    assert (
        fx.block_mask_from_blocks(torch.ones(1, 15, 15, dtype=torch.bool), 48, 700, 128, None)
        is None
    )
    mod = backend.mask_mod(inputs)
    made = backend.block_mask(inputs, mod, 128)
    assert torch.equal(made.to_dense(), create_block_mask(mod, None, 2, 700, 700, "cpu").to_dense())


def test_block_mask_compiled_beyond_eager_length(monkeypatch):
    """Long inputs build the BlockMask with compiled create_block_mask: the same tiles."""
    backend = FlexBigBird(BigBirdParams(64, 1, 3))
    inputs = Inputs(1, 1, 1000, 4)
    mod = backend.mask_mod(inputs)
    eager = fx.build_block_mask(mod, 1000, "cpu", 64)
    monkeypatch.setattr(fx, "EAGER_MASK_MAX_LEN", 0)
    compiled = fx.build_block_mask(mod, 1000, "cpu", 64)
    assert torch.equal(compiled.to_dense(), eager.to_dense())
    assert torch.equal(compiled.full_kv_num_blocks, eager.full_kv_num_blocks)


def _tensors(fn) -> list[torch.Tensor]:
    cells = [c.cell_contents for c in fn.__closure__ or ()]
    return [t for t in cells if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize(
    "backend",
    [
        FlexLongformer(LongformerParams(16, 2, (0, -1))),
        FlexBigBird(BigBirdParams(64, 1, 3)),
        FlexReformer(ReformerParams(n_hashes=1)),
    ],
)
def test_prepare_builds_no_quadratic_tensor(monkeypatch, backend):
    n = 2048
    inputs = Inputs(1, 2, n, 16)
    monkeypatch.setattr(fx, "MASK_SLAB_ELEMENTS", 1 << 16)  # slabs of 128 rows at this n
    with LargestTensor() as record:
        backend.prepare(inputs)
    assert 0 < record.largest <= 128 * n * 2  # one slab of mask_mod values, not n * n
    mod, heads = backend.mask_mod(inputs), backend.mask_heads(inputs)
    assert sum(t.numel() for t in _tensors(mod)) <= 2 * n + 256
    block_mask = fx.build_block_mask(mod, n, "cpu", backend.tile(inputs), heads=heads)
    tiles = -(-n // block_mask.BLOCK_SIZE[0])
    cells = tiles * tiles * (heads or 1)  # per head where the heads' patterns differ
    assert all(t.numel() <= cells for t in block_mask.as_tuple() if torch.is_tensor(t))


def test_reformer_score_mod_tables_are_linear(monkeypatch):
    """The count score_mod captures per-token tables: O(B H R^2 N), nothing N x N."""
    captured = {}

    def spy(q, k, v, **kwargs):
        captured.update(kwargs)
        return flex_attention(q, k, v, **kwargs)

    monkeypatch.setattr(fx, "compiled_flex", lambda: spy)
    b, h, n, rounds = 1, 2, 1000, 3
    inputs = Inputs(b, h, n, 8, dtype=torch.float64)
    backend = FlexReformer(ReformerParams(n_hashes=rounds, chunk_size=32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend.prepare(inputs)(*inputs.make_qkv())
    tables = _tensors(captured["score_mod"])
    assert tables and max(t.numel() for t in tables) <= b * h * rounds * 1024 * rounds


def test_the_flex_api_attention_impls_calls():
    """The signatures ``attention_impls.flex`` and ``flex_reformer`` call, as in torch 2.11's
    documentation and 2.13's source: a mismatch on another torch fails here, by name, rather
    than as a TypeError inside a compiled kernel on a GPU."""

    def params(fn) -> list[str]:
        return list(inspect.signature(fn).parameters)

    # device passed by position (build_block_mask), BLOCK_SIZE by keyword
    assert params(create_block_mask)[:7] == ["mask_mod", "B", "H", "Q_LEN", "KV_LEN", "device",
                                              "BLOCK_SIZE"]  # fmt: skip
    assert params(create_mask)[:6] == ["mod_fn", "B", "H", "Q_LEN", "KV_LEN", "device"]
    blocks = ["kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"]
    assert params(fx.BlockMask.from_kv_blocks)[:7] == [*blocks, "BLOCK_SIZE", "mask_mod",
                                                       "seq_lengths"]  # fmt: skip
    # flex_attention(q, k, v, block_mask=, scale=, score_mod=, return_aux=AuxRequest(lse=True))
    assert {"score_mod", "block_mask", "scale", "return_aux"} <= set(params(flex_attention))
    assert fx.AuxRequest(lse=True).lse is True
    assert hasattr(torch._dynamo.config, "recompile_limit")  # this module's fixture patches it


def test_compiled_once():
    assert fx.compiled_flex() is fx.compiled_flex()
    assert fx._compiled(create_block_mask) is fx._compiled(create_block_mask)


def test_tiles():
    assert fx.tile_for(64, "cpu") == 64 and fx.tile_for(256, "cpu") == 256
    assert fx.tile_for(16, "cpu") == fx.tile_for(96, "cpu") == 128
    assert fx.tile_for(64, "cuda") == 128 and fx.tile_for(256, "cuda") == 256
    assert FlexLongformer().tile(Inputs(1, 1, 64, 8)) == 128
    assert FlexReformer(ReformerParams(chunk_size=64)).tile(Inputs(1, 1, 64, 8)) == 64


# -- declarations and reasons --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "plain"),
    [(FlexLongformer, Longformer), (FlexBigBird, BigBird), (FlexReformer, Reformer)],
)
def test_registered_holding_the_plain_backend(cls, plain):
    assert get_backend_class(cls.name) is cls and not issubclass(cls, plain)
    assert cls.Params is plain.Params and cls.family == plain.family and cls.is_sparse
    assert cls.promise == plain.promise and type(cls().plain) is plain
    assert cls.supports_backward and torch.float64 not in cls.dtypes
    backend = cls()  # default Reformer parameters: 4 rounds, refused on CPU
    assert len(backend.not_supported_reasons(Inputs(1, 4, 1024, 64))) == (cls is FlexReformer)
    small, large = (backend.estimate_bytes(Inputs(1, 4, n, 64)) for n in (4096, 8192))
    assert large == 2 * small and small < 4 * 4096 * 4096 * 4  # [B, H, N, N] float32
    assert backend.estimate_bytes(Inputs(1, 4, 4096, 64, requires_grad=True)) > small
    if cls is not FlexReformer:  # the output and the float32 log-sum-exp and row maxima
        assert small == 4 * 4096 * 64 * 4 + 2 * 4 * 4096 * 4


@pytest.mark.parametrize("cls", [FlexLongformer, FlexBigBird, FlexReformer])
def test_cpu_reasons(cls):
    params = cls.Params(n_hashes=1) if cls is FlexReformer else cls.Params()
    backend = cls(params)
    assert backend.not_supported_reasons(Inputs(1, 4, 1024, 64)) == []
    reasons = backend.not_supported_reasons(Inputs(1, 4, 1024, 64, requires_grad=True))
    assert reasons == [
        f"compiled FlexAttention on CPU supports inference only in torch {torch.__version__} "
        "(no backward)"
    ]
    reasons = backend.not_supported_reasons(Inputs(1, 4, 1024, 64, dtype=torch.float64))
    assert len(reasons) == 1 and "dtype float64 not supported" in reasons[0]


def test_reformer_cpu_rounds_reason():
    reasons = FlexReformer(ReformerParams(n_hashes=4)).not_supported_reasons(Inputs(1, 4, 1024, 64))
    assert len(reasons) == 1 and "n_hashes 4 > 1" in reasons[0] and "return_lse" in reasons[0]
    reasons = FlexReformer(ReformerParams(n_hashes=0)).not_supported_reasons(Inputs(1, 4, 64, 8))
    assert any("n_hashes must be >= 1" in r for r in reasons)  # the plain parameter checks


def test_cuda_reasons_name_triton():
    reasons = fx.flex_reasons(Inputs(1, 4, 1024, 64, device="cuda", requires_grad=True))
    missing = importlib.util.find_spec("triton") is None
    assert reasons == (
        ["triton is not installed: torch.compile cannot build the CUDA kernel"] * missing
    )


# -- CUDA: compiled, forward and backward ----------------------------------------------------------

CUDA_CASES = [
    (FlexLongformer, Longformer, LongformerParams(8, 2, (0, -1), True), 300),
    (FlexBigBird, BigBird, BigBirdParams(64, 1, 3), 1000),
    (FlexReformer, Reformer, ReformerParams(n_hashes=1, chunk_size=32), 300),
    (FlexReformer, Reformer, ReformerParams(n_hashes=4, chunk_size=32), 1000),
    (FlexReformer, Reformer, ReformerParams(n_hashes=4, chunk_size=32, shared_qk=False), 300),
]


@pytest.mark.cuda
@pytest.mark.parametrize(("cls", "plain", "params", "n"), CUDA_CASES)
def test_cuda_forward_backward(cls, plain, params, n):
    inputs = Inputs(2, 2, n, 32, device="cuda", requires_grad=True)
    backend = cls(params)
    assert backend.not_supported_reasons(inputs) == []
    # Looser than CPU: kernels reduce in other orders than the dense reference's matmul.
    assert_matches_reference(backend, inputs, atol=2e-4, rtol=2e-4)
    q, k, v = inputs.make_qkv()
    out = backend.prepare(inputs)(q, k, v)
    torch.testing.assert_close(out, plain(params).prepare(inputs)(q, k, v), atol=2e-4, rtol=2e-4)


@pytest.mark.cuda
def test_cuda_bfloat16_runs():
    inputs = Inputs(1, 2, 1000, 64, dtype=torch.bfloat16, device="cuda")
    backend = FlexBigBird()
    out = backend.prepare(inputs)(*inputs.make_qkv())
    assert out.dtype == torch.bfloat16 and math.isfinite(out.float().abs().max().item())
