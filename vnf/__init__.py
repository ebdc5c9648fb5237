"""Virtual network functions as containers (or namespace hosts) wired into the OVS fabric."""
