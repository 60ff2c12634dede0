"""The audit ledger: its contract, its table storage (real Azurite), its activities and its HTTP route."""
