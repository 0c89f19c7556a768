"""Design-space exploration: Optuna studies over flow keys, trials run as Dask tasks (`potatura sweep`)."""
