"""Our own constructs, one capability each (a nested package: a top-level `constructs` would shadow the library)."""
