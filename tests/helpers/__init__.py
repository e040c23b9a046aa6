"""Helpers shared by the tests (no tests here); import as ``from helpers.engine import ...``."""
