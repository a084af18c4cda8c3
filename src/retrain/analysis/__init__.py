"""Analysis of run and campaign logs: load, plot, compare (calibrated significance), litmus, power, report.

`load_metrics`, `load_emergence` and `load_campaign` are the Python API (docs/analysis.md). Importing this
package is cheap (pandas / matplotlib / scipy load inside the functions that need them).
"""

from retrain.analysis.load import load_campaign, load_emergence, load_metrics, load_run

__all__ = ["load_campaign", "load_emergence", "load_metrics", "load_run"]
