"""The Grafana dashboard and Prometheus alert rules shipped with the connector."""
