"""What can go wrong with a run folder, as exceptions of their own (no pandas here: the command
line catches them without loading what reads runs)."""


class RunFolderError(ValueError):
    """The folder is not a readable run."""


class StorageError(OSError):
    """A row could not be written (a full disk, an I/O error); the rows before it are intact."""
