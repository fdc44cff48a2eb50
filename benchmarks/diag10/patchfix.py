"""Monkeypatch for diagnosis only: snapshot model with an explicit unit default pattern."""
import twin.hydraulics as H
_orig = H._snapshot_model
def _fixed(wn):
    model = _orig(wn)
    if "TWIN_ONE" not in model.pattern_name_list:
        model.add_pattern("TWIN_ONE", [1.0])
    model.options.hydraulic.pattern = "TWIN_ONE"
    return model
H._snapshot_model = _fixed
import os, inspect, textwrap
if os.environ.get("NONEG", "1") == "1":
    src = textwrap.dedent(inspect.getsource(H.SnapshotSolver.solve))
    src2 = src.replace(' or "negative" in str(w).lower()', '')
    assert src2 != src
    ns = {}
    exec(compile(src2, H.__file__, "exec"), H.__dict__, ns)
    H.SnapshotSolver.solve = ns["solve"]

# 3. unmetered links switched by the model's own tank-level controls: their status from the
#    measured tank levels (hysteresis), instead of their initial status
if os.environ.get("CTRL", "1") == "1":
    import numpy as np, pandas as pd
    import twin.localise as LZ
    from wntr.network.controls import TankLevelCondition
    _orig_inputs = LZ._snapshot_inputs

    def controlled_statuses(wn, tank_series, times, skip):
        rules = {}
        for name in wn.control_name_list:
            c = wn.get_control(name)
            cond = getattr(c, "_condition", None)
            acts = getattr(c, "_then_actions", [])
            if not isinstance(cond, TankLevelCondition) or len(acts) != 1:
                continue
            a = acts[0]
            if a._attribute != "status":
                continue
            link = a._target_obj.name
            if link in skip or a._target_obj.link_type == "Valve":
                continue
            tank = cond._source_obj.name
            if tank not in tank_series:
                continue
            rules.setdefault(link, []).append((tank, cond._relation.name, float(cond._threshold), bool(int(a._value))))
        out = {}
        for link, rr in rules.items():
            st = str(wn.get_link(link).initial_status).lower() != "closed"
            vals = []
            for k in range(len(times)):
                for tank, rel, thr, val in rr:
                    lv = tank_series[tank].iloc[k]
                    if np.isfinite(lv) and ((rel == "lt" and lv < thr) or (rel == "gt" and lv > thr)):
                        st = val
                vals.append(st)
            out[link] = pd.Series(vals, index=times)
        return out

    def _inputs(times, pressure, flow, wn):
        status, tanks, notes = _orig_inputs(times, pressure, flow, wn)
        extra = controlled_statuses(wn, tanks, times, set(status.columns))
        for link, s in extra.items():
            status[link] = s.to_numpy(bool)
            notes.append(f"link {link}: status from the model's tank-level controls on measured levels")
        return status, tanks, notes
    LZ._snapshot_inputs = _inputs

# 4. open/closed from flow meters with a threshold relative to the link's own flow
#    (closed links read up to 0.2 L/s of meter noise; the job's fixed 0.1 L/s turns pumps on)
if os.environ.get("OPEN", "1") == "1":
    _orig_inputs2 = LZ._snapshot_inputs
    def _inputs2(times, pressure, flow, wn):
        status, tanks, notes = _orig_inputs2(times, pressure, flow, wn)
        for name in list(status.columns):
            if name not in flow.columns:
                continue
            q = flow[name].reindex(times).abs()
            if wn.get_link(name).link_type != "Pump" and os.environ.get("OPEN_PUMPS_ONLY") == "1":
                continue
            share = 0.05 if wn.get_link(name).link_type == "Pump" else 0.01
            thr = max(LZ.OPEN_FLOW_M3S, share * float(flow[name].abs().quantile(0.995)))
            if wn.get_link(name).link_type != "Pump":  # tank pipes: above the meter's zero-flow noise
                thr = float(os.environ.get("TANK_THR", "2.5e-4"))
            status[name] = (q > thr).to_numpy()
        return status, tanks, notes
    LZ._snapshot_inputs = _inputs2

# 5. the mean operating point of a block (mean demands, mean levels, majority statuses) may be an
#    inconsistent state (Net3: pump 335 and its bypass 330 both open): retry with the statuses of the
#    block's most common real state is what the package should do; here: drop the forced statuses of
#    non-pump links, then of all links
if os.environ.get("OPFIX", "1") == "1":
    _solve = H.SnapshotSolver.solve
    def solve(self, demands=None, *, scale=1.0, tank_levels=None, link_status=None, heads_of=None, flows_of=None):
        try:
            return _solve(self, demands, scale=scale, tank_levels=tank_levels, link_status=link_status,
                          heads_of=heads_of, flows_of=flows_of)
        except H.SimulationError:
            if heads_of is not None or not link_status:
                raise
            ls = {k: v for k, v in link_status.items() if self.wn.get_link(k).link_type == "Pump"}
            try:
                return _solve(self, demands, scale=scale, tank_levels=tank_levels, link_status=ls)
            except H.SimulationError:
                return _solve(self, demands, scale=scale, tank_levels=tank_levels, link_status=None)
    H.SnapshotSolver.solve = solve

# 6. the linearisation takes a pipe's open/closed from the .inp's initial status, not from the
#    snapshot it linearises: tank inlets closed in the snapshot (full tanks, or forced from a meter)
#    become open links of huge conductance (flow floored at 1e-5 m3/s), and Net3's bypass 330
#    (closed in the .inp, open in the snapshot) stays closed. Here: a pipe is closed iff its
#    snapshot flow is exactly zero.
if os.environ.get("LINFIX", "1") == "1":
    from wntr.network import LinkStatus
    _lc = H.link_conductances
    def link_conductances(wn, heads, flows, *, q_min=H.Q_MIN):
        saved = {}
        for name, link in wn.pipes():
            q = float(flows.get(name, 0.0))
            want = LinkStatus.Closed if abs(q) <= 1e-9 else LinkStatus.Open
            if link.initial_status != want:
                saved[name] = link.initial_status
                link.initial_status = want
        try:
            return _lc(wn, heads, flows, q_min=q_min)
        finally:
            for name, st in saved.items():
                wn.get_link(name).initial_status = st
    H.link_conductances = link_conductances
