"""Solutions of notebooks/04_raw_delete_events.ipynb, one block per exercise cell id."""

# %% exercise-find-tombstone
with engine.begin() as db:
    db.execute(text("DELETE FROM product WHERE id = :id"), {"id": target_id})
router.catch_up()
tombstone_lsn = ch.query(
    "SELECT lsn FROM product WHERE id = {id:UInt64} AND is_deleted = 1",
    parameters={"id": target_id},
).result_rows[0][0]
