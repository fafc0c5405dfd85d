package org.patientgraph.launcher;

import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

import inet.ipaddr.IPAddressString;
import org.neo4j.configuration.GraphDatabaseInternalSettings;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.connectors.HttpsConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.graphdb.GraphDatabaseService;
import org.neo4j.io.ByteUnit;

/**
 * Runs a local Neo4j 5.26 Community DBMS (embedded) with only the Bolt connector, on
 * 127.0.0.1, authentication on. For development and tests of PatientGraph.
 *
 * <pre>
 * usage: Neo4jLauncher HOME_DIR [PORT] [--reset-password]
 *   HOME_DIR          the server's home (data/ and logs/ are created inside)
 *   PORT              Bolt port on 127.0.0.1 (default 7687)
 *   --reset-password  set the password of user neo4j from NEO4J_PASSWORD even if it was set before
 * environment:
 *   NEO4J_PASSWORD    password of user neo4j (required; at least 8 characters); it is set on the
 *                     system database at the first start (while Bolt is still closed), and never
 *                     printed
 * stdout:
 *   "READY bolt://127.0.0.1:PORT" once Bolt accepts connections; "STOPPED" after a clean shutdown
 *   (SIGTERM / SIGINT); "ERROR ..." and exit code 1 (2 for bad usage) on failure.
 * </pre>
 *
 * Heap size is the caller's (java -Xmx...); the page cache is 256 MiB unless the system property
 * patientgraph.pagecache (e.g. -Dpatientgraph.pagecache=512) gives another size in MiB.
 * Nodes with at least patientgraph.dense (default 10, Neo4j's own default is 50) relationships
 * keep them grouped by type, so a patient's few HAS_STUDY edges are read without walking its
 * SIMILAR_TO edges (cohort queries); it applies to nodes as they are written.
 */
public final class Neo4jLauncher {

    static final String HOST = "127.0.0.1";
    static final int DEFAULT_PORT = 7687;
    static final String USER = "neo4j";
    static final String MARKER = "patientgraph-password-set";

    private Neo4jLauncher() {
    }

    public static void main(String[] args) {
        PrintStream out = System.out;
        Path home = null;
        int port = DEFAULT_PORT;
        boolean resetPassword = false;
        for (String a : args) {
            if (a.equals("--reset-password")) {
                resetPassword = true;
            } else if (a.equals("-h") || a.equals("--help")) {
                out.println("usage: Neo4jLauncher HOME_DIR [PORT] [--reset-password]"
                        + " (password from env NEO4J_PASSWORD)");
                return;
            } else if (home == null) {
                home = Path.of(a).toAbsolutePath();
            } else {
                try {
                    port = Integer.parseInt(a);
                } catch (NumberFormatException e) {
                    fail(2, "PORT must be a number, got '" + a + "'");
                }
                if (port < 1 || port > 65535) {
                    fail(2, "PORT must be in 1..65535, got " + port);
                }
            }
        }
        if (home == null) {
            fail(2, "usage: Neo4jLauncher HOME_DIR [PORT] [--reset-password]");
        }
        String password = System.getenv("NEO4J_PASSWORD");
        if (password == null || password.isEmpty()) {
            fail(2, "the environment variable NEO4J_PASSWORD is not set"
                    + " (export NEO4J_PASSWORD=... with at least 8 characters)");
        }
        if (password.length() < 8) {
            fail(2, "NEO4J_PASSWORD must have at least 8 characters (Neo4j's minimum)");
        }

        try {
            Files.createDirectories(home);
            Path marker = home.resolve(MARKER);
            boolean systemDbExists = Files.isDirectory(home.resolve("data/databases/system"));
            if (resetPassword || !Files.exists(marker) || !systemDbExists) {
                provisionPassword(home, password);
                Files.writeString(marker, "password of user neo4j set from NEO4J_PASSWORD\n",
                        StandardCharsets.UTF_8);
            }
            serve(home, port, out);
        } catch (Throwable t) {
            t.printStackTrace();
            fail(1, t.getClass().getSimpleName() + ": " + firstLine(t.getMessage()));
        }
    }

