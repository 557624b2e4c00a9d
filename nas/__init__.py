"""The search over the space, and what comes out of it (the Pareto front, model-factory entries)."""
