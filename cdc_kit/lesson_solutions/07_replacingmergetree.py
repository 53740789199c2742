"""Solutions of notebooks/07_replacingmergetree.ipynb, one block per exercise cell id."""

# %% exercise-predict-versions
# the rows of SKU 1: (without FINAL, with FINAL), two numbers
predicted_rows = (4, 1)  # the first load's version and one per update; FINAL shows the newest

# %% exercise-newest-units
newest_sql = """
SELECT id, argMax(units, lsn) AS units
FROM lesson07_stock
GROUP BY id
HAVING argMax(is_deleted, lsn) = 0
ORDER BY id
"""
ch.query_df(newest_sql)
