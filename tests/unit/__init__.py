"""Fast orchestrator unit tests: histories in, orchestrator state out (no host, no twin, no HTTP)."""
