"""TorchServe handlers served by kxform: seed 004's handler, a one-line plugin for it, its label mapping."""
