"""twin: a geospatial digital twin of a city's water network.

Modules follow the data flow (``docs/architecture.md``):

- foundation, importing no stage: ``errors``, ``settings``, ``crs``,
  ``model`` (the ``Network`` dataclass), ``graph`` (graph plumbing);
- ``network`` and ``gis`` (import, CRS, validation in ``validate``);
- ``meters`` (registry and join), ``readings`` and ``store`` (validated
  ingest into DuckDB);
- one measurement path: ``measure`` (series on the 15-minute grid),
  ``demand`` (node demands per metered window), ``dma`` (DMA net inflows,
  tank storage included), read by ``balance`` (water balance) and by
  ``detect`` and ``localise`` (leak detection and localisation);
- ``hydraulics`` (the one EPANET session, sensitivities), ``classic`` and
  ``bench`` (the reference method and the harness);
- ``repair``, ``valves`` and ``maps`` (work orders and crew maps);
- ``synth`` (the Yingtan reference city and its data).

``pipeline`` chains them; ``cli`` is the command line.
"""

__version__ = "0.1.0"
