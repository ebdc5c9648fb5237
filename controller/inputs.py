"""What a file must be before any parser of ours sees it: every input is untrusted.

Three gates, each raising a located `ConfigError`:

- `read_text`: a regular file (a FIFO or a device would block the event loop or never end), at
  most `MAX_BYTES`, valid UTF-8 (the error names the line of the first bad byte).
- `check_yaml`: the YAML's shape, from libyaml's event stream, which is iterative: nesting at
  most `MAX_DEPTH` deep (libyaml's composer recurses in C and a 100 kB file of `[` crashed the
  process), aliases adding at most `MAX_ALIASED` nodes ("billion laughs": 500 bytes became
  gigabytes), no alias inside the node it names, and only scalars as mapping keys.
- `check_plain`: the data is what JSON can say, as Kubernetes' API requires: string keys,
  finite numbers (`.nan` passes every minimum and maximum), and no other types.
"""

from __future__ import annotations

import math
import os
import stat
from typing import Any

import yaml

from controller.errors import ConfigError, dotted

MAX_BYTES = 64 << 20
MAX_DEPTH = 64
MAX_ALIASED = 100_000  # nodes aliases may add: plenty for reuse, nothing like an expansion bomb
_PLAIN = (str, int, float, bool, type(None))


def _error(path: str, line: int | None, message: str, where: str = "") -> ConfigError:
    return ConfigError(path, line, where, message)


def read_text(path: str) -> str:
    """The text of a regular file of at most MAX_BYTES, decoded as UTF-8.

    Raises:
        ConfigError: not a regular file, too large, unreadable, or not UTF-8 (with the line).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _error(path, None, f"cannot read: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _error(path, None, "cannot read: not a regular file")
    with os.fdopen(fd, "rb") as fh:
        if info.st_size > MAX_BYTES:
            raise _error(path, None, f"cannot read: larger than {MAX_BYTES >> 20} MiB")
        try:
            data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise _error(path, None, f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise _error(path, None, f"cannot read: larger than {MAX_BYTES >> 20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _error(path, line, f"not UTF-8: byte {data[exc.start]:#04x}") from None


def check_yaml(path: str, text: str, loader: type) -> None:
    """Refuse YAML nested deeper than MAX_DEPTH, whose aliases add more than MAX_ALIASED nodes,
    with an alias inside the node it names, or with a collection as a mapping key.

    Syntax errors are left to the loader, which reports them with their line.

    Raises:
        ConfigError: located at the offending node's line.
    """
    open_: list[list] = []  # per open collection: [is mapping, items so far, anchor, size then]
    sizes: dict[str, int] = {}  # anchor -> nodes it expands to
    nodes = aliased = 0
    try:
        for event in yaml.parse(text, Loader=loader):
            line = event.start_mark.line + 1
            is_key = bool(open_) and open_[-1][0] and open_[-1][1] % 2 == 0
            if isinstance(event, yaml.AliasEvent):
                if any(frame[2] == event.anchor for frame in open_):
                    raise _error(path, line, f"alias *{event.anchor} is inside the node it names")
                nodes += sizes.get(event.anchor, 1)
                aliased += sizes.get(event.anchor, 1)
            elif isinstance(event, yaml.ScalarEvent):
                nodes += 1
                if event.anchor:
                    sizes[event.anchor] = 1
            elif isinstance(event, yaml.CollectionStartEvent):
                if is_key:
                    raise _error(path, line, "a mapping key must be a plain value, not a list")
                if len(open_) >= MAX_DEPTH:
                    raise _error(path, line, f"nested more than {MAX_DEPTH} deep")
                nodes += 1
                open_.append(
                    [isinstance(event, yaml.MappingStartEvent), 0, event.anchor, nodes - 1]
                )
                continue
            elif isinstance(event, yaml.CollectionEndEvent):
                _, _, anchor, before = open_.pop()
                if anchor:
                    sizes[anchor] = nodes - before
            else:
                continue
            if aliased > MAX_ALIASED:
                raise _error(path, line, f"aliases add more than {MAX_ALIASED:,} nodes")
            if open_:
                open_[-1][1] += 1
    except yaml.YAMLError:
        return


def check_plain(path: str, data: Any, line_of) -> None:
    """Refuse data JSON cannot say: non-string keys, NaN or infinite numbers, other types.

    `line_of(where)` gives the line of a path in the document, for the error.

    Raises:
        ConfigError: located at the first offending value.
    """
    stack: list[tuple[tuple, Any]] = [((), data)]
    while stack:
        where, value = stack.pop()
        problem = None
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    problem, where = f"the key {key!r} is not a string: quote it", where + (key,)
                    break
                stack.append((where + (key,), item))
        elif isinstance(value, list):
            stack.extend((where + (i,), item) for i, item in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            problem = f"{value!r} is not a number this can use"
        elif not isinstance(value, _PLAIN):
            problem = f"a {type(value).__name__} value, which JSON cannot say: quote it"
        if problem:
            raise _error(path, line_of(where), problem, dotted(where))
