"""Shared state behind one interface: in memory for one process, Redis when replicas share it."""
