"""Solutions of notebooks/01_watch_a_change_travel.ipynb, one block per exercise cell id."""

# %% exercise-predict-final-rows
predicted_final_rows = 0  # the newest version is a delete marker: FINAL leaves the key out

# %% exercise-price-travels
with engine.begin() as conn:
    conn.execute(
        text("UPDATE product SET price = :price WHERE id = :id"),
        {"price": target_price, "id": second_id},
    )
router.catch_up()
clickhouse_price, clickhouse_lsn = ch.query(
    "SELECT price, lsn FROM product FINAL WHERE id = {id:UInt64}", parameters={"id": second_id}
).result_rows[0]
