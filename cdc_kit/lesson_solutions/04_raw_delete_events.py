"""Solutions of notebooks/04_raw_delete_events.ipynb, one block per exercise cell id."""

# %% exercise-predict-full-marker
# Your prediction: "old", "empty" or "null"
predicted_full_marker_name = "old"

# %% exercise-delete-marker
with engine.begin() as db:
    db.execute(text("DELETE FROM product WHERE id = :id"), {"id": target_id})
router.catch_up()
delete_marker = ch.query(
    "SELECT * FROM product WHERE id = {id:UInt64} AND is_deleted = 1",
    parameters={"id": target_id},
).first_item
