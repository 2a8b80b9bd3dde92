"""Training stage: the training loop, distributed set-up, evaluation reports and tuning."""
