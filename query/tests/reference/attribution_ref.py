#!/usr/bin/env python3
"""Independent reference implementation of Lookback's attribution semantics.

This follows docs/attribution.md literally; the Rust engine's `attribute(...)` and
`attribute_channels(...)` table functions are compared against it by the tests.
Standard library only (Python 3.11+).

Usage:
    python3 attribution_ref.py EVENTS_CSV PARAMS_JSON   # JSON result on stdout
    python3 attribution_ref.py --self-test              # hand-computed cases, prints "ok"

EVENTS_CSV has the header
    event_id,app_id,ts_us,event_type,device_id,ip,user_agent,channel,campaign,revenue
where an empty field is NULL (device_id, ip, user_agent, channel, campaign, revenue).

PARAMS_JSON is an object with keys: function ("attribute" | "attribute_channels"), model,
conversion (list of event types, or one comma-separated string), click_window_us,
view_window_us, probabilistic_window_us, half_life_us, app, since_us, until_us, markov_order.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable, Optional

HEADER = [
    "event_id", "app_id", "ts_us", "event_type", "device_id", "ip",
    "user_agent", "channel", "campaign", "revenue",
]
TOUCH_TYPES = ("click", "impression")
RULE_MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")
PATH_MODELS = ("markov", "shapley")
ORGANIC = "organic"

# Defaults of the optional window arguments (docs/attribution.md, SQL example).
DEFAULT_CLICK_WINDOW_US = 7 * 86_400 * 1_000_000
DEFAULT_VIEW_WINDOW_US = 1 * 86_400 * 1_000_000
DEFAULT_PROBABILISTIC_WINDOW_US = 0
DEFAULT_HALF_LIFE_US = 7 * 86_400 * 1_000_000


# --------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    event_id: str
    app_id: str
    ts: int
    event_type: str
    device_id: Optional[str] = None
    ip: Optional[str] = None
    user_agent: Optional[str] = None
    channel: Optional[str] = None
    campaign: Optional[str] = None
    revenue: Optional[float] = None

    def order_key(self):
        """Path order: (ts, event_id); the canonical lower-case uuid text sorts like its bytes."""
        return (self.ts, self.event_id)


@dataclass
class Params:
    model: str
    conversion: list
    click_window: int = DEFAULT_CLICK_WINDOW_US
    view_window: int = DEFAULT_VIEW_WINDOW_US
    probabilistic_window: int = DEFAULT_PROBABILISTIC_WINDOW_US
    half_life: int = DEFAULT_HALF_LIFE_US
    app: Optional[str] = None
    since: Optional[int] = None
    until: Optional[int] = None
    markov_order: int = 1
    function: str = "attribute"

    @staticmethod
    def from_json(obj: dict) -> "Params":
        conv = obj["conversion"]
        if isinstance(conv, str):
            conv = conv.split(",")
        conv = [c.strip() for c in conv]

        def opt_int(key, default):
            v = obj.get(key, default)
            return default if v is None else int(v)

        p = Params(
            function=obj.get("function", "attribute"),
            model=obj["model"],
            conversion=conv,
            click_window=opt_int("click_window_us", DEFAULT_CLICK_WINDOW_US),
            view_window=opt_int("view_window_us", DEFAULT_VIEW_WINDOW_US),
            probabilistic_window=opt_int("probabilistic_window_us", DEFAULT_PROBABILISTIC_WINDOW_US),
            half_life=opt_int("half_life_us", DEFAULT_HALF_LIFE_US),
            app=obj.get("app"),
            since=None if obj.get("since_us") is None else int(obj["since_us"]),
            until=None if obj.get("until_us") is None else int(obj["until_us"]),
            markov_order=opt_int("markov_order", 1),
        )
        if p.function not in ("attribute", "attribute_channels"):
            raise ValueError(f"unknown function {p.function!r}")
        allowed = RULE_MODELS + (PATH_MODELS if p.function == "attribute_channels" else ())
        if p.model not in allowed:
            raise ValueError(f"model {p.model!r} not allowed for {p.function}")
        if p.markov_order < 1:
            raise ValueError("markov_order must be >= 1")
        return p


def _null(s: str) -> Optional[str]:
    return None if s == "" else s


def read_events(f: Iterable[str]) -> list:
    reader = csv.reader(f)
    header = next(reader)
    if [h.strip() for h in header] != HEADER:
        raise ValueError(f"unexpected header {header!r}")
    events = []
    for row in reader:
        if not row:
            continue
        (event_id, app_id, ts_us, event_type, device_id, ip, user_agent,
         channel, campaign, revenue) = row
        events.append(Event(
            event_id=event_id.lower(),
            app_id=app_id,
            ts=int(ts_us),
            event_type=event_type,
            device_id=_null(device_id),
            ip=_null(ip),
            user_agent=_null(user_agent),
            channel=_null(channel),
            campaign=_null(campaign),
            revenue=None if revenue == "" else float(revenue),
        ))
    return events


# --------------------------------------------------------------------------------------
# Matching (rules 1-3, click beats impression)
# --------------------------------------------------------------------------------------

class TouchIndex:
    """Touchpoints (click / impression rows) grouped by a key, each group in (ts, event_id) order."""

    def __init__(self, touches: list, key):
        groups = {}
        for p in touches:
            k = key(p)
            if k is None:
                continue
            groups.setdefault(k, []).append(p)
        self.groups = {}
        for k, ps in groups.items():
            ps.sort(key=Event.order_key)
            self.groups[k] = (ps, [p.ts for p in ps])

    def in_range(self, k, lo: int, hi: int) -> list:
        """Touchpoints of group k with lo <= ts <= hi, in (ts, event_id) order."""
        g = self.groups.get(k)
        if g is None or lo > hi:
            return []
        ps, tss = g
        return ps[bisect.bisect_left(tss, lo):bisect.bisect_right(tss, hi)]


def windowed(candidates: list, t: int, click_window: int, view_window: int) -> list:
    """Clicks with t - click_window <= ts <= t, impressions with t - view_window <= ts <= t."""
    out = []
    for p in candidates:
        w = click_window if p.event_type == "click" else view_window
        if t - w <= p.ts <= t:
            out.append(p)
    return out


def click_beats_impression(candidates: list) -> list:
    if any(p.event_type == "click" for p in candidates):
        candidates = [p for p in candidates if p.event_type == "click"]
    return sorted(candidates, key=Event.order_key)


@dataclass
class Match:
    conversion: Event
    match_type: str          # device | fingerprint | organic
    path: list               # touchpoints in path order (empty for organic)
    confidences: list        # per touch


class Matcher:
    def __init__(self, events: list, params: Params):
        self.params = params
        touches = [e for e in events if e.event_type in TOUCH_TYPES]
        self.touches = touches
        self.by_device = TouchIndex(
            touches, lambda p: None if p.device_id is None else (p.app_id, p.device_id))
        self.by_fingerprint = TouchIndex(
            touches,
            lambda p: None if p.ip is None or p.user_agent is None
            else (p.app_id, p.ip, p.user_agent))

    def match(self, c: Event) -> Match:
        prm = self.params
        t = c.ts
        # 1. device match
        if c.device_id is not None:
            lo = t - max(prm.click_window, prm.view_window)
            cands = windowed(self.by_device.in_range((c.app_id, c.device_id), lo, t),
                             t, prm.click_window, prm.view_window)
            if cands:
                path = click_beats_impression(cands)
                return Match(c, "device", path, [1.0] * len(path))
        # 2. fingerprint match
        if prm.probabilistic_window > 0 and c.ip is not None and c.user_agent is not None:
            cw = min(prm.click_window, prm.probabilistic_window)
            vw = min(prm.view_window, prm.probabilistic_window)
            lo = t - max(cw, vw)
            cands = windowed(self.by_fingerprint.in_range((c.app_id, c.ip, c.user_agent), lo, t),
                             t, cw, vw)
            if cands:
                path = click_beats_impression(cands)
                conf = [1.0 - (t - p.ts) / prm.probabilistic_window for p in path]
                return Match(c, "fingerprint", path, conf)
        # 3. organic
        return Match(c, "organic", [], [])


def in_scope_conversions(events: list, params: Params) -> list:
    conv_types = set(params.conversion)
    out = []
    for e in events:
        if e.event_type not in conv_types:
            continue
        if params.app is not None and e.app_id != params.app:
            continue
        if params.since is not None and e.ts < params.since:
            continue
        if params.until is not None and e.ts >= params.until:
            continue
        out.append(e)
    # (app_id, device_id with NULL first, conversion_time, conversion_id)
    out.sort(key=lambda c: (c.app_id, c.device_id is not None, c.device_id or "", c.ts, c.event_id))
    return out


def match_all(events: list, params: Params) -> list:
    m = Matcher(events, params)
    return [m.match(c) for c in in_scope_conversions(events, params)]


# --------------------------------------------------------------------------------------
# Rule-based credits and attribute(...)
# --------------------------------------------------------------------------------------

def credits(model: str, path: list, t: int, half_life: int) -> list:
    """Credit per touch of the path (same order); 0 for touches a model does not output."""
    n = len(path)
    if model == "first_touch":
        return [1.0] + [0.0] * (n - 1)
    if model == "last_touch":
        return [0.0] * (n - 1) + [1.0]
    if model == "linear":
        return [1.0 / n] * n
    if model == "time_decay":
        if half_life <= 0:
            raise ValueError("time_decay needs half_life > 0")
        # weight 2^(-(t - ts)/half_life); shifted by the youngest touch's age before
        # exponentiation (the normalised result is identical, but it cannot underflow to 0/0).
        ages = [(t - p.ts) / half_life for p in path]
        a0 = min(ages)
        w = [2.0 ** (-(a - a0)) for a in ages]
        s = sum(w)
        return [x / s for x in w]
    if model == "position_based":
        if n == 1:
            return [1.0]
        if n == 2:
            return [0.5, 0.5]
        mid = 0.2 / (n - 2)
        return [0.4] + [mid] * (n - 2) + [0.4]
    raise ValueError(f"not a rule-based model: {model!r}")


def attribute_rows(matches: list, params: Params) -> list:
    rows = []
    for m in matches:
        c = m.conversion
        rev = c.revenue if c.revenue is not None else 0.0
        base = dict(app_id=c.app_id, conversion_id=c.event_id, conversion_time=c.ts,
                    conversion_type=c.event_type, device_id=c.device_id)
        if m.match_type == "organic":
            rows.append(dict(base, touch_id=None, touch_time=None, touch_type=None,
                             channel=ORGANIC, campaign=None, match_type="organic",
                             confidence=None, credit=1.0, revenue=1.0 * rev))
            continue
        cr = credits(params.model, m.path, c.ts, params.half_life)
        n = len(m.path)
        for i, (p, conf, k) in enumerate(zip(m.path, m.confidences, cr)):
            if params.model == "first_touch" and i != 0:
                continue
            if params.model == "last_touch" and i != n - 1:
                continue
            rows.append(dict(base, touch_id=p.event_id, touch_time=p.ts, touch_type=p.event_type,
                             channel=p.channel, campaign=p.campaign, match_type=m.match_type,
                             confidence=conf, credit=k, revenue=k * rev))
    return rows


def attribute(events: list, params: Params) -> list:
    return attribute_rows(match_all(events, params), params)


# --------------------------------------------------------------------------------------
# Paths for markov / shapley
# --------------------------------------------------------------------------------------

def remaining_paths(events: list, matches: list, params: Params) -> list:
    """Non-converting paths: per (app_id, device_id) the touchpoints that are a candidate of
    no in-scope conversion, within app / since - max(windows) <= ts < until."""
    used = set()
    for m in matches:
        for p in m.path:
            used.add(p.event_id)
    lo = None if params.since is None else params.since - max(params.click_window, params.view_window)
    groups = {}
    for p in events:
        if p.event_type not in TOUCH_TYPES or p.device_id is None:
            continue
        if params.app is not None and p.app_id != params.app:
            continue
        if lo is not None and p.ts < lo:
            continue
        if params.until is not None and p.ts >= params.until:
            continue
        if p.event_id in used:
            continue
        groups.setdefault((p.app_id, p.device_id), []).append(p)
    paths = []
    for key in sorted(groups):
        ps = sorted(groups[key], key=Event.order_key)
        paths.append([p.channel for p in ps])
    return paths


def channel_sort_key(ch):
    return (ch is None, ch or "")


# ---- Gaussian elimination ------------------------------------------------------------

def gauss_solve(a: list, b: list) -> list:
    """Solve a x = b (a: n x n list of lists) by Gaussian elimination with partial pivoting.
    The inputs are copied. Zero entries of the pivot row are skipped (the chain matrices are
    sparse), which does not change the arithmetic."""
    n = len(a)
    m = [list(row) + [bv] for row, bv in zip(a, b)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        if m[piv][col] == 0.0:
            raise ZeroDivisionError("singular system")
        if piv != col:
            m[col], m[piv] = m[piv], m[col]
        prow = m[col]
        pv = prow[col]
        nz = [j for j in range(col + 1, n + 1) if prow[j] != 0.0]
        for r in range(col + 1, n):
            row = m[r]
            f = row[col]
            if f == 0.0:
                continue
            f /= pv
            row[col] = 0.0
            for j in nz:
                row[j] -= f * prow[j]
    x = [0.0] * n
    for i in range(n - 1, -1, -1):
        row = m[i]
        s = row[n]
        for j in range(i + 1, n):
            if row[j] != 0.0:
                s -= row[j] * x[j]
        x[i] = s / row[i]
    return x


# ---- Markov --------------------------------------------------------------------------

CONV = "CONV"   # absorbing states are strings; transient states are tuples
NULL = "NULL"
START = ()


def markov_counts(converting: list, non_converting: list, k: int) -> dict:
    """Transition counts {from_state: {to: count}} of the order-k chain."""
    counts = {}

    def add(a, b):
        d = counts.setdefault(a, {})
        d[b] = d.get(b, 0) + 1

    for paths, end in ((converting, CONV), (non_converting, NULL)):
        for path in paths:
            if not path:
                continue
            state = START
            for i in range(len(path)):
                nxt = tuple(path[max(0, i + 1 - k):i + 1])
                add(state, nxt)
                state = nxt
            add(state, end)
    return counts


def markov_conversion_probability(counts: dict, removed=None, use_removed=False) -> float:
    """Absorption probability in CONV from START. With use_removed, every transition into a
    transient state whose tuple contains `removed` goes to NULL instead."""
    if START not in counts:
        return 0.0

    def blocked(to):
        return use_removed and isinstance(to, tuple) and removed in to

    # transient states reachable from START under the (possibly modified) chain; x(START)
    # depends on these only, so the system is restricted to them.
    order = [START]
    seen = {START}
    i = 0
    while i < len(order):
        for to in counts.get(order[i], {}):
            if isinstance(to, tuple) and not blocked(to) and to not in seen:
                seen.add(to)
                order.append(to)
        i += 1
    index = {s: j for j, s in enumerate(order)}
    n = len(order)
    a = [[0.0] * n for _ in range(n)]
    b = [0.0] * n
    for s, j in index.items():
        out = counts[s]
        total = sum(out.values())
        a[j][j] += 1.0
        for to, cnt in out.items():
            pr = cnt / total
            if to == CONV:
                b[j] += pr
            elif to == NULL or blocked(to):
                pass
            else:
                a[j][index[to]] -= pr
    x = gauss_solve(a, b)
    return x[index[START]]


def markov_effects(converting: list, non_converting: list, k: int, channels: list) -> dict:
    counts = markov_counts(converting, non_converting, k)
    p = markov_conversion_probability(counts)
    effects = {}
    for ch in channels:
        if p == 0.0:
            effects[ch] = 0.0
            continue
        p2 = markov_conversion_probability(counts, removed=ch, use_removed=True)
        effects[ch] = max(0.0, 1.0 - p2 / p)
    return effects


# ---- Shapley -------------------------------------------------------------------------

def shapley_values(converting: list, non_converting: list, channels: list) -> dict:
    """Exact Shapley values (as Fractions) of the cumulative coalition value
    v(S) = sum of r(T) over observed channel sets T that are subsets of S, where r(T) is
    converting/all paths whose channel set is exactly T (docs/attribution.md).

    Computed here by the literal definition, phi_i = sum over S not containing i of
    |S|!(n-|S|-1)!/n! (v(S+i) - v(S)), with v evaluated by summing over observed sets, when
    there are at most 12 channels; beyond, by the unanimity-game identity
    phi_i = sum_{T containing i} r(T)/|T| (the self-test checks both agree)."""
    if len(channels) <= 12:
        return shapley_values_by_subsets(converting, non_converting, channels)
    return shapley_values_unanimity(converting, non_converting, channels)


def shapley_values_unanimity(converting: list, non_converting: list, channels: list) -> dict:
    r = set_values(converting, non_converting)
    phi = {ch: Fraction(0) for ch in channels}
    for t_set, val in r.items():
        for ch in t_set:
            phi[ch] += val / len(t_set)
    return phi


def set_values(converting: list, non_converting: list) -> dict:
    conv_n = {}
    all_n = {}
    for paths, is_conv in ((converting, True), (non_converting, False)):
        for path in paths:
            s = frozenset(path)
            if not s:
                continue
            all_n[s] = all_n.get(s, 0) + 1
            if is_conv:
                conv_n[s] = conv_n.get(s, 0) + 1
    return {s: Fraction(conv_n.get(s, 0), cnt) for s, cnt in all_n.items()}


def shapley_values_by_subsets(converting: list, non_converting: list, channels: list) -> dict:
    """The literal subset formula (2^(n-1) subsets per channel) over the cumulative value."""
    r = set_values(converting, non_converting)

    def v(s):
        return sum((val for t_set, val in r.items() if t_set <= s), Fraction(0))

    n = len(channels)
    phi = {}
    for i, ch in enumerate(channels):
        others = [c for j, c in enumerate(channels) if j != i]
        total = Fraction(0)
        for mask in range(1 << len(others)):
            s = frozenset(c for j, c in enumerate(others) if mask >> j & 1)
            weight = Fraction(math.factorial(len(s)) * math.factorial(n - len(s) - 1),
                              math.factorial(n))
            total += weight * (v(s | {ch}) - v(s))
        phi[ch] = total
    return phi


# ---- attribute_channels(...) ---------------------------------------------------------

def attribute_channels(events: list, params: Params) -> list:
    matches = match_all(events, params)
    sums = {}  # channel -> [conversions, revenue]

    def add(ch, conv, rev):
        s = sums.setdefault(ch, [0.0, 0.0])
        s[0] += conv
        s[1] += rev

    if params.model in RULE_MODELS:
        for r in attribute_rows(matches, params):
            add(r["channel"], r["credit"], r["revenue"])
    else:
        converting = []
        attributed_conv = 0
        attributed_rev = 0.0
        organic_n = 0
        organic_rev = 0.0
        for m in matches:
            rev = m.conversion.revenue if m.conversion.revenue is not None else 0.0
            if m.match_type == "organic":
                organic_n += 1
                organic_rev += rev
            else:
                converting.append([p.channel for p in m.path])
                attributed_conv += 1
                attributed_rev += rev
        non_converting = remaining_paths(events, matches, params)
        chans = set()
        for path in converting + non_converting:
            chans.update(path)
        channels = sorted(chans, key=channel_sort_key)

        if params.model == "markov":
            eff = markov_effects(converting, non_converting, params.markov_order, channels)
            total = sum(eff.values())
            for ch in channels:
                share = eff[ch] / total if total != 0.0 else 0.0
                add(ch, attributed_conv * share, attributed_rev * share)
        else:
            phi = shapley_values(converting, non_converting, channels)
            total = sum(phi.values(), Fraction(0))
            for ch in channels:
                if total == 0:
                    add(ch, 0.0, 0.0)
                else:
                    share = phi[ch] / total
                    add(ch, float(attributed_conv * share), attributed_rev * float(share))
        if organic_n > 0:
            add(ORGANIC, float(organic_n), organic_rev)

    return [dict(channel=ch, conversions=v[0], revenue=v[1])
            for ch, v in sorted(sums.items(), key=lambda kv: channel_sort_key(kv[0]))]


def run(events: list, params: Params) -> list:
    if params.function == "attribute":
        return attribute(events, params)
    return attribute_channels(events, params)


# --------------------------------------------------------------------------------------
# Self-test (hand-computed cases)
# --------------------------------------------------------------------------------------

def _uuid(n: int) -> str:
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _csv(rows: list) -> str:
    """rows: dicts with Event field names (ts -> ts_us); builds an EVENTS_CSV text."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    for r in rows:
        w.writerow([r["event_id"], r.get("app_id", "app"), r["ts"], r["event_type"],
                    r.get("device_id") or "", r.get("ip") or "", r.get("user_agent") or "",
                    r.get("channel") or "", r.get("campaign") or "",
                    "" if r.get("revenue") is None else repr(r["revenue"])])
    return out.getvalue()


