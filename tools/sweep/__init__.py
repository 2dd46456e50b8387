"""`make sweep`: hyperparameter tuning on Optuna that keeps seeds honest (docs/sweep.md)."""
