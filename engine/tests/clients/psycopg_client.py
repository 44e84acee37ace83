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

    cur.execute("DROP TABLE py_types")
    conn.close()
    print("psycopg: ok")


if __name__ == "__main__":
    main(int(sys.argv[1]))
