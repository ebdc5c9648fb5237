"""The controller core: pipeline, desired-state reconciliation, topology, and the os-ken shim."""
