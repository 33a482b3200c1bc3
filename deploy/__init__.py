"""How Rapport runs: local Kafka runtime, Grafana provisioning, compose and cluster manifests."""
