"""Experiments that show why residual learning works."""