def _close(a, b, eps=1e-12):
    return abs(a - b) <= eps * max(1.0, abs(a), abs(b))


def _run(rows, **params):
    events = read_events(io.StringIO(_csv(rows)))
    return run(events, Params.from_json(params))


def _by_channel(out):
    return {r["channel"]: (r["conversions"], r["revenue"]) for r in out}


def self_test():
    H = 3_600_000_000  # one hour in µs
    D = 24 * H
    T = 1_700_000_000_000_000
    base = dict(click_window_us=7 * D, view_window_us=D, probabilistic_window_us=0,
                half_life_us=7 * D, app=None, since_us=None, until_us=None)
    ids = iter(range(1, 10_000))

    def ev(ts, event_type, **kw):
        return dict(event_id=_uuid(next(ids)), ts=ts, event_type=event_type, **kw)

    # -- click beats impression ------------------------------------------------------------
    c_old = ev(T - 2 * H, "click", device_id="d", channel="search")
    imp = ev(T - H, "impression", device_id="d", channel="display")
    conv = ev(T, "install", device_id="d", revenue=10.0)
    for model in ("last_touch", "linear", "first_touch"):
        out = _run([c_old, imp, conv], function="attribute", model=model, conversion=["install"], **base)
        assert len(out) == 1, out
        r = out[0]
        assert r["touch_id"] == c_old["event_id"] and r["channel"] == "search", r
        assert r["match_type"] == "device" and r["confidence"] == 1.0 and r["credit"] == 1.0
        assert r["revenue"] == 10.0 and r["device_id"] == "d" and r["conversion_type"] == "install"
    # impressions only: both impressions kept
    imp2 = ev(T - 3 * H, "impression", device_id="d2", channel="video")
    imp3 = ev(T - H, "impression", device_id="d2", channel="display")
    conv2 = ev(T, "install", device_id="d2")
    out = _run([imp3, imp2, conv2], function="attribute", model="linear", conversion="install", **base)
    assert [r["touch_id"] for r in out] == [imp2["event_id"], imp3["event_id"]]
    assert all(r["credit"] == 0.5 and r["revenue"] == 0.0 for r in out)

    # -- inclusive window boundaries ------------------------------------------------------
    at_edge = ev(T - 7 * D, "click", device_id="e", channel="a")
    past_edge = ev(T - 7 * D - 1, "click", device_id="e", channel="b")
    at_t = ev(T, "click", device_id="e", channel="c")
    after_t = ev(T + 1, "click", device_id="e", channel="d")
    conv = ev(T, "purchase", device_id="e", revenue=4.0)
    out = _run([at_edge, past_edge, at_t, after_t, conv], function="attribute", model="linear",
               conversion=[" purchase "], **base)
    assert [r["channel"] for r in out] == ["a", "c"], out
    assert all(r["credit"] == 0.5 and r["revenue"] == 2.0 for r in out)
    imp_edge = ev(T - D, "impression", device_id="f", channel="v1")
    imp_past = ev(T - D - 1, "impression", device_id="f", channel="v2")
    conv = ev(T, "purchase", device_id="f")
    out = _run([imp_edge, imp_past, conv], function="attribute", model="linear",
               conversion=["purchase"], **base)
    assert [r["channel"] for r in out] == ["v1"], out

    # -- fingerprint match with confidence, windows capped ---------------------------------
    pw = 1000
    fp_click = ev(T - 250, "click", device_id="other", ip="1.2.3.4", user_agent="ua", channel="fp")
    fp_old = ev(T - 1001, "click", device_id=None, ip="1.2.3.4", user_agent="ua", channel="old")
    fp_other_ua = ev(T - 10, "click", ip="1.2.3.4", user_agent="ub", channel="x")
    conv = ev(T, "install", device_id=None, ip="1.2.3.4", user_agent="ua", revenue=8.0)
    prm = dict(base, probabilistic_window_us=pw)
    out = _run([fp_click, fp_old, fp_other_ua, conv], function="attribute", model="linear",
               conversion=["install"], **prm)
    assert len(out) == 1, out
    r = out[0]
    assert r["match_type"] == "fingerprint" and r["touch_id"] == fp_click["event_id"]
    assert _close(r["confidence"], 0.75) and r["credit"] == 1.0 and r["revenue"] == 8.0
    assert r["device_id"] is None
    # with probabilistic_window 0 the same conversion is organic
    out = _run([fp_click, fp_old, conv], function="attribute", model="linear",
               conversion=["install"], **base)
    assert len(out) == 1 and out[0]["match_type"] == "organic"
    # a device match wins over the fingerprint
    dev_click = ev(T - 5 * D, "click", device_id="g", channel="dev")
    fp_g = ev(T - 100, "click", device_id="zz", ip="9.9.9.9", user_agent="ua", channel="fp")
    conv = ev(T, "install", device_id="g", ip="9.9.9.9", user_agent="ua")
    out = _run([dev_click, fp_g, conv], function="attribute", model="linear",
               conversion=["install"], **prm)
    assert [(r["channel"], r["match_type"]) for r in out] == [("dev", "device")], out

    # -- organic ----------------------------------------------------------------------------
    conv = ev(T, "install", device_id="h", revenue=3.5)
    other_dev = ev(T - H, "click", device_id="i", channel="search")
    other_app = ev(T - H, "click", app_id="app2", device_id="h", channel="search")
    out = _run([conv, other_dev, other_app], function="attribute", model="last_touch",
               conversion=["install"], **base)
    assert out == [dict(app_id="app", conversion_id=conv["event_id"], conversion_time=T,
                        conversion_type="install", device_id="h", touch_id=None, touch_time=None,
                        touch_type=None, channel="organic", campaign=None, match_type="organic",
                        confidence=None, credit=1.0, revenue=3.5)], out

    # -- time_decay ---------------------------------------------------------------------
    hl = 2 * H
    t1 = ev(T - 2 * hl, "click", device_id="j", channel="a")   # weight 1/4
    t2 = ev(T - hl, "click", device_id="j", channel="b")       # weight 1/2
    t3 = ev(T, "click", device_id="j", channel="c")            # weight 1
    conv = ev(T, "install", device_id="j", revenue=7.0)
    out = _run([t3, t1, t2, conv], function="attribute", model="time_decay",
               conversion=["install"], **dict(base, half_life_us=hl))
    assert [r["channel"] for r in out] == ["a", "b", "c"]
    for r, want in zip(out, (1 / 7, 2 / 7, 4 / 7)):
        assert _close(r["credit"], want) and _close(r["revenue"], 7.0 * want), (r, want)

    # -- position_based --------------------------------------------------------------------
    out = _run([t3, t1, t2, conv], function="attribute", model="position_based",
               conversion=["install"], **base)
    assert [r["credit"] for r in out] == [0.4, 0.2, 0.4], out
    t4 = ev(T - 3 * hl, "click", device_id="j", channel="z")
    out = _run([t3, t1, t2, t4, conv], function="attribute", model="position_based",
               conversion=["install"], **base)
    assert [r["channel"] for r in out] == ["z", "a", "b", "c"]
    assert all(_close(r["credit"], w) for r, w in zip(out, (0.4, 0.1, 0.1, 0.4))), out
    # same ts: tie broken by event_id
    s1 = dict(event_id="00000000-0000-0000-0000-0000000000b2", ts=T - H, event_type="click",
              device_id="k", channel="second")
    s2 = dict(event_id="00000000-0000-0000-0000-0000000000a1", ts=T - H, event_type="click",
              device_id="k", channel="first")
    conv = ev(T, "install", device_id="k")
    out = _run([s1, s2, conv], function="attribute", model="first_touch",
               conversion=["install"], **base)
    assert [r["channel"] for r in out] == ["first"], out
    out = _run([s1, s2, conv], function="attribute", model="position_based",
               conversion=["install"], **base)
    assert [(r["channel"], r["credit"]) for r in out] == [("first", 0.5), ("second", 0.5)]

    # -- rule-based attribute_channels: sums of attribute rows, NULL channel, organic ---------
    rows = [
        ev(T - H, "click", device_id="m1", channel="a"),
        ev(T - 2 * H, "click", device_id="m1", channel=None),
        ev(T, "install", device_id="m1", revenue=10.0),
        ev(T, "install", device_id="m2", revenue=2.0),        # organic
    ]
    out = _run(rows, function="attribute_channels", model="linear", conversion=["install"], **base)
    assert out == [dict(channel="a", conversions=0.5, revenue=5.0),
                   dict(channel="organic", conversions=1.0, revenue=2.0),
                   dict(channel=None, conversions=0.5, revenue=5.0)], out

    # -- markov, 2 channels -------------------------------------------------------------------
    # paths: [A,B] -> conv (rev 30), [B] -> conv (rev 60), [A] -> null (device n2, no conversion)
    # START: A 2/3, B 1/3; A: B 1/2, NULL 1/2; B: CONV 1 => P = 2/3*1/2 + 1/3 = 2/3
    # remove A: P' = 1/3, effect 1/2; remove B: P' = 0, effect 1
    # conversions 2 split 1/3 : 2/3, revenue 90 likewise; plus one organic (rev 5)
    rows = [
        ev(T - 3 * H, "click", device_id="n1", channel="A"),
        ev(T - 2 * H, "click", device_id="n1", channel="B"),
        ev(T, "install", device_id="n1", revenue=30.0),
        ev(T - 2 * H, "click", device_id="n2", channel="A"),
        ev(T - H, "impression", device_id="n3", channel="B"),
        ev(T, "install", device_id="n3", revenue=60.0),
        ev(T, "install", device_id="n4", revenue=5.0),
    ]
    out = _by_channel(_run(rows, function="attribute_channels", model="markov",
                           conversion=["install"], markov_order=1, **base))
    assert set(out) == {"A", "B", "organic"}, out
    assert _close(out["A"][0], 2 / 3) and _close(out["A"][1], 30.0), out
    assert _close(out["B"][0], 4 / 3) and _close(out["B"][1], 60.0), out
    assert out["organic"] == (1.0, 5.0)
    # direct check of the chain numbers
    counts = markov_counts([["A", "B"], ["B"]], [["A"]], 1)
    assert _close(markov_conversion_probability(counts), 2 / 3)
    eff = markov_effects([["A", "B"], ["B"]], [["A"]], 1, ["A", "B"])
    assert _close(eff["A"], 0.5) and _close(eff["B"], 1.0), eff
    # order 2 on paths [A,A,B]->conv, [A,B]->null:
    # START->(A):2; (A)->(A,A):1, (A)->(A,B):1; (A,A)->(A,B):1; (A,B)->CONV:1, NULL:1
    # P = 1/2*1/2 + 1/2*1/2 = 1/2; remove A: 0 (effect 1); remove B: 0 (effect 1)
    counts = markov_counts([["A", "A", "B"]], [["A", "B"]], 2)
    assert counts[("A",)] == {("A", "A"): 1, ("A", "B"): 1}, counts
    assert _close(markov_conversion_probability(counts), 0.5)
    # self-loop at order 1: [A,A]->conv, [A]->null: A: A 1/3, CONV 1/3, NULL 1/3 => P = 1/2
    counts = markov_counts([["A", "A"]], [["A"]], 1)
    assert _close(markov_conversion_probability(counts), 0.5)
    # no conversions at all: all zero, but channels listed
    rows_nc = [ev(T - H, "click", device_id="q", channel="A")]
    out = _run(rows_nc, function="attribute_channels", model="markov", conversion=["install"], **base)
    assert out == [dict(channel="A", conversions=0.0, revenue=0.0)], out

    # -- shapley, 2 channels ----------------------------------------------------------------
    # paths: {A} conv, {A} null, {B} conv, {A,B} conv: r(A)=1/2, r(B)=1, r(AB)=1
    # cumulative v: v(A)=1/2, v(B)=1, v(AB)=5/2
    # phi_A = 1/2*(1/2 - 0) + 1/2*(5/2 - 1) = 1; phi_B = 1/2*1 + 1/2*(5/2 - 1/2) = 3/2
    # 3 attributed conversions (rev 4+8+12 = 24) split 2:3: A 1.2 / 9.6, B 1.8 / 14.4
    rows = [
        ev(T - H, "click", device_id="s1", channel="A"),
        ev(T, "install", device_id="s1", revenue=4.0),
        ev(T - 20 * D, "click", device_id="s2", channel="A"),  # outside every window: remaining
        ev(T - H, "click", device_id="s3", channel="B"),
        ev(T, "install", device_id="s3", revenue=8.0),
        ev(T - 2 * H, "click", device_id="s4", channel="B"),
        ev(T - H, "click", device_id="s4", channel="A"),
        ev(T, "install", device_id="s4", revenue=12.0),
    ]
    out = _by_channel(_run(rows, function="attribute_channels", model="shapley",
                           conversion=["install"], **base))
    assert set(out) == {"A", "B"}, out
    assert _close(out["A"][0], 1.2) and _close(out["A"][1], 9.6), out
    assert _close(out["B"][0], 1.8) and _close(out["B"][1], 14.4), out
    phi = shapley_values([["A"], ["B"], ["B", "A"]], [["A"]], ["A", "B"])
    assert phi == {"A": Fraction(1), "B": Fraction(3, 2)}, phi
    # no path holds every channel: {A} conv, {B} null gives phi_A = 1, phi_B = 0
    assert shapley_values([["A"]], [["B"]], ["A", "B"]) == {"A": Fraction(1), "B": Fraction(0)}
    rows = [
        ev(T - H, "click", device_id="w1", channel="A"),
        ev(T, "install", device_id="w1", revenue=1.0),
        ev(T - H, "click", device_id="w2", channel="B"),
    ]
    out = _run(rows, function="attribute_channels", model="shapley", conversion=["install"], **base)
    assert out == [dict(channel="A", conversions=1.0, revenue=1.0),
                   dict(channel="B", conversions=0.0, revenue=0.0)], out
    # the observed-set form equals the literal subset formula
    conv_p = [["a", "b"], ["c"], ["a", "c", "d"], ["d", None], ["b"], ["a", "b", "c", "d"]]
    null_p = [["a"], ["c"], ["a", "b"], [None], ["d", "b"]]
    chans = ["a", "b", "c", "d", None]
    assert shapley_values_unanimity(conv_p, null_p, chans) == shapley_values_by_subsets(conv_p, null_p, chans)

    # -- remaining touchpoints: candidates of any match kind are used; since bound ----------
    prm = dict(base, probabilistic_window_us=1000, since_us=T - D)
    rows = [
        # used by the fingerprint conversion below although on another device
        ev(T - 100, "click", device_id="r1", ip="5.5.5.5", user_agent="ua", channel="F"),
        ev(T, "install", device_id=None, ip="5.5.5.5", user_agent="ua"),
        # dropped by click beats impression: not a candidate, so remaining
        ev(T - 2 * H, "click", device_id="r2", channel="C"),
        ev(T - H, "impression", device_id="r2", channel="I"),
        ev(T, "install", device_id="r2"),
        # since - max(windows) = T - 8 days: inside / outside
        ev(T - 8 * D, "click", device_id="r3", channel="in"),
        ev(T - 8 * D - 1, "click", device_id="r3", channel="out"),
        # no device: left out
        ev(T - H, "click", device_id=None, channel="nodev"),
    ]
    events = read_events(io.StringIO(_csv(rows)))
    p = Params.from_json(dict(prm, function="attribute_channels", model="markov", conversion=["install"]))
    ms = match_all(events, p)
    assert remaining_paths(events, ms, p) == [["I"], ["in"]], remaining_paths(events, ms, p)

    # -- scope: app / since / until on conversions ------------------------------------------
    rows = [
        ev(T - H, "click", device_id="u", channel="a"),
        ev(T, "install", device_id="u"),
        ev(T + H, "install", device_id="u"),
        ev(T, "install", app_id="other", device_id="u"),
    ]
    out = _run(rows, function="attribute", model="last_touch", conversion=["install"],
               **dict(base, app="app", since_us=T, until_us=T + H))
    assert [(r["app_id"], r["conversion_time"]) for r in out] == [("app", T)], out

    print("ok")


# --------------------------------------------------------------------------------------

def main(argv):
    if len(argv) == 2 and argv[1] == "--self-test":
        self_test()
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], newline="", encoding="utf-8") as f:
        events = read_events(f)
    with open(argv[2], encoding="utf-8") as f:
        params = Params.from_json(json.load(f))
    json.dump(run(events, params), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
