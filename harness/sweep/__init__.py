"""Many cases: the sweep config, the runner that gives each case its own process, repeats,
the machine description and the load generator. Imports ``measure`` and ``store``."""
