"""Thin command-line tools: FID-family metrics and reconstruction over `visgen.evaluation`,
the evaluation networks' weight converters and the dataset feature-net trainer."""
