"""Facts a backend's family declares and every row stores, so that analysis needs no registry:
the promised cost as the length grows (``Promise``), stored as its text (``"O(n log n)"``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_SUPERSCRIPTS = str.maketrans("0123456789.", "⁰¹²³⁴⁵⁶⁷⁸⁹·")
_PLAIN = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹·", "0123456789.")
_TEXT = re.compile(r"^O\(n(?:\^?(?P<power>[0-9.]+))?(?P<log> log n)?\)$")


@dataclass(frozen=True)
class Promise:
    """Cost ``n ** power`` (times ``log n`` when ``log``), in time and in memory."""

    power: float = 1.0
    log: bool = False

    @property
    def text(self) -> str:
        power = "" if self.power == 1 else f"{self.power:g}".translate(_SUPERSCRIPTS)
        return f"O(n{power}{' log n' if self.log else ''})"

    @classmethod
    def parse(cls, text: str) -> Promise | None:
        """The promise a row stores as ``text``; None for an empty or unknown one."""
        match = _TEXT.match(str(text).translate(_PLAIN).strip())
        if not match:
            return None
        return cls(float(match["power"] or 1), bool(match["log"]))

    def cost(self, n: np.ndarray) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return n**self.power * (np.log(n) if self.log else 1.0)
