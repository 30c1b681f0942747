"""Formatting for people: tables, plots, documents, the report and the comparison.
Imports ``analyse`` and ``store``; never torch."""
