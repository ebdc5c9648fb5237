"""The XDP fast path: the program, its loader, and what the firewall offloads to it."""
