"""Fixtures shared by kxform's tests and the example plugins' tests (real servers, free ports)."""

pytest_plugins = ["kxform.testing"]
