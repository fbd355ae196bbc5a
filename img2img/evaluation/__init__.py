"""Evaluation: distribution metrics (FID, KID), paired metrics, digit checks, and the eval command's logic."""
