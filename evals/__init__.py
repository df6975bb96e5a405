"""Evaluation scripts (FID / rFID / IS) and weight converters for evaluation nets."""
