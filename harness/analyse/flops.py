"""The peak FLOP rates of known GPUs, for the fraction of peak a backend achieves. A row's
useful FLOPs are stored by the sweep (``flops`` column, ``harness.measure.flops``)."""

from __future__ import annotations

import re

# Dense (no structured sparsity) FP16/BF16 tensor-core peaks, TFLOP/s, from NVIDIA's datasheets
# (half of the "with sparsity" figure they print), keyed by a word of get_device_name().
PEAK_DENSE_HALF_TFLOPS: dict[str, float] = {
    "H100": 989.0,  # H100 SXM5 datasheet, 1,979 sparse; the SXM part is "NVIDIA H100 80GB HBM3"
    "H100 PCIe": 756.0,  # H100 PCIe datasheet, 1,513 sparse
    "H100 NVL": 835.0,  # H100 NVL datasheet, 1,671 sparse
    "H200": 989.0,  # H200 SXM datasheet, 1,979 sparse
    "H200 NVL": 835.0,  # H200 NVL datasheet, 1,671 sparse
    "A100": 312.0,  # A100 datasheet (SXM4 and PCIe alike), 624 sparse
    "L40S": 362.05,  # L40S datasheet, "362.05 | 733" TFLOPS
    "L4": 121.0,  # L4 datasheet, 242 sparse
    "A10": 125.0,  # A10 datasheet, 250 sparse (the AWS A10G differs and is left out)
    "V100": 125.0,  # V100 SXM2 datasheet, FP16 tensor performance (Volta has no sparsity)
    "V100-PCIE": 112.0,  # V100 PCIe datasheet; torch names it "Tesla V100-PCIE-16GB"
    "V100S": 130.0,  # V100S PCIe datasheet
}


def peak_tflops(device_name: str) -> float | None:
    """Dense half-precision peak of a GPU named like ``torch.cuda.get_device_name()``; the most
    specific (longest) matching key wins; None for an unknown device or a CPU."""
    for key in sorted(PEAK_DENSE_HALF_TFLOPS, key=len, reverse=True):
        # A key must be a whole word: "A10" is not the A10G, "L4" not the L40S, "H200" not GH200.
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(key)}(?![A-Za-z0-9])", device_name, re.I):
            return PEAK_DENSE_HALF_TFLOPS[key]
    return None
