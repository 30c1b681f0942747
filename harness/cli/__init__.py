"""The command line: argument parsing, validation and the commands. The top layer.

Importing it lets runs of format 1 be read (``harness.cli.upgrade``): their family facts are
computed from the backends, which only this layer may import."""

from harness.cli import upgrade as _upgrade

_upgrade.install()
