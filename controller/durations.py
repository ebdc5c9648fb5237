"""Durations as users write them in config and in Kubernetes/Istio documents."""

from __future__ import annotations

_UNITS = (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
# google.protobuf.Duration's range (10,000 years), the most an Istio or Envoy duration can be.
MAX_SECONDS = 315_576_000_000


def parse_duration(value) -> float | None:
    """60, '60s', '500ms', '2m', '1h' (and Go-style sums such as '1m30s') as seconds.

    Returns None if unreadable or not positive. Source: Go's time.ParseDuration units, which
    Istio's and Kubernetes' duration fields accept.

    >>> parse_duration("1m30s"), parse_duration("500ms"), parse_duration("ten")
    (90.0, 0.5, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text, seconds = str(value).strip(), 0.0
        if not text:
            return None
        while text:
            number = len(text) - len(text.lstrip("0123456789."))
            if number == 0:
                return None
            rest = text[number:]
            unit = next(((u, k) for u, k in _UNITS if rest.startswith(u)), None)
            if unit is None:
                return None
            try:
                seconds += float(text[:number]) * unit[1]
            except ValueError:
                return None
            text = rest[len(unit[0]) :]
    return seconds if seconds > 0 else None


def located_seconds(doc, where: tuple, value) -> float:
    """Field value `value` of `doc` (a controller.config.Document) at `where` as seconds.

    Raises:
        ConfigError: located at `where`, for a value that is not a positive duration or is
            longer than protobuf's Duration (MAX_SECONDS), which Envoy would refuse.
    """
    seconds = parse_duration(value)
    if seconds is None:
        raise doc.error(where, f"{value!r} is not a positive duration (e.g. 30s, 500ms, 1m)")
    if seconds > MAX_SECONDS:
        raise doc.error(where, f"{value!r} is longer than {MAX_SECONDS:,} s (10,000 years)")
    return seconds
