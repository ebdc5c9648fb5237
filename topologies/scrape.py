"""Reading what a lab did from outside: a controller's /metrics, ovs-ofctl, ping's summary.

Nothing here changes a switch or the controller; every reader returns plain values.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request


def ping_counts(output: str) -> tuple[int, int]:
    """(received, sent) packets from ping's summary line; (0, 0) if there is none.

    >>> ping_counts("3 packets transmitted, 2 received, 33% packet loss")
    (2, 3)
    """
    m = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    return (int(m.group(2)), int(m.group(1))) if m else (0, 0)


def metric(port: int, name: str, /, **labels: str) -> float:
    """Sum of the samples of `name` on a controller's /metrics whose labels include `labels`.

    A counter is found by its name with or without ``_total`` (Prometheus text format 0.0.4).

    Raises
    ------
    urllib.error.URLError
        Nothing answers on 127.0.0.1:`port` within 5 s.
    """
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in (name, f"{name}_total") and labels.items() <= s.labels.items()
    )


def ofctl(command: str, switch: str, *args: str, options: tuple[str, ...] = ()) -> str:
    """ovs-ofctl's output for one command on one switch, in OpenFlow 1.3 (ovs-ofctl(8)).

    Raises
    ------
    subprocess.CalledProcessError
        ovs-ofctl failed (no such bridge, a bad argument).
    """
    return subprocess.run(
        ["ovs-ofctl", "-O", "OpenFlow13", *options, command, switch, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def tx_packets(switch: str) -> dict[int, int]:
    """Packets each port of `switch` has sent: port number to count (``dump-ports``).

    Raises subprocess.CalledProcessError as `ofctl` does.
    """
    out = ofctl("dump-ports", switch)
    return {
        int(m.group(1)): int(m.group(2))
        for m in re.finditer(r"port\s+(\d+):.*?tx pkts=(\d+)", out, re.S)
    }


def dump_flows(switch: str) -> list[str]:
    """The switch's flows without counters, sorted: comparable before and after a restart.

    Raises subprocess.CalledProcessError as `ofctl` does.
    """
    out = ofctl("dump-flows", switch, options=("--no-stats",))
    return sorted(line.strip() for line in out.splitlines() if "reply" not in line)
