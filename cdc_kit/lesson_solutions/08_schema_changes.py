"""Solutions of notebooks/08_schema_changes.ipynb, one block per exercise cell id."""

# %% exercise-predict-added-column
# "parked", "routed without it" or "routed with it"
predicted_outcome = "routed without it"

# %% exercise-modify-column
ch.command("ALTER TABLE lesson08_shipment MODIFY COLUMN cost Decimal(10, 2)")
print(router.replay_dead_letters())
freight_in_clickhouse = ch.query_df(
    "SELECT id, cost, lsn FROM lesson08_shipment FINAL WHERE id = {id:UInt64}",
    parameters={"id": freight_id},
)
display(freight_in_clickhouse)
