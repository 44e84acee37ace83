"""psycopg 3 against a running Lookback (engine/tests/sql_drivers.rs runs this).

Connects, creates a table with every Lookback type, inserts with bound parameters (server-side
parameters over the extended protocol), copies rows in with COPY FROM STDIN and out with COPY
TO STDOUT, runs parametrized queries, reads every type back with the right Python value, and
checks SQLSTATEs. Exits non-zero on the first mismatch.
"""

import datetime as dt
import sys
import threading
import time
import uuid

import psycopg

UTC = dt.timezone.utc


def main(port: int) -> None:
    conn = psycopg.connect(host="127.0.0.1", port=port, user="lookback", dbname="lookback", autocommit=True)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS py_types")
    cur.execute(
        "CREATE TABLE py_types (b boolean, i bigint, f double precision, t text NOT NULL, ts timestamptz, u uuid)"
    )
    u1 = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
    ts1 = dt.datetime(2026, 11, 21, 10, 30, 15, 123456, tzinfo=UTC)
    cur.execute(
        "INSERT INTO py_types (b, i, f, t, ts, u) VALUES (%s, %s, %s, %s, %s, %s)",
        (True, 9_007_199_254_740_993, 2.5, "héllo, wörld", ts1, str(u1)),
    )
    cur.execute("INSERT INTO py_types (t) VALUES (%s)", ("nulls",))
    with cur.copy("COPY py_types (b, i, f, t, ts, u) FROM STDIN") as copy:
        copy.write_row((False, -7, -0.125, "copied\ttab", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None))
        copy.write_row((None, None, None, "copied null", None, None))
    assert cur.rowcount == 2, cur.rowcount

    cur.execute("SELECT b, i, f, t, ts, u FROM py_types WHERE t = %s", ("héllo, wörld",))
    row = cur.fetchone()
    assert row == (True, 9_007_199_254_740_993, 2.5, "héllo, wörld", ts1, str(u1)), row
    cur.execute("SELECT b, i, f, t, ts, u FROM py_types WHERE i < %s", (0,))
    row = cur.fetchone()
    assert row == (False, -7, -0.125, "copied\ttab", dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None), row
    cur.execute("SELECT count(*), count(b), count(ts) FROM py_types")
    assert cur.fetchone() == (4, 2, 2)

    # Binary results, as psycopg asks for them with binary=True.
    cur.execute("SELECT b, i, f, t, ts FROM py_types WHERE t = %s", ("héllo, wörld",), binary=True)
    assert cur.fetchone() == (True, 9_007_199_254_740_993, 2.5, "héllo, wörld", ts1)

    # An untyped NULL parameter (psycopg sends None with no type) keeps its place: the later
    # parameters do not shift left.
    cur.execute("SELECT %s, %s, %s", (None, "x", None))
    assert cur.fetchone() == (None, "x", None)

    # Parametrized query, prepared once and run many times.
    for i in range(5):
        cur.execute("SELECT count(*) FROM py_types WHERE t <> %s AND %s >= 0", ("nope", i), prepare=True)
        assert cur.fetchone() == (4,)

    lines = []
    with cur.copy("COPY (SELECT t, i FROM py_types WHERE i IS NOT NULL ORDER BY i) TO STDOUT (FORMAT csv)") as copy:
        for data in copy:
            lines.append(bytes(data).decode())
    assert "".join(lines) == "copied\ttab,-7\n\"héllo, wörld\",9007199254740993\n", lines

    for sql, code in [
        ("SELECT * FROM no_such", "42P01"),
        ("SELECT no_col FROM py_types", "42703"),
        ("SELEC 1", "42601"),
        ("INSERT INTO py_types (t) VALUES (NULL)", "23502"),
    ]:
        try:
            cur.execute(sql)
        except psycopg.Error as e:
            assert e.sqlstate == code, (sql, e.sqlstate, str(e))
        else:
            raise AssertionError(f"{sql} did not fail")

    # A cancel request stops a running query with 57014, over the simple and the extended
    # protocol, and the connection goes on.
    for params in [None, (5,)]:
        sql = "SELECT count(*) FROM generate_series(1, 2000000000) AS g(a)" + (" WHERE a > %s" if params else "")
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        started = time.monotonic()
        try:
            cur.execute(sql, params)
        except psycopg.errors.QueryCanceled as e:
            assert e.sqlstate == "57014", e.sqlstate
        else:
            raise AssertionError(f"{sql} was not cancelled")
        assert time.monotonic() - started < 30, "cancel took effect late"
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)

    attribution_with_parameters(cur)

    cur.execute("DROP TABLE py_types")
    conn.close()
    print("psycopg: ok")


def attribution_with_parameters(cur) -> None:
    """attribute(...) and attribute_channels(...) with bound arguments: text, timestamps,
    intervals (timedelta), integers and NULL, once and prepared; bad values get 22023."""
    click = dt.datetime(2026, 10, 1, 10, 0, tzinfo=UTC)
    install = dt.datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    cur.execute(
        "INSERT INTO events (event_id, app_id, ts, event_type, device_id, channel, campaign, revenue) VALUES"
        " (%s, 'py.attr', %s, 'click', 'pd1', 'meta', 'm1', NULL),"
        " (%s, 'py.attr', %s, 'install', 'pd1', NULL, NULL, 3.5)",
        (str(uuid.UUID(int=0xB1)), click, str(uuid.UUID(int=0xB2)), install),
    )
    one = "SELECT channel, campaign, credit, revenue FROM attribute(model => %s, app => %s, since => %s, until => %s)"
    window = (install, install + dt.timedelta(microseconds=1))
    for prepare in (False, True, True, True, True, True):
        cur.execute(one, ("last_touch", "py.attr", *window), prepare=prepare)
        assert cur.fetchall() == [("meta", "m1", 1.0, 3.5)]
    # A one-hour click window (a timedelta) leaves the click two hours before out: organic.
    cur.execute(
        "SELECT channel, credit FROM attribute(app => %s, click_window => %s, since => %s, until => %s)",
        ("py.attr", dt.timedelta(hours=1), *window),
    )
    assert cur.fetchall() == [("organic", 1.0)]
    # Strings for intervals and timestamps, as in SQL; NULL for an argument is its default.
    cur.execute(
        "SELECT channel FROM attribute(app => %s, click_window => %s, view_window => %s, since => %s)",
        ("py.attr", "3 hours", None, "2026-10-01 11:00:00"),
    )
    assert cur.fetchall() == [("meta",)]
    cur.execute(
        "SELECT channel, conversions, revenue FROM attribute_channels(model => %s, app => %s, markov_order => %s)",
        ("markov", "py.attr", 2),
    )
    assert cur.fetchall() == [("meta", 1.0, 3.5)]
    for params, says in [
        (("nope", "py.attr", *window), "unknown model 'nope'"),
        (("last_touch", "py.attr", "yesterday-ish", install), "since must be a timestamp"),
    ]:
        try:
            cur.execute(one, params)
        except psycopg.Error as e:
            assert e.sqlstate == "22023", (params, e.sqlstate, str(e))
            assert says in str(e), (says, str(e))
        else:
            raise AssertionError(f"attribute(...) with {params} did not fail")


if __name__ == "__main__":
    main(int(sys.argv[1]))
