"""How it flows: the Faust app, topics, agents, the ingest HTTP service, replay."""
