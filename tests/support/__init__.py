"""Helpers for tests that run real processes: free ports, polling with deadlines."""
