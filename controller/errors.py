"""The error every input check raises: located at a file, a line and a field."""

from __future__ import annotations


class ConfigError(Exception):
    """A config problem, located: str() gives 'file:line: field: what is wrong'."""

    def __init__(self, path: str, line: int | None, where: str, message: str) -> None:
        self.path, self.line, self.where, self.message = path, line, where, message
        loc = f"{path}:{line}" if line else path
        super().__init__(f"{loc}: {where + ': ' if where else ''}{message}")


def dotted(path) -> str:
    """A path in a document as its field name: ('firewall', 'rules', 3) -> 'firewall.rules[3]'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
