"""Solutions of notebooks/03_logical_replication.ipynb, one block per exercise cell id."""

# %% exercise-predict-update-old
# Your prediction: "none", "key" or "row"
predicted_update_old = "none"

# %% exercise-release-slot
with conn.cursor() as cur:
    cur.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (TEXT_SLOT, target_lsn))
    cur.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (TEXT_SLOT,),
    )
    text_slot_position = cur.fetchone()[0]
