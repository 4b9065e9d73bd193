"""The one-command demo: a scenario run end to end on the local sandbox."""
