"""The base every area stands on: the params tree and its errors, settings, the project layout,
whole-file writes, exit codes, safe stops, locks, logs and orphan cleanup. It imports nothing
else of iocane's (the import contract's last layer)."""