    /** Common settings: 127.0.0.1 only, no HTTP(S), auth on, small memory. */
    private static DatabaseManagementServiceBuilder builder(Path home, boolean bolt, int port) {
        long pageCacheMiB = Long.getLong("patientgraph.pagecache", 256L);
        int denseThreshold = Integer.getInteger("patientgraph.dense", 10);
        return new DatabaseManagementServiceBuilder(home)
                .setConfig(GraphDatabaseSettings.default_listen_address, new SocketAddress(HOST))
                .setConfig(GraphDatabaseSettings.default_advertised_address, new SocketAddress(HOST))
                .setConfig(GraphDatabaseSettings.auth_enabled, true)
                .setConfig(GraphDatabaseSettings.udc_enabled, false)
                .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.mebiBytes(pageCacheMiB))
                .setConfig(GraphDatabaseSettings.dense_node_threshold, denseThreshold)
                // small transaction logs, not preallocated: a fresh folder is ~5 MB, not ~500 MB
                .setConfig(GraphDatabaseSettings.keep_logical_logs, "256M size")
                .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold,
                        ByteUnit.mebiBytes(64))
                .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
                .setConfig(HttpConnector.enabled, false)
                .setConfig(HttpsConnector.enabled, false)
                .setConfig(BoltConnector.enabled, bolt)
                .setConfig(BoltConnector.listen_address, new SocketAddress(HOST, port))
                .setConfig(BoltConnector.advertised_address, new SocketAddress(HOST, port))
                // No file access from Cypher: LOAD CSV may read only an empty import folder,
                // file:// URLs are off, and no address may be fetched (http:// LOAD CSV).
                .setConfig(GraphDatabaseSettings.allow_file_urls, false)
                .setConfig(GraphDatabaseSettings.load_csv_file_url_root, importDir(home))
                .setConfig(GraphDatabaseInternalSettings.cypher_ip_blocklist,
                        List.of(new IPAddressString("0.0.0.0/0"), new IPAddressString("::/0")))
                // Netty's graceful shutdown waits 2 x 5 s by default; a dev server need not.
                .setConfig(GraphDatabaseInternalSettings.netty_server_shutdown_quiet_period, 0);
    }

    /** An empty folder (owner only) as the import root, so LOAD CSV finds nothing to read. */
    private static Path importDir(Path home) {
        Path dir = home.resolve("import");
        try {
            Files.createDirectories(dir);
            Files.setPosixFilePermissions(dir, PosixFilePermissions.fromString("rwx------"));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return dir;
    }

    /**
     * Sets the password of user neo4j on the system database, with Bolt closed so that nobody can
     * log in with the default password in between.
     */
    private static void provisionPassword(Path home, String password) {
        DatabaseManagementService dbms = builder(home, false, DEFAULT_PORT).build();
        try {
            GraphDatabaseService system = dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME);
            Map<String, Object> params = Map.of("u", USER, "pw", password);
            try {
                // A new system database has user neo4j with password "neo4j", change required.
                system.executeTransactionally(
                        "ALTER USER $u SET PASSWORD $pw CHANGE NOT REQUIRED", params);
            } catch (RuntimeException alterFailed) {
                String why = String.valueOf(alterFailed.getMessage());
                if (why.contains("cannot be the same")) {
                    return; // --reset-password with the password it has already
                }
                try {
                    system.executeTransactionally(
                            "CREATE USER $u SET PASSWORD $pw CHANGE NOT REQUIRED", params);
                } catch (RuntimeException createFailed) {
                    alterFailed.addSuppressed(createFailed);
                    throw alterFailed;
                }
            }
        } finally {
            dbms.shutdown();
        }
    }

    private static void serve(Path home, int port, PrintStream out) throws InterruptedException {
        DatabaseManagementService dbms = builder(home, true, port).build();
        CountDownLatch stopped = new CountDownLatch(1);
        AtomicBoolean down = new AtomicBoolean(false);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (down.compareAndSet(false, true)) {
                try {
                    dbms.shutdown();
                } finally {
                    out.println("STOPPED");
                    out.flush();
                    stopped.countDown();
                }
            }
        }, "patientgraph-neo4j-shutdown"));

        // The default database must be up and Bolt must accept connections before READY.
        dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME)
                .executeTransactionally("RETURN 1");
        long deadline = System.nanoTime() + 60_000_000_000L;
        while (!accepts(port)) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("Bolt did not open on " + HOST + ":" + port);
            }
            Thread.sleep(100);
        }
        out.println("READY bolt://" + HOST + ":" + port);
        out.flush();
        stopped.await();
    }

    private static boolean accepts(int port) {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(HOST, port), 500);
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    private static String firstLine(String s) {
        if (s == null) {
            return "";
        }
        int nl = s.indexOf('\n');
        return nl < 0 ? s : s.substring(0, nl);
    }

    private static void fail(int code, String message) {
        System.out.println("ERROR " + message);
        System.out.flush();
        System.exit(code);
    }
}
