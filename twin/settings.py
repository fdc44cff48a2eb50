"""Project-wide defaults, in one place.

Library code reads these values and never writes them; every function that
uses one accepts an argument that overrides it. Units are SI unless the name
says otherwise.
"""

from __future__ import annotations

#: Projected metric CRS used internally for Yingtan: CGCS2000 / 3-degree
#: Gauss-Kruger CM 117E. EPSG:32650 (UTM 50N) is common too.
DEFAULT_CRS = "EPSG:4548"

#: CRS of maps (Leaflet) and of the meter registry's lon/lat columns.
MAP_CRS = "EPSG:4326"

#: Local time zone of the utility; "days" and the night window are local.
TIMEZONE = "Asia/Shanghai"

#: UTC offset written into synthetic timestamps (ISO 8601).
UTC_OFFSET = "+08:00"

#: Largest distance from a customer meter to its pipe for the join, metres.
SNAP_DISTANCE_M = 50.0

#: Tolerance for joining line ends into nodes when a GIS layer has no
#: topology, metres.
SNAP_TOLERANCE_M = 0.5

#: Local-time window for the minimum night flow, hours [start, end).
NIGHT_START_HOUR = 2
NIGHT_END_HOUR = 4

#: Logger and flow-meter reporting interval, seconds.
LOGGER_INTERVAL_S = 900

#: Longest gap in a logger or flow-meter series that is filled, samples of
#: the logger grid (8 x 15 min = 2 h): a gap of at most this many missing
#: samples between two readings is interpolated linearly in time; a longer gap
#: stays NaN, and so do the ends of a series.
GAP_FILL_SAMPLES = 8

#: Centred moving mean of tank levels before their storage change is taken,
#: samples (9 x 15 min: 2 h). Level loggers are noisy (cm) and a tank's area
#: multiplies that noise.
TANK_SMOOTH_SAMPLES = 9

#: Hydraulic time step of the simulations, seconds.
HYDRAULIC_STEP_S = 900

#: BattLeDIM's criterion: a localisation is correct within this pipe distance
#: of the leak, metres.
LOCALISATION_RADIUS_M = 300.0

#: The localisation's likelihood: "allowance" (each row's variance grows with
#: the candidate's predicted change, ALLOWANCE_PRESSURE / ALLOWANCE_FLOW times
#: it) or "fixed" (one variance per row for every candidate, flow meters
#: widened by FLOW_SPLIT_SHARE). docs/localise.md, root cause 8.
LIKELIHOOD = "allowance"
ALLOWANCE_PRESSURE = 0.1
ALLOWANCE_FLOW = 2.0

#: With LIKELIHOOD "fixed": uncertainty of each flow meter's share of a leak's flow, as a fraction of
#: the leak: the split between inlets and sources follows roughness that the
#: model knows to about ±10 %. Chosen from that, not fitted to weeks.
FLOW_SPLIT_SHARE = 0.1

#: Share of the candidate score held by the candidate zone.
CANDIDATE_ZONE_SHARE = 0.9

#: Rows per chunk when reading large readings files.
READ_CHUNK_ROWS = 1_000_000

#: File name endings of a readings store (a DuckDB database file); the first
#: is the one suggested. DuckDB would open a CSV or Parquet path in memory.
STORE_SUFFIX = ".duckdb"
STORE_SUFFIXES = (".duckdb", ".db", ".ddb")

#: Largest plausible flow through a flow meter, either direction, L/s. A
#: city's largest trunk main (DN2000 at 3 m/s) carries about 9,400 L/s; a
#: flow beyond this is quarantined as implausible (wrong units or corrupt).
MAX_FLOW_LPS = 10_000.0

#: Matching a night's leak to an alarm still open from earlier nights
#: (:mod:`twin.alarms`): the same leak when the DMA is the same (or either
#: is network-wide), the onsets differ by at most this many hours...
ALARM_ONSET_TOLERANCE_H = 6.0

#: ...and the flows by at most this share of the larger one or
#: ``ALARM_FLOW_TOLERANCE_LPS`` L/s, whichever is more.
ALARM_FLOW_TOLERANCE = 0.3
ALARM_FLOW_TOLERANCE_LPS = 0.5

#: An open alarm a run does not see is closed (its step is gone: a repair)
#: only when the run's window could have seen its step: at least this many
#: hours of readings before the onset (detection's two reference days)...
ALARM_COVER_BEFORE_H = 48.0

#: ...and this many after it (detection scans no onset in the last 24 h).
#: Otherwise the alarm stays open, unchecked.
ALARM_COVER_AFTER_H = 24.0

#: A run from the store starts its window early enough to see the step of
#: every open alarm (so that a repair is noticed), but covers at most this
#: many days; older alarms stay open, unchecked.
ALARM_LOOKBACK_DAYS = 14

#: Candidates kept in the store per run and alarm (the best ranked).
ALARM_CANDIDATES_KEPT = 50

#: Length of the window of a run from the store, days (``twin localise --store``).
RUN_DAYS = 7

#: Calibrate the network model on the leak-free days before ranking (roughness
#: per pipe group, demand per DMA whose balance is not fully metered;
#: :mod:`twin.calibrate`). The fit is applied only when it predicts held-out
#: days better, so switching it on never makes the model worse on that test.
CALIBRATE_MODEL = True
