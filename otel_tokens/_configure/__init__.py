"""`configure()` and `Telemetry`: a MeterProvider with its exporters and a tracker on it, in
one call.
"""
