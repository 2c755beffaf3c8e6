"""Training, evaluation and prediction logic shared by the recipes and the command line."""
