"""Solutions of notebooks/08_schema_changes.ipynb, one block per exercise cell id."""

# %% exercise-modify-column
ch.command("ALTER TABLE lesson08_shipment MODIFY COLUMN cost Decimal(10, 2)")
print(router.replay_dead_letters())
freight_cost_in_clickhouse = ch.query(
    "SELECT cost FROM lesson08_shipment FINAL WHERE id = {id:UInt64}",
    parameters={"id": freight_id},
).result_rows[0][0]
print("the freight costs", freight_cost_in_clickhouse, "in ClickHouse")
