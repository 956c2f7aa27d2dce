"""Docker v1 → v2 migration: the native engine and the container engine."""
