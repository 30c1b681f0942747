"""What runs inside one case process: the backend contract and registry, inputs, timing,
memory, machine conditions, the output check and the calibration. Imports ``store``."""
