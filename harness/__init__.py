"""attention-bench harness: the machinery that runs attention backends and measures them.

The Python API (``harness.cli.api``) is re-exported here, imported on first use so that the
layers below do not pay for it::

    from harness import SweepConfig, register, report, run_sweep
"""

_API = ("AttentionBackend", "CompareSettings", "SweepConfig", "TimingSettings", "backend_names",
        "compare", "register", "report", "run_sweep")  # fmt: skip

__all__ = ["api", *_API]


def __getattr__(name: str):
    if name == "api" or name in _API:
        from harness.cli import api

        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
