"""Relay benchmark: the same RFB byte stream delivered directly, through websockify, and through the gateway.

`python -m bench.run` runs every scenario side by side and writes `bench/results/latest.{json,md,png}`;
docs/performance.md explains the method. Nothing here is imported by the gateway.
"""
