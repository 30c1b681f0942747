"""Statistics on stored rows: scaling fits, crossovers, FLOP rates, regression tests.
Imports ``store`` only; never torch."""
