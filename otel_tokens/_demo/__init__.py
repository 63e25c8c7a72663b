"""`otel-tokens demo`: gateway-like traffic through a real tracker, and its simulated
upstreams.
"""
