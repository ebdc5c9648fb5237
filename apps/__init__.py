"""Suite apps, one per file, each runnable with `osken-manager apps/<name>.py`."""
