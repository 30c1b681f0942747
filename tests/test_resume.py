"""--resume may not change what a run measures: the differing options are named."""

from __future__ import annotations

from harness.store.resume import differences

FIRST = {
    "device": "cpu",
    "threads": 2,
    "config": {
        "lengths": [512, 1024], "passes": ["fwd", "fwdbwd"], "dtype": "float32", "batch": 1,
        "heads": 4, "head_dim": 64, "seed": 0, "processes": 1, "check_rows": 128,
        "case_timeout_s": 300.0,
        "backends": {"full-naive": {"causal": False}, "longformer": {"window": 256}},
        "timing": {"warmup_s": 0.2, "min_time_s": 0.5, "min_repeats": 5, "max_time_s": 60.0},
    },
}  # fmt: skip


def changed(**config) -> dict:
    return {**FIRST, "config": {**FIRST["config"], **config}}


def test_the_same_sweep_may_resume():
    assert differences(FIRST, FIRST) == []
    as_built = changed(
        lengths=(512, 1024),
        backends={"full-naive": {"causal": False}, "longformer": {"window": 256}},
    )
    assert differences(FIRST, as_built) == []  # tuples as built, lists as stored


def test_each_differing_option_is_named():
    assert differences(FIRST, changed(dtype="float64", batch=2, seed=7)) == [
        "--batch 2 (the run has 1)", "--dtype float64 (the run has float32)",
        "--seed 7 (the run has 0)",
    ]  # fmt: skip
    assert differences(FIRST, {**FIRST, "threads": 1, "device": "cuda"}) == [
        "--device cuda (the run has cpu)",
        "--threads 1 (the run has 2)",
    ]
    assert differences(FIRST, changed(backends={"full-naive": {"causal": False}})) == [
        "--backends full-naive (the run has full-naive longformer)"
    ]
    params = changed(backends={"full-naive": {"causal": False}, "longformer": {"window": 64}})
    assert differences(FIRST, params) == [
        'longformer\'s parameters {"window":64} (the run has {"window":256})'
    ]
    timing = changed(timing={**FIRST["config"]["timing"], "min_time_s": 0.1})
    assert differences(FIRST, timing) == ["--min-time 0.1 (the run has 0.5)"]
    assert differences(FIRST, changed(lengths=[512])) == ["--lengths 512 (the run has 512 1024)"]


def test_grids_are_compared_and_named():
    grid = changed(dtype=["float32"], batch=[1], heads=[4], head_dim=[64], causal=[False],
                   params={"window": [128, 256]})  # fmt: skip
    # a run stored before grids held one value per axis: the same sweep as a grid of one
    assert differences(FIRST, changed(dtype=["float32"], batch=[1], heads=[4])) == []
    other = changed(causal=[True, False], kv_heads=[2], q_len=[1], documents=[1, 4],
                    passes=["fwd", "bwd"], params={"window": [128]})  # fmt: skip
    assert differences(grid, other) == [
        "--causal on off (the run has off)",
        "--documents 1 4 (the run has None)",
        "--kv-heads 2 (the run has None)",
        "backend parameter window 128 (the run has 128 256)",
        "--modes fwd bwd (the run has fwd fwdbwd)",
        "--q-len 1 (the run has None)",
    ]
    lists = changed(params={"global_tokens": [[0, 5]]})
    assert differences(lists, changed(params={})) == [
        "backend parameter global_tokens unset (the run has [0,5])"
    ]


def test_the_input_distributions_are_an_axis_and_older_runs_drew_gaussian():
    assert differences(FIRST, changed(distribution=["gaussian"])) == []
    both = changed(distribution=["gaussian", "structured"])
    assert differences(FIRST, both) == ["--inputs gaussian structured (the run has gaussian)"]
    assert differences(both, changed(distribution=["structured"])) == [
        "--inputs structured (the run has gaussian structured)"
    ]
    # a run of format 4 (a grid, before the inputs axis) resumes as Gaussian inputs
    grid = changed(params={}, causal=[False], documents=[1])
    assert (
        differences(grid, {**grid, "config": {**grid["config"], "distribution": ["gaussian"]}})
        == []
    )


def test_parameters_added_since_a_run_take_the_value_it_computed_with():
    """A run recorded before a backend gained a parameter resumes when the parameter keeps what
    the run computed (Longformer's global rows on q, k, v), and is another sweep when the new
    default computes something else (BigBird's plan per head, Reformer's 2N/c buckets)."""
    first = changed(backends={"longformer": {"window": 256}, "bigbird": {"block_size": 64},
                              "reformer": {"n_hashes": 4}})  # fmt: skip
    same = changed(backends={
        "longformer": {"window": 256, "separate_global_qkv": False},
        "bigbird": {"block_size": 64, "shared_random_plan": True},
        "reformer": {"n_hashes": 4, "buckets_per_chunk": 1, "unscaled_logits": False},
    })  # fmt: skip
    assert differences(first, same) == []
    now = changed(backends={
        "longformer": {"window": 256, "separate_global_qkv": False},
        "bigbird": {"block_size": 64, "shared_random_plan": False},
        "reformer": {"n_hashes": 4, "buckets_per_chunk": 2, "unscaled_logits": False},
    })  # fmt: skip
    found = differences(first, now)
    assert [f.split("'")[0] for f in found] == ["bigbird", "reformer"], found
