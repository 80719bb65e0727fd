"""Test-time scaling: reasoning formats, budget forcing, "Wait" extension and per-sample seeds (the generation engine)."""
