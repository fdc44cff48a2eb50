"""twin: a geospatial digital twin of a city's water network.

Modules follow the data flow: ``network`` (import, CRS, validation),
``meters`` (registry and join), ``readings`` and ``store`` (validated
ingest into DuckDB), ``demand``, ``dma`` and ``balance`` (water balance),
``hydraulics`` and ``localise`` (leak localisation), ``repair`` and ``maps``
(work orders and crew maps), ``synth`` (the Yingtan reference city and its
data). ``pipeline`` chains them; ``cli`` is the command line.
"""

__version__ = "0.1.0"
