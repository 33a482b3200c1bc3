"""What we know: pure reducers, metric policy, the ClickHouse schema and writer."""
