"""Parameter search with Optuna: spaces (TOML) and in-process studies."""
