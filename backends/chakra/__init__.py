"""Chakra execution traces: Program -> <prefix>.<rank>.et (writer) and back (reader)."""
