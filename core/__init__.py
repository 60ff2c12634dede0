"""The pure domain core (no Azure calls, no clock, no I/O but data files): rules, states, policies."""
