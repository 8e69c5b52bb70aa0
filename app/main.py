"""elfcore app entry point: ``panel serve app/main.py``."""
import panel as pn

pn.extension()

pn.Column(
    "# elfcore",
    "Predicted ELF of dense hydrogen: 3D isosurface, residual slice and line scans are being built.",
).servable(title="elfcore")
