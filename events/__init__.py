"""What happened: canonical events, platform adapters, identity."""
