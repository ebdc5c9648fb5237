"""Trace a packet to the rule that decided it (issue 16): the walk (tracer.py), Open vSwitch's
ofproto/trace asked and read (ovs.py), the packet and matching (packet.py)."""
