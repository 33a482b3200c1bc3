"""How Rapport runs: the local Kafka runtime, Grafana provisioning, compose and cluster manifests."""
