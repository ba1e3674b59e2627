"""Metrics shared by all architectures and instruction evaluation."""
