import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.util.Properties;

/**
 * Drives etar's ClickHouse endpoint with the official JDBC driver and its default settings, as
 * a SQL IDE does: connect, version(), a prepared statement with a timestamp, the metadata an IDE
 * reads first, a batch insert of 1,000 rows read back, and a server error with its code. Prints
 * "ok: <what>" lines; exits 1 on the first failure.
 *
 * <p>Usage: java JdbcCheck URL USER PASSWORD TABLE
 */
public final class JdbcCheck {
    private static void check(boolean condition, String what) {
        if (!condition) {
            System.err.println("FAIL: " + what);
            System.exit(1);
        }
        System.out.println("ok: " + what);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        String table = args[3];
        Properties properties = new Properties();
        properties.setProperty("user", args[1]);
        properties.setProperty("password", args[2]);
        try (Connection conn = DriverManager.getConnection(url, properties)) {
            try (Statement st = conn.createStatement();
                 ResultSet rs = st.executeQuery("SELECT version()")) {
                check(rs.next() && rs.getString(1).matches("\\d+\\.\\d+.*"),
                      "SELECT version() = " + rs.getString(1));
            }
            Timestamp when = Timestamp.valueOf("2026-03-01 12:30:15.123");
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT toDateTime64(?, 3, 'UTC') + INTERVAL 1 SECOND AS later, ? AS label")) {
                ps.setTimestamp(1, when);
                ps.setString(2, "it's");
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "prepared statement returns a row");
                    long delta = rs.getTimestamp(1).getTime() - when.getTime();
                    check(delta == 1000 && "it's".equals(rs.getString(2)),
                          "prepared statement with a timestamp parameter (+" + delta + " ms)");
                }
            }
            try (Statement st = conn.createStatement()) {
                st.execute("CREATE TABLE " + table + " (id UInt64, name String, "
                           + "ts DateTime64(3, 'UTC'), score Nullable(Float64)) "
                           + "ENGINE = MergeTree ORDER BY id");
            }
            try {
                DatabaseMetaData meta = conn.getMetaData();
                boolean found = false;
                try (ResultSet rs = meta.getTables(null, "default", table, null)) {
                    while (rs.next()) {
                        found |= table.equals(rs.getString("TABLE_NAME"));
                    }
                }
                check(found, "DatabaseMetaData.getTables finds " + table);
                StringBuilder columns = new StringBuilder();
                try (ResultSet rs = meta.getColumns(null, "default", table, null)) {
                    while (rs.next()) {
                        columns.append(rs.getString("COLUMN_NAME")).append(':')
                               .append(rs.getString("TYPE_NAME")).append(' ');
                    }
                }
                check(columns.toString().trim().equals(
                          "id:UInt64 name:String ts:DateTime64(3, 'UTC') score:Nullable(Float64)"),
                      "DatabaseMetaData.getColumns = " + columns.toString().trim());

                try (PreparedStatement ps = conn.prepareStatement(
                        "INSERT INTO " + table + " (id, name, ts, score) VALUES (?, ?, ?, ?)")) {
                    for (int i = 0; i < 1000; i++) {
                        ps.setLong(1, i);
                        ps.setString(2, "row-" + i);
                        ps.setTimestamp(3, new Timestamp(when.getTime() + i));
                        if (i % 3 == 0) {
                            ps.setNull(4, java.sql.Types.DOUBLE);
                        } else {
                            ps.setDouble(4, i / 2.0);
                        }
                        ps.addBatch();
                    }
                    int[] counts = ps.executeBatch();
                    check(counts.length == 1000, "batch insert of 1000 rows");
                }
                try (Statement st = conn.createStatement();
                     ResultSet rs = st.executeQuery("SELECT count(), sum(id), countIf(score IS NULL), "
                                                    + "argMax(name, id) FROM " + table)) {
                    check(rs.next() && rs.getLong(1) == 1000 && rs.getLong(2) == 499500
                          && rs.getLong(3) == 334 && "row-999".equals(rs.getString(4)),
                          "1000 rows read back");
                }
                try (Statement st = conn.createStatement()) {
                    st.executeQuery("SELECT * FROM no_such_table_" + table);
                    check(false, "a query on a missing table fails");
                } catch (SQLException error) {
                    check(error.getErrorCode() == 60,
                          "server error surfaced with code " + error.getErrorCode() + ": "
                          + error.getMessage().split("\n")[0]);
                }
            } finally {
                try (Statement st = conn.createStatement()) {
                    st.execute("DROP TABLE IF EXISTS " + table);
                }
            }
        }
    }
}
