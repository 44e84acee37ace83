// The PostgreSQL JDBC driver against a running Lookback (engine/tests/sql_drivers.rs runs this
// as a single-file program: java -cp postgresql.jar JdbcClient.java PORT).
//
// Connects, reads the metadata BI tools read first (DatabaseMetaData tables and columns),
// creates a table with every Lookback type, inserts with a PreparedStatement, copies rows in
// and out with the driver's CopyManager, runs parametrized queries, reads every type back with
// the right Java value, and checks SQLSTATEs. Exits non-zero on the first mismatch.

import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.UUID;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class JdbcClient {
    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
    }

    static void expectState(Statement s, String sql, String code) {
        try {
            s.execute(sql);
        } catch (SQLException e) {
            check(code.equals(e.getSQLState()), sql + ": SQLSTATE " + e.getSQLState() + " " + e.getMessage());
            return;
        }
        throw new AssertionError(sql + " did not fail");
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/lookback";
        try (Connection c = DriverManager.getConnection(url, "lookback", "")) {
            DatabaseMetaData meta = c.getMetaData();
            check(meta.getDatabaseProductName().equals("PostgreSQL"), "product " + meta.getDatabaseProductName());
            boolean sawEvents = false;
            try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                while (rs.next()) sawEvents |= rs.getString("TABLE_NAME").equals("events");
            }
            check(sawEvents, "getTables lists events");
            int columns = 0;
            try (ResultSet rs = meta.getColumns(null, "public", "events", "%")) {
                while (rs.next()) columns++;
            }
            check(columns == 14, "getColumns(events) gave " + columns);

            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS jdbc_types");
                s.execute("CREATE TABLE jdbc_types (b boolean, i bigint, f double precision, t text NOT NULL, ts timestamptz, u uuid)");
            }
            OffsetDateTime ts1 = OffsetDateTime.of(2026, 11, 21, 10, 30, 15, 123_456_000, ZoneOffset.UTC);
            UUID u1 = UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
            try (PreparedStatement p = c.prepareStatement("INSERT INTO jdbc_types (b, i, f, t, ts, u) VALUES (?, ?, ?, ?, ?, ?)")) {
                p.setBoolean(1, true);
                p.setLong(2, 9_007_199_254_740_993L);
                p.setDouble(3, 2.5);
                p.setString(4, "héllo, wörld");
                p.setObject(5, ts1);
                p.setString(6, u1.toString());
                check(p.executeUpdate() == 1, "insert count");
            }
            CopyManager copy = ((PGConnection) c.unwrap(PGConnection.class)).getCopyAPI();
            long copied = copy.copyIn("COPY jdbc_types (b, i, f, t, ts, u) FROM STDIN (FORMAT csv, HEADER)",
                new StringReader("b,i,f,t,ts,u\nf,-7,-0.125,copied,2026-01-02T03:04:05Z,\n,,,copied null,,\n"));
            check(copied == 2, "copyIn count " + copied);

            try (PreparedStatement p = c.prepareStatement("SELECT b, i, f, t, ts, u FROM jdbc_types WHERE t = ?")) {
                // Run it enough times for the driver to switch to a server-side prepared statement.
                for (int run = 0; run < 6; run++) {
                    p.setString(1, "héllo, wörld");
                    try (ResultSet rs = p.executeQuery()) {
                        check(rs.next(), "row");
                        check(rs.getBoolean(1), "b");
                        check(rs.getLong(2) == 9_007_199_254_740_993L, "i " + rs.getLong(2));
                        check(rs.getDouble(3) == 2.5, "f");
                        check(rs.getString(4).equals("héllo, wörld"), "t " + rs.getString(4));
                        check(rs.getObject(5, OffsetDateTime.class).isEqual(ts1), "ts " + rs.getString(5));
                        check(rs.getString(6).equals(u1.toString()), "u " + rs.getString(6));
                        check(!rs.next(), "one row");
                    }
                }
            }
            try (PreparedStatement p = c.prepareStatement("SELECT b, i, t, ts, u FROM jdbc_types WHERE i < ?")) {
                p.setLong(1, 0);
                try (ResultSet rs = p.executeQuery()) {
                    check(rs.next(), "copied row");
                    check(!rs.getBoolean(1) && !rs.wasNull(), "b false");
                    check(rs.getLong(2) == -7, "i");
                    check(rs.getString(3).equals("copied"), "t");
                    check(rs.getObject(4, OffsetDateTime.class).isEqual(OffsetDateTime.of(2026, 1, 2, 3, 4, 5, 0, ZoneOffset.UTC)), "ts");
                    check(rs.getString(5) == null, "u null");
                }
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*), count(b) FROM jdbc_types")) {
                check(rs.next() && rs.getLong(1) == 3 && rs.getLong(2) == 2, "counts");
            }
            StringWriter out = new StringWriter();
            copy.copyOut("COPY (SELECT t, i FROM jdbc_types WHERE i IS NOT NULL ORDER BY i) TO STDOUT (FORMAT csv)", out);
            check(out.toString().equals("copied,-7\n\"héllo, wörld\",9007199254740993\n"), "copyOut " + out);

            try (Statement s = c.createStatement()) {
                expectState(s, "SELECT * FROM no_such", "42P01");
                expectState(s, "SELECT no_col FROM jdbc_types", "42703");
                expectState(s, "SELEC 1", "42601");
                s.execute("DROP TABLE jdbc_types");
            }
        }
        System.out.println("jdbc: ok");
    }
}
