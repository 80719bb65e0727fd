"""scaling (to be built; see the open issues)."""
