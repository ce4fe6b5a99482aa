"""Network modules only: no optimizers, no environments."""
