"""What a study found: the Pareto front and its hypervolume, the seeds and noise floor, plots, the live view of a
running search, and the optuna-dashboard it is served in (notes, artifacts, the token gate)."""
