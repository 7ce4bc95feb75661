"""Transformer plugins for kxform's tests."""
