"""The stored result: its schema (statuses, case key, columns), the run folder (results.csv,
meta.json, its lock), resuming and baselines. The bottom layer: imports nothing else of the
harness and never torch."""
