"""In-memory stand-ins for the operator's outside world, for tests that start no server."""
