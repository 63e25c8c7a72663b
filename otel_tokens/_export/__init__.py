"""How metrics leave the process: the checked OTLP exporter and the Prometheus scrape endpoint."""
