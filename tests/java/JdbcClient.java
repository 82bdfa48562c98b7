// pgjdbc (Debian's libpostgresql-jdbc-java, the driver DBeaver, Tableau and
// Metabase use) against Loch. Prints one JSON line per check; the Rust test
// (tests/tests/clients.rs) compares them with in-process DataFusion.
//
// usage: java -cp /usr/share/java/postgresql.jar JdbcClient.java PORT
// (password from PGPASSWORD). Cells are ["i", n], ["d", "1.50"],
// ["f", x], ["s", "text"] or null, as the Python clients print them.

import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public class JdbcClient {
    static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                default:
                    if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
                    else b.append(c);
            }
        }
        return b.append('"').toString();
    }

    static String cell(Object v) {
        if (v == null) return "null";
        if (v instanceof Boolean) return "[\"b\"," + v + "]";
        if (v instanceof Integer || v instanceof Long || v instanceof Short)
            return "[\"i\"," + v + "]";
        if (v instanceof BigDecimal) return "[\"d\"," + quote(((BigDecimal) v).toPlainString()) + "]";
        if (v instanceof Double || v instanceof Float) return "[\"f\"," + v + "]";
        return "[\"s\"," + quote(v.toString()) + "]";
    }

    static String rows(ResultSet rs) throws SQLException {
        int n = rs.getMetaData().getColumnCount();
        List<String> out = new ArrayList<>();
        while (rs.next()) {
            List<String> row = new ArrayList<>();
            for (int i = 1; i <= n; i++) row.add(cell(rs.getObject(i)));
            out.add("[" + String.join(",", row) + "]");
        }
        return "[" + String.join(",", out) + "]";
    }

    static String strings(List<String> values) {
        List<String> quoted = new ArrayList<>();
        for (String v : values) quoted.add(quote(v));
        return "[" + String.join(",", quoted) + "]";
    }

    static void emit(String check, String fields) {
        System.out.println("{\"check\":" + quote(check) + "," + fields + "}");
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/loch";
        try (Connection c = DriverManager.getConnection(url, "loch", System.getenv("PGPASSWORD"))) {
            DatabaseMetaData md = c.getMetaData();
            emit("product", "\"name\":" + quote(md.getDatabaseProductName())
                + ",\"version\":" + quote(md.getDatabaseProductVersion()));

            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = md.getSchemas()) {
                while (rs.next()) schemas.add(rs.getString("TABLE_SCHEM"));
            }
            emit("schemas", "\"names\":" + strings(schemas));

            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "tpch", "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
            }
            emit("tables", "\"names\":" + strings(tables));

            List<String> columns = new ArrayList<>();
            try (ResultSet rs = md.getColumns(null, "tpch", "lineitem", "%")) {
                while (rs.next()) {
                    columns.add("[" + quote(rs.getString("COLUMN_NAME")) + ","
                        + quote(rs.getString("TYPE_NAME")) + ","
                        + rs.getInt("COLUMN_SIZE") + "," + rs.getInt("DECIMAL_DIGITS") + "]");
                }
            }
            emit("columns", "\"columns\":[" + String.join(",", columns) + "]");

            List<String> types = new ArrayList<>();
            try (ResultSet rs = md.getTypeInfo()) {
                while (rs.next()) types.add(rs.getString("TYPE_NAME"));
            }
            emit("type_info", "\"names\":" + strings(types));

            try (PreparedStatement ps = c.prepareStatement(
                    "select n_nationkey, n_name from tpch.nation "
                    + "where n_regionkey = ? and n_nationkey > ? order by 1")) {
                for (int region = 1; region <= 2; region++) {
                    ps.setInt(1, region);
                    ps.setLong(2, 5);
                    try (ResultSet rs = ps.executeQuery()) {
                        emit("prepared_" + region, "\"rows\":" + rows(rs));
                    }
                }
            }

            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery(
                     "select l_extendedprice, l_discount from tpch.lineitem limit 1")) {
                ResultSetMetaData m = rs.getMetaData();
                emit("result_metadata", "\"type\":" + quote(m.getColumnTypeName(1))
                    + ",\"precision\":" + m.getPrecision(1) + ",\"scale\":" + m.getScale(1));
            }

            try (Statement s = c.createStatement()) {
                try {
                    s.executeQuery("select 1 / 0");
                    emit("error", "\"sqlstate\":null");
                } catch (SQLException e) {
                    emit("error", "\"sqlstate\":" + quote(e.getSQLState()));
                }
                try (ResultSet rs = s.executeQuery("select 40 + 2")) {
                    emit("after_error", "\"rows\":" + rows(rs));
                }
            }

            // Cursor mode: a fetch size outside autocommit reads the result
            // a portal at a time (Execute with a row limit).
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.setFetchSize(1000);
                try (ResultSet rs = s.executeQuery(
                        "select o_orderkey, o_totalprice from tpch.orders order by 1")) {
                    emit("fetch_size", "\"rows\":" + rows(rs));
                }
            }
            c.commit();

            // A savepoint, a failing statement, back to the savepoint, and
            // the transaction goes on.
            try (Statement s = c.createStatement()) {
                Savepoint sp = c.setSavepoint("before_error");
                try {
                    s.executeQuery("select * from tpch.no_such_table");
                    emit("savepoint_error", "\"sqlstate\":null");
                } catch (SQLException e) {
                    emit("savepoint_error", "\"sqlstate\":" + quote(e.getSQLState()));
                }
                c.rollback(sp);
                try (ResultSet rs = s.executeQuery("select count(*) from tpch.region")) {
                    emit("after_savepoint", "\"rows\":" + rows(rs));
                }
                c.releaseSavepoint(c.setSavepoint("released"));
            }
            c.commit();
        }
    }
}
