// The Java half of `tools/dev kafka` (tools/kafka/kafka.sh, docs/kafka.md). Compiled once
// into the jar cache by kafka.sh, against the pinned Kafka jars (tools/kafka/pom.xml).
//
//   KsfKafkaReady node CLUSTER_ID PROPERTIES
//       Formats the node's log directories unless they are formatted already (kafka-storage
//       format --ignore-formatted), then runs the node (kafka.Kafka) in the same JVM: a
//       separate formatting JVM would cost another 1.5 s of CPU per node.
//   KsfKafkaReady ready BOOTSTRAP NODES TIMEOUT_MS [NAME:PARTITIONS]...
//       Waits until NODES brokers are registered, creates the topics (replication factor
//       min(NODES, 3); a topic that already exists is left alone), and waits until every
//       partition of them has a leader and a full ISR. Exit 0 when that is so, 1 when
//       TIMEOUT_MS passed first (the last thing waited for is on stderr), 2 on bad usage.
//
// It runs beside the starting brokers and retries until they answer, so its own JVM start
// overlaps theirs.

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;

public final class KsfKafkaReady {
    private KsfKafkaReady() {}

    public static void main(String[] args) {
        int rc;
        if (args.length == 3 && args[0].equals("node")) {
            if (format(args[1], args[2]) != 0) {
                System.exit(1);
            }
            kafka.Kafka.main(new String[] {args[2]});
            return;
        } else if (args.length >= 4 && args[0].equals("ready")) {
            rc = ready(args);
        } else {
            System.err.println("usage: KsfKafkaReady node CLUSTER_ID PROPERTIES | "
                    + "ready BOOTSTRAP NODES TIMEOUT_MS [NAME:PARTITIONS]...");
            rc = 2;
        }
        // Exit now: the Admin client's threads or Kafka's would keep the JVM alive.
        System.exit(rc);
    }

    private static int format(String clusterId, String properties) {
        PrintStream out = System.out;
        int rc = kafka.tools.StorageTool.execute(
                new String[] {"format", "--ignore-formatted", "-t", clusterId, "-c", properties},
                out);
        if (rc != 0) {
            System.err.println("formatting the log directories of " + properties
                    + " failed (kafka-storage format exit " + rc + ")");
        }
        return rc;
    }

    private static int ready(String[] args) {
        String bootstrap = args[1];
        int nodes;
        long timeoutMs;
        Map<String, Integer> topics = new LinkedHashMap<>();
        try {
            nodes = Integer.parseInt(args[2]);
            timeoutMs = Long.parseLong(args[3]);
            for (int i = 4; i < args.length; i++) {
                int colon = args[i].lastIndexOf(':');
                topics.put(args[i].substring(0, colon),
                        Integer.parseInt(args[i].substring(colon + 1)));
            }
        } catch (RuntimeException e) {
            System.err.println("bad arguments: " + e);
            return 2;
        }
        short replicas = (short) Math.min(nodes, 3);
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "ksf-dev-kafka-ready");
        // Brokers that are not listening yet: retry fast, and never wait long on one call.
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "50");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "200");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "50");
        props.put(AdminClientConfig.RETRY_BACKOFF_MAX_MS_CONFIG, "200");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");

        String waitingFor = "the first answer from " + bootstrap;
        try (Admin admin = Admin.create(props)) {
            Map<String, Integer> toCreate = new HashMap<>(topics);
            while (System.nanoTime() < deadline) {
                try {
                    waitingFor = step(admin, nodes, replicas, topics, toCreate);
                    if (waitingFor == null) {
                        // A step can end up to 3 s after the deadline: the bound is exact.
                        if (System.nanoTime() <= deadline) {
                            return 0;
                        }
                        System.err.println("not ready: ready only after the deadline");
                        return 1;
                    }
                } catch (ExecutionException e) {
                    waitingFor = waitingFor + " (last error: " + e.getCause() + ")";
                } catch (Exception e) {
                    waitingFor = waitingFor + " (last error: " + e + ")";
                }
                Thread.sleep(100);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        System.err.println("not ready: waiting for " + waitingFor);
        return 1;
    }

    /** One round: null when ready, else what is still awaited. */
    private static String step(Admin admin, int nodes, short replicas,
            Map<String, Integer> topics, Map<String, Integer> toCreate) throws Exception {
        List<Node> registered = new ArrayList<>(
                admin.describeCluster().nodes().get(3, TimeUnit.SECONDS));
        if (registered.size() < nodes) {
            return nodes + " brokers (" + registered.size() + " registered)";
        }
        if (admin.describeCluster().controller().get(3, TimeUnit.SECONDS) == null) {
            return "an active controller";
        }
        if (!toCreate.isEmpty()) {
            List<NewTopic> create = new ArrayList<>();
            toCreate.forEach((name, parts) -> create.add(new NewTopic(name, parts, replicas)));
            CreateTopicsResult result = admin.createTopics(create);
            String failed = null;
            for (Map.Entry<String, Integer> t : new HashMap<>(toCreate).entrySet()) {
                try {
                    result.values().get(t.getKey()).get(3, TimeUnit.SECONDS);
                    toCreate.remove(t.getKey());
                } catch (ExecutionException e) {
                    if (e.getCause() instanceof TopicExistsException) {
                        toCreate.remove(t.getKey());
                    } else {
                        failed = "topic " + t.getKey() + " to be created (" + e.getCause() + ")";
                    }
                }
            }
            if (failed != null) {
                return failed;
            }
        }
        if (topics.isEmpty()) {
            return null;
        }
        Map<String, TopicDescription> described =
                admin.describeTopics(topics.keySet()).allTopicNames().get(3, TimeUnit.SECONDS);
        for (String name : topics.keySet()) {
            TopicDescription d = described.get(name);
            if (d == null) {
                return "topic " + name + " in the metadata";
            }
            for (TopicPartitionInfo p : d.partitions()) {
                if (p.leader() == null || p.leader().isEmpty()) {
                    return "a leader for " + name + "-" + p.partition();
                }
                if (p.isr().size() < p.replicas().size()) {
                    return "a full ISR for " + name + "-" + p.partition() + " (" + p.isr().size()
                            + " of " + p.replicas().size() + ")";
                }
            }
        }
        return null;
    }
}
