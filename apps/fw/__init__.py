"""The IP firewall: rules, schedules and their compilation into the firewall stage."""
