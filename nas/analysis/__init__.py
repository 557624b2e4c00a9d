"""What a study says about its design space: EDFs, good ranges, importances (design_space), their report, and the
narrowed space refine writes."""
