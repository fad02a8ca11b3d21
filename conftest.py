"""Setup for the whole test run.

The notebook kernels that nbval starts inherit this process's environment. An
exported ``MPLBACKEND`` (often ``Agg`` on CI) would replace the inline backend in
the kernels, so figure cells would lose their outputs and nbval would report
missing fields. The Python tests need no backend setting: pytest-mpl uses Agg,
and matplotlib falls back to Agg on a machine without a display.
"""
import os

os.environ.pop("MPLBACKEND", None)
