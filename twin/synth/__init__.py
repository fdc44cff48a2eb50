"""Synthetic data for the twin: the Yingtan reference city and realistic readings.

There is no public smart-meter data set of a Chinese city, so the project ships
a faithful stand-in:

- :func:`synth_city` lays out a water network in Yingtan's central urban area
  (EPSG:4548) with DMAs, PRVs, a pumped high zone, an elevated tank, isolation
  valves and customers by class, written as EPANET ``.inp`` plus a GeoPackage.
- :func:`synth_readings` simulates a "true" network that differs from the
  utility's file (roughness, actual demands, background leakage, a hidden
  burst) with EPANET and writes ``meters.csv``, ``readings.csv`` and
  ``truth.json`` in the data contract of ``DESIGN.md``.
"""

from __future__ import annotations

from twin.synth.city import synth_city
from twin.synth.readings import synth_readings

__all__ = ["synth_readings", "synth_city"]
