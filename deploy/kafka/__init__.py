"""A real Apache Kafka broker (KRaft) from the Maven Central jars, for development and tests."""
