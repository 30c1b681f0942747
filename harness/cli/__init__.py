"""The command line: argument parsing, validation and the commands. The top layer.

Importing it lets runs of format 1 be read (``harness.cli.upgrade``): their family facts are
computed from the backends, which only this layer may import. The hook imports nothing until
such a run is read, so that ``--help`` loads neither pandas nor torch."""

import harness.store as _store


def _fill_facts(df):
    from harness.cli import upgrade

    return upgrade.fill_facts(df)


_store.fill_facts = _fill_facts
