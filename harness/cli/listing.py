"""``--list-backends``: every registered backend, and whether it can run on this machine."""

from __future__ import annotations

import dataclasses

import pandas as pd
import torch

from harness.measure.inputs import Inputs, dtype_name
from harness.measure.registry import backend_names, get_backend_class

# The problem's axes a backend may compute besides plain attention (``harness.measure.inputs``),
# by the short name the table shows
AXES = {"causal": "causal", "gqa": "grouped-query", "decode": "q_len != kv_len",
        "docs": "packed documents"}  # fmt: skip


def supported_axes(cls: type) -> dict[str, bool]:
    """Which of ``AXES`` a backend class computes, from its declarations."""
    return {
        "causal": any(f.name == "causal" for f in dataclasses.fields(cls.Params)),
        "gqa": cls.supports_gqa,
        "decode": cls.supports_decoding,
        "docs": cls.supports_documents,
    }


def backend_table(device: str, dtype: torch.dtype, seq_len: int = 1024) -> pd.DataFrame:
    """One row per backend; "shapes": the axes it computes (``AXES``: causal, grouped-query,
    decoding, packed documents; the others it refuses with a reason); "runs here" is yes,
    forward only (no backward pass here), or no."""
    fwd = Inputs(1, 4, seq_len, 64, dtype=dtype, device=device)
    fwdbwd = Inputs(1, 4, seq_len, 64, dtype=dtype, device=device, requires_grad=True)
    rows = []
    for name in backend_names():
        cls = get_backend_class(name)
        backend = cls()
        reasons = backend.not_supported_reasons(fwd) + backend.param_errors(seq_len)
        runs = "no"
        if not reasons:
            reasons = backend.not_supported_reasons(fwdbwd)
            runs = "forward only" if reasons else "yes"
        rows.append(
            {
                "backend": name,
                "family": cls.family,
                "devices": " ".join(sorted(cls.devices)),
                "dtypes": " ".join(sorted(dtype_name(d) for d in cls.dtypes)),
                "backward": "yes" if cls.supports_backward else "no",
                "shapes": " ".join(k for k, v in supported_axes(cls).items() if v) or "-",
                "parameters (defaults)": backend.label().removeprefix(name).strip("()") or "-",
                f"runs here ({device}, {dtype_name(dtype)})": runs,
                "why not": "; ".join(reasons),
            }
        )
    return pd.DataFrame(rows)


def format_table(df: pd.DataFrame, width: int = 120) -> str:
    """The table within ``width`` columns: long cells wrap, each reason under its backend."""
    from harness.present.text_table import fit

    # the "runs here (device, dtype)" header wraps too: long family and backend names need room
    runs = [c for c in df.columns if c.startswith("runs here")]
    wrap = ["dtypes", "parameters (defaults)", "shapes", "devices", *runs]
    return fit(df.astype(str), width, wrap=wrap, below="why not")


def format_json(df: pd.DataFrame, device: str, dtype: torch.dtype) -> str:
    """``--list-backends --format json``: one object per backend, with plain keys (the table's
    column headers are for people) and the device and dtype it was asked for."""
    runs = next(c for c in df.columns if c.startswith("runs here"))
    keys = {"parameters (defaults)": "defaults", runs: "runs_here", "why not": "why_not"}
    axes = pd.DataFrame(
        [{f"supports_{k}": v for k, v in supported_axes(get_backend_class(n)).items()}
         for n in df["backend"]], index=df.index,
    )  # fmt: skip
    plain = df.drop(columns="shapes").rename(columns=keys).join(axes)
    implementation = [get_backend_class(n).implementation for n in df["backend"]]
    plain = plain.assign(implementation=implementation, device=device, dtype=dtype_name(dtype))
    return plain.to_json(orient="records", indent=1)
