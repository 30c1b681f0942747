"""The stored result: its schema (statuses, case key, columns), the run folder (results.csv,
meta.json, its lock), resuming and baselines. The bottom layer: imports nothing else of the
harness and never torch."""

# Fills the family facts of a format-1 run's rows (``records.FACT_COLUMNS``) from the backends,
# ``(DataFrame) -> DataFrame``: set by the command line (``harness.cli``), which may import
# them; this layer may not. None: such a run is refused with a line saying how to upgrade it.
fill_facts = None
