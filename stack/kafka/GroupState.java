// What Kafka itself says of a consumer group, through Kafka's own Java Admin client (kafka-clients, already in the
// broker's classpath): the tests compare it with what Sluice reports. Run as a single-file program:
//   java -cp "$HOME/.cache/sluice/kafka-4.4.0/libs/*" stack/kafka/GroupState.java BOOTSTRAP GROUP TOPIC
// Prints one line per fact, tab-separated, so a test reads it without a JSON library:
//   group   <type CLASSIC|CONSUMER>   <state>   <member count>
//   member  <member id>   <partition,partition,...>
//   offset  <partition>   <committed offset, -1 if none>   <end offset>
import java.util.*;
import java.util.stream.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

public class GroupState {
    public static void main(String[] args) throws Exception {
        if (args.length != 3) {
            System.err.println("usage: GroupState BOOTSTRAP GROUP TOPIC");
            System.exit(2);
        }
        String group = args[1], topic = args[2];
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        try (Admin admin = Admin.create(props)) {
            ConsumerGroupDescription g = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
            System.out.printf("group\t%s\t%s\t%d%n", g.type().name(), g.groupState().name(), g.members().size());
            for (MemberDescription m : g.members()) {
                String parts = m.assignment().topicPartitions().stream()
                    .filter(tp -> tp.topic().equals(topic))
                    .map(tp -> Integer.toString(tp.partition())).sorted().collect(Collectors.joining(","));
                System.out.printf("member\t%s\t%s%n", m.consumerId(), parts);
            }
            Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            var partitions = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions();
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            for (var p : partitions) latest.put(new TopicPartition(topic, p.partition()), OffsetSpec.latest());
            var ends = admin.listOffsets(latest).all().get();
            for (var p : partitions) {
                TopicPartition tp = new TopicPartition(topic, p.partition());
                OffsetAndMetadata c = committed.get(tp);
                System.out.printf("offset\t%d\t%d\t%d%n", p.partition(), c == null ? -1 : c.offset(), ends.get(tp).offset());
            }
        }
    }
}
