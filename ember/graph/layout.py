"""Layouts: names for the axes of a tensor (``"NCHW"``, ``"[N,H,W,C]"``, ``"N..."``)."""

from __future__ import annotations

from ember.errors import EmberError


class Layout:
    """A tensor layout. ``Layout("NCHW")`` or ``Layout("[N,C,H,W]")``; ``"?"`` for an unnamed axis."""

    __slots__ = ("_names", "_ellipsis")

    def __init__(self, text: str = "") -> None:
        text = text.strip()
        self._ellipsis = -1
        if text.startswith("["):
            if not text.endswith("]"):
                raise EmberError(f"ember: bad layout '{text}'")
            parts = [p.strip() for p in text[1:-1].split(",")] if text[1:-1].strip() else []
        else:
            parts = []
            i = 0
            while i < len(text):
                if text.startswith("...", i):
                    parts.append("...")
                    i += 3
                else:
                    parts.append(text[i])
                    i += 1
        names: list[str] = []
        for p in parts:
            if p == "...":
                if self._ellipsis >= 0:
                    raise EmberError(f"ember: layout '{text}' has two '...'")
                self._ellipsis = len(names)
            else:
                names.append(p.upper() if p != "?" else p)
        if len([n for n in names if n != "?"]) != len({n for n in names if n != "?"}):
            raise EmberError(f"ember: layout '{text}' repeats an axis name")
        self._names = tuple(names)

    @property
    def empty(self) -> bool:
        return not self._names and self._ellipsis < 0

    def has_name(self, name: str) -> bool:
        return name.upper() in self._names

    def get_index_by_name(self, name: str) -> int:
        name = name.upper()
        if name not in self._names:
            raise EmberError(f"ember: layout {self} has no axis '{name}'")
        i = self._names.index(name)
        if 0 <= self._ellipsis <= i:
            return i - len(self._names)  # counted from the end
        return i

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def to_string(self) -> str:
        parts = list(self._names)
        if self._ellipsis >= 0:
            parts.insert(self._ellipsis, "...")
        return "[" + ",".join(parts) + "]"

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return f"<Layout: {self}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = Layout(other)
        if isinstance(other, Layout):
            return (self._names, self._ellipsis) == (other._names, other._ellipsis)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._names, self._ellipsis))
