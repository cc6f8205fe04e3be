"""The built-in offline tool-use environment (the embedded default)."""
