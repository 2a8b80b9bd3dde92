"""Training diagnostics: collection during training, rules, profiling and the run report."""
