"""The pipeline's stage scripts: `python stages/NAME.py ...` or, from the project root, `python -m stages.NAME ...`."""
