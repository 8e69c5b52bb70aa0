"""The elfcore Panel app (see app/main.py)."""
